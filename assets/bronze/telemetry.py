"""Bronze telemetry: hourly partitions loaded from verified landing-zone drops.

A run covers a partition range (single-run backfills load a month in one run). Every hour's drop is
verified before its rows are written, and all hours are committed in ONE Iceberg transaction that
overwrites exactly the range: a bad drop anywhere fails the run naming the file and leaves the table
unchanged, and re-running a range replaces it instead of appending duplicates.

Rows of a verified drop that break a row-level rule of the contract are not loaded: they are appended
to `audit.bronze_quarantine` (with the hour's partition key) before the data transaction commits, and
the other rows of the hour are published.
"""

from collections.abc import Iterator
from datetime import datetime, timedelta

import dagster as dg
import pyarrow as pa

from assets.bronze.contracts import TableContract, file_drop_contracts
from assets.bronze.guard import guard_passes, missing_drops_problem
from assets.bronze.quarantine import QUARANTINE_TABLE, describe_rejects, quarantine_records, record_quarantined_rows
from assets.drops.ledger import LoadedDrop, record_loaded_drops
from assets.drops.protocol import drop_prefix, manifest_partition, partition_key
from assets.drops.quarantine import quarantine_drop
from assets.drops.verification import DropVerificationError, VerifiedDrop, verify_drop
from audit.metadata import audit_metadata, combine_checksums
from resources.iceberg import IcebergCatalog, commit_with_retry
from resources.ingestion_guard import IngestionGuard
from resources.landing import LandingZone

TELEMETRY = "telemetry"
# Rows of this many hours are written per overwrite inside the transaction: bounded memory per step.
HOURS_PER_WRITE = 24


def hours_in(window: dg.TimeWindow) -> list[datetime]:
    start = window.start.replace(tzinfo=None)
    end = window.end.replace(tzinfo=None)
    return [start + timedelta(hours=i) for i in range(int((end - start).total_seconds() // 3600))]


def chunks(hours: list[datetime], size: int) -> Iterator[list[datetime]]:
    for i in range(0, len(hours), size):
        yield hours[i : i + size]


def time_range_filter(column: str, start: datetime, end: datetime):
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    return And(GreaterThanOrEqual(column, start.isoformat()), LessThan(column, end.isoformat()))


def load_or_create_hourly_table(catalog: IcebergCatalog, contract: TableContract):
    """`bronze.<dataset>` partitioned by hour of its time column, so an hour overwrite drops whole files."""
    from pyiceberg.transforms import HourTransform

    table = catalog.load_or_create_table(f"bronze.{contract.name}", contract.arrow_schema())
    if table.spec().is_unpartitioned():

        def add_hour_partition(target):
            if target.spec().is_unpartitioned():
                with target.update_spec() as spec:
                    spec.add_field(contract.time_column, HourTransform(), f"{contract.time_column}_hour")
            return target

        commit_with_retry(table, add_hour_partition)
        table = table.refresh()
    return table


def drop_quarantine_records(contract: TableContract, drop: VerifiedDrop, hour: datetime) -> pa.Table:
    """Quarantine records of the rows of `drop` that broke a row-level rule, named by file and hour."""
    return pa.concat_tables(
        [
            quarantine_records(
                rejects,
                dataset=contract.name,
                source=f"{drop.prefix}{name}",
                row_key_columns=contract.row_key,
                partition_key=partition_key(hour),
            )
            for name, rejects in drop.rejects.items()
        ]
    )


def load_hour_range(
    contract: TableContract, landing: LandingZone, catalog: IcebergCatalog, hours: list[datetime], run_id: str
) -> dict:
    """Verify and load the drops of `hours` in one transaction; return what the audit needs.

    Rejected rows are appended to the quarantine table just before the transaction commits: a crash in
    between records them without loading the hour, and the re-run records them again (harmless, the
    records say the same thing under each run id). A commit conflict re-runs `write` in this same call;
    drop versions whose rows it already recorded are not recorded twice.
    """
    table = load_or_create_hourly_table(catalog, contract)
    stats = {}
    recorded: set[tuple[str, str]] = set()  # (prefix, manifest md5) whose rejects are already appended

    def write(target):
        stats.update(rows_in=0, rows_out=0, rows_quarantined=0, checksums=[], drops=[], loaded=[], rejects={})
        pending: list[tuple[tuple[str, str], pa.Table]] = []
        with target.transaction() as tx:
            for group in chunks(hours, HOURS_PER_WRITE):
                drops = [
                    verify_drop(landing, drop_prefix(contract.name, h), contract, manifest_partition(h)) for h in group
                ]
                rows = pa.concat_tables([d.rows for d in drops])
                tx.overwrite(
                    rows,
                    overwrite_filter=time_range_filter(contract.time_column, group[0], group[-1] + timedelta(hours=1)),
                    snapshot_properties={"strata.run_id": run_id},
                )
                stats["rows_in"] += sum(d.rows_in for d in drops)
                stats["rows_out"] += rows.num_rows
                # The loaded rows are a deterministic function of the verified files' bytes (lossless
                # casts, rejects by fixed rules), so the files' sha256s stand for them: no re-hashing.
                stats["checksums"] += [sha for d in drops for sha in d.file_sha256.values()]
                stats["drops"] += [d.prefix for d in drops]
                stats["loaded"] += [
                    LoadedDrop(contract.name, d.prefix, d.manifest_md5, partition_key(h), d.rows.num_rows)
                    for d, h in zip(drops, group, strict=True)
                ]
                for d, h in zip(drops, group, strict=True):
                    if not d.rejects:
                        continue
                    stats["rows_quarantined"] += d.rows_quarantined
                    for rejects in d.rejects.values():
                        for key, n in rejects.counts().items():
                            stats["rejects"][key] = stats["rejects"].get(key, 0) + n
                    if (d.prefix, d.manifest_md5) not in recorded:
                        pending.append(((d.prefix, d.manifest_md5), drop_quarantine_records(contract, d, h)))
            if pending:
                # Still inside the transaction: the data commit happens when this block ends.
                record_quarantined_rows(catalog, pa.concat_tables([records for _, records in pending]), run_id)
                recorded.update(key for key, _ in pending)
        return tx

    commit_with_retry(table, write)
    stats["table"] = table.refresh()
    record_loaded_drops(catalog, stats["loaded"], run_id, stats["table"].current_snapshot().snapshot_id)
    return stats


def quarantine_and_fail(
    context: dg.AssetExecutionContext, landing: LandingZone, error: DropVerificationError
) -> dg.Failure:
    """Quarantine the drop that failed (unless it is simply not complete yet) and describe the failure.

    The observation puts the reason on the asset's page; the failure is not retried, since the same
    bytes would fail the same check again.
    """
    metadata = {
        "strata/drop": error.prefix,
        "strata/check": error.check,
        "strata/file": error.file or "",
        "strata/reason": str(error),
    }
    if error.check != "ready":
        metadata["strata/quarantined_to"] = quarantine_drop(landing, error, context.run.run_id)
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=metadata))
        context.log.error(f"quarantined {error.prefix} -> {metadata['strata/quarantined_to']}: {error}")
    return dg.Failure(description=str(error), metadata=metadata, allow_retries=False)


def build_telemetry_asset(partitions_def: dg.HourlyPartitionsDefinition) -> dg.AssetsDefinition:
    contract = file_drop_contracts()[TELEMETRY]

    @dg.asset(
        key=["bronze", TELEMETRY],
        group_name="bronze",
        kinds={"iceberg", "python"},
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        output_required=False,
        description=(
            "Vehicle telemetry, one partition per hour, loaded from verified landing-zone drops "
            "(manifest row counts and sha256) by overwriting exactly the hours of the run."
        ),
    )
    def bronze_telemetry(
        context: dg.AssetExecutionContext, landing: LandingZone, iceberg: IcebergCatalog, guard: IngestionGuard
    ):
        hours = hours_in(context.partition_time_window)
        if not guard_passes(context, [guard.free_disk_problem(), missing_drops_problem(landing, contract.name, hours)]):
            return  # nothing yielded: not materialized, nothing downstream runs
        context.log.info(f"loading {len(hours)} hourly drop(s) from {hours[0]:%Y-%m-%d %H:00} on")
        try:
            stats = load_hour_range(contract, landing, iceberg, hours, context.run.run_id)
        except DropVerificationError as error:
            raise quarantine_and_fail(context, landing, error) from error
        table = stats["table"]
        snapshot = table.current_snapshot()
        start, end = hours[0], hours[-1] + timedelta(hours=1)
        extra: dict[str, object] = {"drops": dg.MetadataValue.json(stats["drops"])}
        if stats["rows_quarantined"]:
            extra["quarantine_table"] = QUARANTINE_TABLE
            context.log.warning(
                f"bronze.{TELEMETRY}: {stats['rows_quarantined']} of {stats['rows_in']} delivered row(s) broke the "
                f"contract and were written to {QUARANTINE_TABLE} instead: {describe_rejects(stats['rejects'])}"
            )
        yield dg.MaterializeResult(
            metadata=audit_metadata(
                table_name=f"bronze.{TELEMETRY}",
                uri=table.metadata_location,
                rows_in=stats["rows_in"],
                rows_out=stats["rows_out"],
                rows_quarantined=stats["rows_quarantined"],
                table_row_count=int(snapshot.summary["total-records"]),
                partition_row_count=stats["rows_out"],
                checksum=combine_checksums(stats["checksums"]),
                data_window=(start.isoformat(), end.isoformat()),
                input_partitions=[partition_key(h) for h in hours],
                snapshot_id=snapshot.snapshot_id,
                schema=contract.arrow_schema(),
                extra=extra,
            )
        )

    return bronze_telemetry
