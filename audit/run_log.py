"""`audit.run_log`: the Iceberg projection of the audit records, one row per finished run.

One schema serves Iceberg, CSV and Parquet (lists and maps as JSON text). The table is only a projection
of the event log: the audit sensor appends to it, `rebuild_run_log` recreates it from the instance.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import UTC
from typing import TYPE_CHECKING, Any

import dagster as dg
import pyarrow as pa

from audit.record import AuditRecord, build_audit_records, finished_run_records
from resources.iceberg import IcebergCatalog, commit_with_retry

if TYPE_CHECKING:
    from pyiceberg.table import Table

RUN_LOG_TABLE = "audit.run_log"

JSON_FIELDS = (
    "asset_keys",
    "partitions",
    "data_windows",
    "input_partitions",
    "checksums",
    "snapshot_ids",
    "checks_passed",
    "checks_failed",
    "partition_rows",
)
TIMESTAMP = pa.timestamp("us", tz="UTC")
RUN_LOG_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job_name", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("trigger", pa.string(), nullable=False),
        pa.field("trigger_detail", pa.string(), nullable=False),
        pa.field("asset_keys", pa.string(), nullable=False),  # JSON list
        pa.field("partitions", pa.string(), nullable=False),  # JSON list
        pa.field("code_version", pa.string(), nullable=False),
        pa.field("git_sha", pa.string(), nullable=False),
        pa.field("image", pa.string(), nullable=False),
        pa.field("data_windows", pa.string(), nullable=False),  # JSON object
        pa.field("input_partitions", pa.string(), nullable=False),  # JSON list
        pa.field("rows_in", pa.int64(), nullable=False),
        pa.field("rows_out", pa.int64(), nullable=False),
        pa.field("rows_quarantined", pa.int64(), nullable=False),
        pa.field("checksums", pa.string(), nullable=False),  # JSON object
        pa.field("snapshot_ids", pa.string(), nullable=False),  # JSON object
        pa.field("checks_passed", pa.string(), nullable=False),  # JSON list
        pa.field("checks_failed", pa.string(), nullable=False),  # JSON list
        pa.field("start_time", TIMESTAMP),
        pa.field("end_time", TIMESTAMP),
        pa.field("duration_s", pa.float64()),
        pa.field("error_summary", pa.string()),
        pa.field("not_run_reason", pa.string()),
        # JSON object. Added after the table first shipped: optional, so a table created without it is
        # evolved in place (`run_log_table`), and its older rows read back as {}.
        pa.field("partition_rows", pa.string()),
    ]
)
assert [f.name for f in RUN_LOG_SCHEMA] == [f.name for f in fields(AuditRecord)]


def record_to_row(record: AuditRecord) -> dict[str, Any]:
    row = {f.name: getattr(record, f.name) for f in fields(AuditRecord)}
    for name in JSON_FIELDS:
        row[name] = json.dumps(row[name], sort_keys=True)
    return row


def records_to_arrow(records: Iterable[AuditRecord]) -> pa.Table:
    """The records as one Arrow table with the fixed RUN_LOG_SCHEMA (lists and maps as JSON text)."""
    return pa.Table.from_pylist([record_to_row(r) for r in records], schema=RUN_LOG_SCHEMA)


def records_from_arrow(table: pa.Table) -> list[AuditRecord]:
    """Inverse of records_to_arrow, for rows read back from Iceberg or Parquet."""
    records = []
    for field in RUN_LOG_SCHEMA:
        if field.name not in table.column_names and field.nullable:  # read from a table of an older schema
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    for row in table.select([f.name for f in RUN_LOG_SCHEMA]).to_pylist():
        for name in JSON_FIELDS:
            row[name] = json.loads(row[name]) if row[name] is not None else {}
        for name in ("start_time", "end_time"):
            if row[name] is not None and row[name].tzinfo is None:
                row[name] = row[name].replace(tzinfo=UTC)
        records.append(AuditRecord(**row))
    return records


def run_log_table(catalog: IcebergCatalog) -> Table:
    """The table, created with RUN_LOG_SCHEMA or, if an older version of it exists, evolved to it: the
    columns added since (all optional) are appended, and nothing existing changes."""
    table = catalog.load_or_create_table(RUN_LOG_TABLE, RUN_LOG_SCHEMA)
    if set(RUN_LOG_SCHEMA.names) - set(table.schema().column_names):
        with table.update_schema() as update:
            update.union_by_name(RUN_LOG_SCHEMA)
        table = table.refresh()
    return table


def recorded_run_ids(table: Table, records: Sequence[AuditRecord]) -> set[str]:
    """Which of `records`' runs the table already holds.

    The start-time bound lets Iceberg skip data files by their column stats (run ids are random, so their
    min/max stats prune nothing): a record's start time is fixed by the instance, so a run already in the
    table has the same start time there.
    """
    from pyiceberg.expressions import And, GreaterThanOrEqual, In

    if not records or table.current_snapshot() is None:
        return set()
    row_filter = In("run_id", {r.run_id for r in records})
    starts = [r.start_time for r in records]
    if all(s is not None for s in starts):
        row_filter = And(row_filter, GreaterThanOrEqual("start_time", min(starts).isoformat()))
    scan = table.scan(row_filter=row_filter, selected_fields=("run_id",))
    return set(scan.to_arrow().column("run_id").to_pylist())


def append_new_records(
    catalog: IcebergCatalog, records: Sequence[AuditRecord], *, writer: str = "audit_run_log_sensor"
) -> tuple[list[str], list[str]]:
    """Append the records whose run is not in the table yet, in one commit; (written, skipped) run ids."""
    if not records:
        return [], []
    unique = list({r.run_id: r for r in records}.values())

    def write(table: Table) -> tuple[list[str], list[str]]:
        present = recorded_run_ids(table, unique)
        new = [r for r in unique if r.run_id not in present]
        if new:
            table.append(records_to_arrow(new), snapshot_properties={"strata.writer": writer})
        return [r.run_id for r in new], sorted(present)

    return commit_with_retry(run_log_table(catalog), write)


def rebuild_run_log(
    instance: dg.DagsterInstance, catalog: IcebergCatalog, *, secrets: Iterable[str] | None = None
) -> int:
    """Recreate `audit.run_log` from the event log (one overwrite commit); returns the number of records.

    Also compacts the table: the sensor's one-file-per-tick appends become a single file.
    """
    records = build_audit_records(instance, finished_run_records(instance), secrets=secrets)
    rows = records_to_arrow(records)
    properties = {"strata.writer": "rebuild"}

    def write(table: Table) -> None:
        if table.current_snapshot() is None:  # nothing to replace (overwrite would warn of an empty delete)
            if rows.num_rows:
                table.append(rows, snapshot_properties=properties)
        else:
            table.overwrite(rows, snapshot_properties=properties)

    commit_with_retry(run_log_table(catalog), write)
    return len(records)
