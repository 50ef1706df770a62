"""Bronze OLTP tables: incremental extraction by `updated_at` watermark, upsert by primary key.

One asset per table in the `oltp` section of the source contracts. The watermark is stored in the
summary of the Iceberg snapshot that wrote the rows, so it commits atomically with the data: a run
that fails before its commit leaves the old watermark, and the next run extracts the same rows again.
Rows are read with `updated_at >= watermark` (not `>`), because rows committed later with the same
timestamp would otherwise be skipped; the upsert makes re-reading them harmless.

Rows that break a row-level rule of the contract (a null key or required value, an unparseable
timestamp) are not upserted: they go to `audit.bronze_quarantine` and the other rows are published.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from assets.bronze.conform import ConformedRows, ContractViolation, RowRejects, conform_rows
from assets.bronze.contracts import TableContract, oltp_contracts
from assets.bronze.guard import guard_passes, source_problem
from assets.bronze.quarantine import QUARANTINE_TABLE, describe_rejects, quarantine_records, record_quarantined_rows
from audit.metadata import audit_metadata, table_checksum
from resources.iceberg import IcebergCatalog, commit_with_retry
from resources.ingestion_guard import IngestionGuard
from resources.source_db import SourceDatabase

if TYPE_CHECKING:
    from pyiceberg.table import Table

WATERMARK_PROPERTY = "strata.watermark"
BRONZE_GROUP = "bronze"


def stored_watermark(table) -> str | None:
    """The newest watermark recorded on the table's snapshot lineage (None before the first load)."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        value = snapshot.summary.get(WATERMARK_PROPERTY) if snapshot.summary else None
        if value:
            return value
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return None


def extraction_query(contract: TableContract, watermark: str | None) -> str:
    """SELECT of the contract's columns changed since `watermark` (validated as a timestamp)."""
    columns = ", ".join(contract.column_names)
    query = f"SELECT {columns} FROM {contract.name}"
    if watermark is not None and contract.watermark:
        # Round-trip through datetime so only a well-formed timestamp can reach the SQL text.
        literal = datetime.fromisoformat(watermark).strftime("%Y-%m-%d %H:%M:%S.%f")
        query += f" WHERE {contract.watermark} >= '{literal}'"
    return query


def latest_version_per_key(rows: pa.Table, contract: TableContract) -> pa.Table:
    """Keep one row per primary key, the most recently updated (an upsert needs unique keys)."""
    if rows.num_rows == 0:
        return rows
    ordered = rows.sort_by([(contract.primary_key, "ascending"), (contract.watermark, "descending")])
    keys = ordered.column(contract.primary_key)
    first = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    keep = pa.concat_arrays([pa.array([True]), first.combine_chunks()]) if len(keys) > 1 else pa.array([True])
    return ordered.filter(keep)


@dataclass(frozen=True)
class Extraction:
    """What one extraction read, wrote and set aside: the asset's log line and audit metadata."""

    rows_in: int  # every row extracted, good or quarantined
    rows: pa.Table  # the good rows, one per key, as upserted
    rejects: RowRejects
    updated: int
    inserted: int
    previous_watermark: str | None
    watermark: str | None
    table: "Table"
    total_rows: int


def source_name(contract: TableContract) -> str:
    """How quarantine records name an OLTP source: the table only, never the URL (it may hold credentials)."""
    return f"source table {contract.name}"


def newest_watermark(contract: TableContract, conformed: ConformedRows, previous: str | None) -> str | None:
    """The largest readable watermark over ALL extracted rows, quarantined ones included.

    A quarantined row is recorded, not lost, so the watermark may move past it; when the producer fixes
    the row it gets a new `updated_at` and is extracted again.
    """
    values = [
        pc.max(rows.column(contract.watermark)).as_py()
        for rows in (conformed.rows, conformed.rejects.typed_rows)
        if rows.num_rows
    ]
    values = [v for v in values if v is not None]
    return max(values).isoformat(sep=" ") if values else previous


def extract_and_upsert(
    contract: TableContract, source: SourceDatabase, catalog: IcebergCatalog, run_id: str
) -> Extraction:
    """Extract the rows changed since the stored watermark, quarantine those that break the contract row
    by row, and upsert the others into `bronze.<table>`.

    The quarantine records are appended BEFORE the data commit that moves the watermark, so a crash in
    between cannot lose them. A re-run after such a crash, and every run while a rejected row sits at
    the watermark (it is read again, `>=`), records the same row again: harmless, the records are the
    same apart from the run id.
    """
    identifier = f"bronze.{contract.name}"
    table = catalog.load_or_create_table(identifier, contract.arrow_schema())
    previous = stored_watermark(table)
    raw = source.read_arrow(extraction_query(contract, previous))
    conformed = conform_rows(raw, contract, f"{source.display_url} table {contract.name}", exact=False)
    if conformed.rejects.num_rows:
        records = quarantine_records(
            conformed.rejects,
            dataset=contract.name,
            source=source_name(contract),
            row_key_columns=contract.row_key,
        )
        record_quarantined_rows(catalog, records, run_id)
    rows = latest_version_per_key(conformed.rows, contract)
    new_watermark = newest_watermark(contract, conformed, previous)
    properties = {WATERMARK_PROPERTY: new_watermark or "", "strata.run_id": run_id}

    def write(target):
        if rows.num_rows == 0:
            if new_watermark != previous:
                # Only quarantined rows: an empty snapshot still records that the watermark moved.
                target.append(rows, snapshot_properties=properties)
            return 0, 0
        if target.current_snapshot() is None:
            target.append(rows, snapshot_properties=properties)
            return 0, rows.num_rows
        result = target.upsert(rows, join_cols=[contract.primary_key], snapshot_properties=properties)
        return result.rows_updated, result.rows_inserted

    updated, inserted = commit_with_retry(table, write)
    table = table.refresh()
    snapshot = table.current_snapshot()
    total = int(snapshot.summary["total-records"]) if snapshot else 0
    return Extraction(raw.num_rows, rows, conformed.rejects, updated, inserted, previous, new_watermark, table, total)


def build_oltp_asset(contract: TableContract) -> dg.AssetsDefinition:
    @dg.asset(
        key=["bronze", contract.name],
        group_name=BRONZE_GROUP,
        kinds={"iceberg", "python"},
        pool="source_db",
        description=(
            f"Bronze copy of source table `{contract.name}`: changes since the last `{contract.watermark}` "
            f"watermark, upserted on `{contract.primary_key}`."
        ),
        metadata={"strata/primary_key": contract.primary_key, "strata/watermark_column": contract.watermark},
        output_required=False,
    )
    def bronze_oltp_table(
        context: dg.AssetExecutionContext, source_db: SourceDatabase, iceberg: IcebergCatalog, guard: IngestionGuard
    ):
        if not guard_passes(context, [guard.free_disk_problem(), source_problem(source_db)]):
            return  # nothing yielded: not materialized, nothing downstream runs
        try:
            run = extract_and_upsert(contract, source_db, iceberg, context.run.run_id)
        except ContractViolation as violation:
            # The same rows break the contract the same way on every attempt: fail now, no retry.
            raise dg.Failure(
                description=str(violation), metadata={"strata/contract": contract.name}, allow_retries=False
            ) from violation
        context.log.info(
            f"bronze.{contract.name}: {run.rows_in} changed row(s) since {run.previous_watermark or 'the beginning'} "
            f"-> {run.updated} updated, {run.inserted} inserted, {run.rejects.num_rows} quarantined; "
            f"watermark now {run.watermark}"
        )
        extra: dict[str, object] = {
            "rows_updated": run.updated,
            "rows_inserted": run.inserted,
            "watermark": run.watermark or "",
        }
        if run.rejects.num_rows:
            extra["quarantine_table"] = QUARANTINE_TABLE
            context.log.warning(
                f"bronze.{contract.name}: {run.rejects.num_rows} row(s) broke the contract and were written to "
                f"{QUARANTINE_TABLE} instead: {describe_rejects(run.rejects.counts())}"
            )
        snapshot = run.table.current_snapshot()
        yield dg.MaterializeResult(
            metadata=audit_metadata(
                table_name=f"bronze.{contract.name}",
                uri=run.table.metadata_location,
                rows_in=run.rows_in,
                rows_out=run.updated + run.inserted,
                rows_quarantined=run.rejects.num_rows,
                table_row_count=run.total_rows,
                checksum=table_checksum(run.rows, [contract.primary_key]),
                data_window=(run.previous_watermark or "-inf", run.watermark or "-inf"),
                input_partitions=[f"{contract.name}@{contract.watermark}>={run.previous_watermark or '-inf'}"],
                snapshot_id=snapshot.snapshot_id if snapshot else None,
                schema=contract.arrow_schema(),
                extra=extra,
            )
        )

    return bronze_oltp_table


def build_oltp_assets() -> list[dg.AssetsDefinition]:
    return [build_oltp_asset(contract) for contract in oltp_contracts().values()]
