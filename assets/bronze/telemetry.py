"""Bronze file-drop feeds (telemetry and any other `file_drops` entry): hourly partitions loaded from
verified landing-zone drops.

A run covers a partition range (single-run backfills load months in one run). Every hour's drop is
verified before anything is committed, and the whole range is committed to Iceberg ONCE: one
transaction deletes exactly the run's hours and adds the new data files. A bad drop anywhere fails the
run naming the file and leaves the table unchanged, and re-running a range replaces it instead of
appending duplicates.

Memory stays bounded on any range: hours are verified and written to data files a slice at a time (a
day, or fewer hours when they hold many rows), and only the files' metadata is kept for the commit.
The table is partitioned by DAY of the time column, so a long backfill writes one file per day rather
than one small file per hour; an hourly check or re-run still touches only the rows of its hour.

A drop may only write its own hour: rows whose time is outside it break `ts_within_drop_hour` (see
`source_contracts.yaml`), so the rows written and the range deleted always agree.

Rows of a verified drop that break a row-level rule of the contract are not loaded: they are appended
to `audit.bronze_quarantine` (with the hour's partition key) before the data transaction commits, and
the other rows of the hour are published.

Each hour of a run gets its own materialization with its own values (rows, checksum, drop, window):
`context.add_asset_metadata(..., partition_key=...)` scopes metadata to one partition, and Dagster
emits one event per partition of the range, so no event carries the run's whole lists.
"""

import contextlib
import itertools
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

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

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

TELEMETRY = "telemetry"
# A slice (verified, then written to data files before the next hour is read) ends at a day boundary or
# once it holds this many rows: the memory of a run is bounded by one slice, whatever its range.
MAX_ROWS_PER_SLICE = 2_000_000


def hours_in(window: dg.TimeWindow) -> list[datetime]:
    start = window.start.replace(tzinfo=None)
    end = window.end.replace(tzinfo=None)
    return [start + timedelta(hours=i) for i in range(int((end - start).total_seconds() // 3600))]


def time_range_filter(column: str, start: datetime, end: datetime):
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    return And(GreaterThanOrEqual(column, start.isoformat()), LessThan(column, end.isoformat()))


def load_or_create_hourly_table(catalog: IcebergCatalog, contract: TableContract) -> "Table":
    """`bronze.<dataset>` partitioned by DAY of its time column (tables created hourly are moved on to day).

    Hourly partitions made one ~100 KiB file per hour and a manifest per commit; by day, a backfill
    writes one file per day and readers (daily models) prune by day. Files written under an older
    spec keep it: Iceberg reads and deletes across specs.
    """
    from pyiceberg.transforms import DayTransform

    table = catalog.load_or_create_table(f"bronze.{contract.name}", contract.arrow_schema())
    column = contract.time_column
    day_field = f"{column}_day"

    def by_day(spec) -> bool:
        return [(f.name, str(f.transform)) for f in spec.fields] == [(day_field, str(DayTransform()))]

    if not by_day(table.spec()):

        def partition_by_day(target):
            if not by_day(target.spec()):
                with target.update_spec() as update:
                    for old in target.spec().fields:
                        update.remove_field(old.name)
                    update.add_field(column, DayTransform(), day_field)
            return target

        commit_with_retry(table, partition_by_day)
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


@dataclass(frozen=True)
class HourLoad:
    """What one hour's drop put into the table: the values that hour's materialization reports."""

    hour: datetime
    drop: LoadedDrop
    rows_in: int  # delivered, as the manifest counts them
    rows_quarantined: int
    checksum: str  # of this drop's files (their sha256s, combined)
    rejects: dict[tuple[str, str], int] = field(default_factory=dict)  # (column, rule) -> rows

    @property
    def rows_out(self) -> int:
        """Rows now in the table for this hour: the load replaced the hour with exactly these."""
        return self.drop.rows


@dataclass
class RangeLoad:
    """The result of loading a range of hours: one HourLoad per hour, the table after the commit."""

    hours: list[HourLoad]
    table: "Table"
    data_files_added: int

    @property
    def rows_in(self) -> int:
        return sum(h.rows_in for h in self.hours)

    @property
    def rows_out(self) -> int:
        return sum(h.rows_out for h in self.hours)

    @property
    def rows_quarantined(self) -> int:
        return sum(h.rows_quarantined for h in self.hours)

    def rejects(self) -> dict[tuple[str, str], int]:
        total: dict[tuple[str, str], int] = {}
        for hour in self.hours:
            for key, n in hour.rejects.items():
                total[key] = total.get(key, 0) + n
        return total


def load_hour_range(
    contract: TableContract, landing: LandingZone, catalog: IcebergCatalog, hours: list[datetime], run_id: str
) -> RangeLoad:
    """Verify and load the drops of `hours` in one Iceberg commit; return what the audit needs per hour.

    Slice by slice, the drops are verified and their rows written to new data files (not yet part of
    the table). Then one transaction deletes the range `[hours[0], hours[-1] + 1h)` and adds the
    files. A run that fails before the commit deletes the files it wrote; the table is unchanged. (If
    the commit itself fails, its files are left for table maintenance's orphan removal: the catalog
    may have committed them without saying so.)

    Rejected rows are appended to the quarantine table just before the transaction commits: a crash in
    between records them without loading the hours, and the re-run records them again (harmless, the
    records say the same thing under each run id). A commit conflict re-runs the transaction with the
    same files; rows already recorded are not recorded twice.
    """
    table = load_or_create_hourly_table(catalog, contract)
    column = contract.time_column
    start, end = hours[0], hours[-1] + timedelta(hours=1)
    write_uuid, counter = uuid.uuid4(), itertools.count()
    data_files: list[DataFile] = []
    loads: list[HourLoad] = []
    records: list[pa.Table] = []
    pending: list[tuple[datetime, VerifiedDrop]] = []

    def flush() -> None:
        """Write the pending hours' rows to data files and keep only what the commit and audit need."""
        rows = pa.concat_tables([drop.rows for _, drop in pending])
        _check_within(rows, column, pending[0][0], pending[-1][0] + timedelta(hours=1))
        data_files.extend(write_data_files(table, rows, [drop for _, drop in pending], write_uuid, counter))
        for hour, drop in pending:
            loads.append(_hour_load(contract, drop, hour))
            if drop.rejects:
                records.append(drop_quarantine_records(contract, drop, hour))
        pending.clear()

    try:
        for hour in hours:
            if pending and (hour.date() != pending[0][0].date() or _rows(pending) >= MAX_ROWS_PER_SLICE):
                flush()
            prefix = drop_prefix(contract.name, hour)
            pending.append((hour, verify_drop(landing, prefix, contract, manifest_partition(hour))))
        flush()
    except BaseException:
        _delete_unreferenced(table, data_files)  # nothing was committed: no snapshot refers to them
        raise

    recorded = False

    def commit(target: "Table") -> None:
        nonlocal recorded
        with target.transaction() as tx:
            with warnings.catch_warnings():
                # A first load deletes nothing, which pyiceberg warns about; that is expected here.
                warnings.filterwarnings("ignore", message="Delete operation did not match any records")
                tx.delete(time_range_filter(column, start, end), snapshot_properties={"strata.run_id": run_id})
            with tx.update_snapshot(snapshot_properties={"strata.run_id": run_id}).fast_append() as append:
                for data_file in data_files:
                    append.append_data_file(data_file)
            if records and not recorded:
                # Still inside the transaction: the data commit happens when this block ends.
                record_quarantined_rows(catalog, pa.concat_tables(records), run_id)
                recorded = True

    commit_with_retry(table, commit)
    table = table.refresh()
    record_loaded_drops(catalog, [h.drop for h in loads], run_id, table.current_snapshot().snapshot_id)
    return RangeLoad(loads, table, len(data_files))


def _rows(pending: list[tuple[datetime, VerifiedDrop]]) -> int:
    return sum(drop.rows.num_rows for _, drop in pending)


def _hour_load(contract: TableContract, drop: VerifiedDrop, hour: datetime) -> HourLoad:
    rejects: dict[tuple[str, str], int] = {}
    for file_rejects in drop.rejects.values():
        for key, n in file_rejects.counts().items():
            rejects[key] = rejects.get(key, 0) + n
    return HourLoad(
        hour=hour,
        drop=LoadedDrop(contract.name, drop.prefix, drop.manifest_md5, partition_key(hour), drop.rows.num_rows),
        rows_in=drop.rows_in,
        rows_quarantined=drop.rows_quarantined,
        # The loaded rows are a deterministic function of the verified files' bytes (lossless casts,
        # rejects by fixed rules), so the files' sha256s stand for them: no re-hashing.
        checksum=combine_checksums(drop.file_sha256.values()),
        rejects=rejects,
    )


def _check_within(rows: pa.Table, column: str, start: datetime, end: datetime) -> None:
    """The rows about to be written lie inside the range the commit deletes: the load changes only its
    own partitions. Verification guarantees it (ts_within_drop_hour); this guards that promise."""
    if rows.num_rows == 0:
        return
    bounds = pc.min_max(rows.column(column))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low < start or high >= end:
        raise dg.Failure(  # a broken promise of the code, not of the data: the same run would break it again
            f"refusing to write rows with {column} in [{low}, {high}] outside the hours [{start}, {end}) being loaded",
            allow_retries=False,
        )


# Failures of writing files that another attempt may not repeat: storage and network errors (pyarrow's
# S3 errors, ConnectionError and TimeoutError are all OSErrors).
TRANSIENT_WRITE_ERRORS: tuple[type[BaseException], ...] = (OSError,)


def write_data_files(
    table: "Table", rows: pa.Table, drops: list[VerifiedDrop], write_uuid: uuid.UUID, counter: itertools.count
) -> list["DataFile"]:
    """Write `rows` as data files of `table` (split by partition, sized by the table's target file size)
    without committing them.

    pyiceberg has no public "write files now, commit later" for partitioned tables; its own append and
    overwrite call `_dataframe_to_data_files`, and so does this (pyiceberg is pinned in uv.lock).

    A failure that is not a storage error is deterministic (the same rows fail the same way), so it is
    pinned on the drop that fails alone and raised as that drop's DropVerificationError: the drop is
    quarantined with the reason instead of being retried and left READY.
    """
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    def write(part: pa.Table) -> list["DataFile"]:
        return list(
            _dataframe_to_data_files(
                table_metadata=table.metadata, df=part, io=table.io, write_uuid=write_uuid, counter=counter
            )
        )

    if rows.num_rows == 0:
        return []
    try:
        return write(rows)
    except TRANSIENT_WRITE_ERRORS:
        raise
    except Exception as exc:
        culprit = _first_drop_failing_alone(drops, write, table)
        if culprit is None:
            raise
        raise DropVerificationError(
            culprit.prefix, "load", f"its rows cannot be written to Iceberg: {type(exc).__name__}: {exc}"
        ) from exc


def _delete_unreferenced(table: "Table", data_files: list["DataFile"]) -> None:
    for data_file in data_files:
        # Best effort: an orphan file is harmless, table maintenance removes it.
        with contextlib.suppress(OSError):
            table.io.delete(data_file.file_path)


def _first_drop_failing_alone(drops: list[VerifiedDrop], write, table: "Table") -> VerifiedDrop | None:
    for drop in drops:
        try:
            probe = write(drop.rows)
        except TRANSIENT_WRITE_ERRORS:
            raise
        except Exception:
            return drop
        _delete_unreferenced(table, probe)  # a probe is never committed
    return None


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


def hour_metadata(contract: TableContract, load: RangeLoad, hour: HourLoad) -> dict[str, object]:
    """The audit metadata of one hour's materialization: only that hour's values, so its size does not
    depend on how many hours the run loaded."""
    snapshot = load.table.current_snapshot()
    extra: dict[str, object] = {"drops": dg.MetadataValue.json([hour.drop.drop_prefix])}
    if hour.rows_quarantined:
        extra["quarantine_table"] = QUARANTINE_TABLE
    return audit_metadata(
        table_name=f"bronze.{contract.name}",
        uri=load.table.metadata_location,
        rows_in=hour.rows_in,
        rows_out=hour.rows_out,
        rows_quarantined=hour.rows_quarantined,
        table_row_count=int(snapshot.summary["total-records"]),
        partition_row_count=hour.rows_out,
        checksum=hour.checksum,
        data_window=(hour.hour.isoformat(), (hour.hour + timedelta(hours=1)).isoformat()),
        input_partitions=[partition_key(hour.hour)],
        snapshot_id=snapshot.snapshot_id,
        schema=contract.arrow_schema(),
        extra=extra,
    )


def build_drop_asset(contract: TableContract, partitions_def: dg.HourlyPartitionsDefinition) -> dg.AssetsDefinition:
    """`bronze/<dataset>` for one `file_drops` feed of the contracts: every feed loads the same way."""
    name = contract.name

    @dg.asset(
        key=["bronze", name],
        group_name="bronze",
        kinds={"iceberg", "python"},
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        output_required=False,
        description=(
            f"{contract.description or f'The {name} file-drop feed'}, one partition per hour, loaded from verified "
            "landing-zone drops (manifest row counts and sha256) by overwriting exactly the hours of the run in "
            "one commit."
        ),
    )
    def bronze_drop_feed(
        context: dg.AssetExecutionContext, landing: LandingZone, iceberg: IcebergCatalog, guard: IngestionGuard
    ):
        hours = hours_in(context.partition_time_window)
        if not guard_passes(context, [guard.free_disk_problem(), missing_drops_problem(landing, contract.name, hours)]):
            return  # nothing yielded: not materialized, nothing downstream runs
        context.log.info(f"loading {len(hours)} hourly {name} drop(s) from {hours[0]:%Y-%m-%d %H:00} on")
        try:
            load = load_hour_range(contract, landing, iceberg, hours, context.run.run_id)
        except DropVerificationError as error:
            raise quarantine_and_fail(context, landing, error) from error
        if load.rows_quarantined:
            context.log.warning(
                f"bronze.{name}: {load.rows_quarantined} of {load.rows_in} delivered row(s) broke the "
                f"contract and were written to {QUARANTINE_TABLE} instead: {describe_rejects(load.rejects())}"
            )
        context.log.info(
            f"bronze.{name}: {load.rows_out} row(s) of {len(hours)} hour(s) committed in one snapshot "
            f"with {load.data_files_added} new data file(s)"
        )
        for hour in load.hours:
            context.add_asset_metadata(hour_metadata(contract, load, hour), partition_key=partition_key(hour.hour))
        # Dagster emits one materialization per partition of the range, each with its own metadata above.
        yield dg.MaterializeResult()

    return bronze_drop_feed


def build_drop_assets(partitions_def: dg.HourlyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    """One Bronze asset per `file_drops` entry of the source contracts: a new feed needs no Python."""
    return [build_drop_asset(contract, partitions_def) for contract in file_drop_contracts().values()]


def build_telemetry_asset(partitions_def: dg.HourlyPartitionsDefinition) -> dg.AssetsDefinition:
    return build_drop_asset(file_drop_contracts()[TELEMETRY], partitions_def)
