"""Bronze OLTP tables: incremental extraction by `updated_at` watermark, upsert by primary key.

One asset per table in the `oltp` section of the source contracts. The watermark is stored in the
summary of the Iceberg snapshot that wrote the rows, so it commits atomically with the data: a run
that fails before its commit leaves the old watermark, and the next run extracts the same rows again.
Rows are read with `updated_at >= watermark` (not `>`), because rows committed later with the same
timestamp would otherwise be skipped; the upsert makes re-reading them harmless.
"""

from datetime import datetime

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from assets.audit_metadata import audit_metadata, table_checksum
from assets.contracts import ContractViolation, TableContract, conform_to_contract, oltp_contracts
from assets.ingestion_guard import IngestionGuard, guard_passes, source_problem
from resources.iceberg import IcebergCatalog, commit_with_retry
from resources.source_db import SourceDatabase

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


def extract_and_upsert(contract: TableContract, source: SourceDatabase, catalog: IcebergCatalog, run_id: str):
    """Extract the rows changed since the stored watermark and upsert them into `bronze.<table>`."""
    identifier = f"bronze.{contract.name}"
    table = catalog.load_or_create_table(identifier, contract.arrow_schema())
    previous = stored_watermark(table)
    raw = source.read_arrow(extraction_query(contract, previous))
    rows = conform_to_contract(raw, contract, f"{source.display_url} table {contract.name}", exact=False)
    rows = latest_version_per_key(rows, contract)
    new_watermark = previous
    if rows.num_rows:
        new_watermark = pc.max(rows.column(contract.watermark)).as_py().isoformat(sep=" ")
    properties = {WATERMARK_PROPERTY: new_watermark or "", "strata.run_id": run_id}

    def write(target):
        if rows.num_rows == 0:
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
    return rows, updated, inserted, previous, new_watermark, table, total


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
            rows, updated, inserted, previous, new_wm, table, total = extract_and_upsert(
                contract, source_db, iceberg, context.run.run_id
            )
        except ContractViolation as violation:
            # The same rows break the contract the same way on every attempt: fail now, no retry.
            raise dg.Failure(
                description=str(violation), metadata={"strata/contract": contract.name}, allow_retries=False
            ) from violation
        context.log.info(
            f"bronze.{contract.name}: {rows.num_rows} changed row(s) since {previous or 'the beginning'} "
            f"-> {updated} updated, {inserted} inserted; watermark now {new_wm}"
        )
        snapshot = table.current_snapshot()
        yield dg.MaterializeResult(
            metadata=audit_metadata(
                table_name=f"bronze.{contract.name}",
                uri=table.metadata_location,
                rows_in=rows.num_rows,
                rows_out=updated + inserted,
                table_row_count=total,
                checksum=table_checksum(rows, [contract.primary_key]),
                data_window=(previous or "-inf", new_wm or "-inf"),
                input_partitions=[f"{contract.name}@{contract.watermark}>={previous or '-inf'}"],
                snapshot_id=snapshot.snapshot_id if snapshot else None,
                schema=contract.arrow_schema(),
                extra={"rows_updated": updated, "rows_inserted": inserted, "watermark": new_wm or ""},
            )
        )

    return bronze_oltp_table


def build_oltp_assets() -> list[dg.AssetsDefinition]:
    return [build_oltp_asset(contract) for contract in oltp_contracts().values()]
