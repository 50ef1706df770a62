"""The Bronze row quarantine: rows that break their contract, kept instead of published or dropped.

An Iceberg table `audit.bronze_quarantine` next to `audit.loaded_drops`, with one row per (rejected
row, broken rule): which dataset and source it came from, the rule, the column and the offending value
as text, the whole raw row as JSON and the Dagster run that set it aside. Loaders append here BEFORE
their data commit, so once a watermark has moved past a bad row (or a drop is recorded as loaded) its
record already exists. Iceberg cannot commit two tables atomically: a run that fails after this append
and is re-run records the same rows again. That is harmless (the records say the same thing, with
each run id) and preferable to the opposite order, where a crash could lose them.

Personal data (the contract's `pii` columns) is recorded as `sha256:<hex>` of its text, in the offending
value and in the raw row: auditors read this table, and the hash still tells two values apart.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from assets.bronze.conform import RowRejects
from resources.iceberg import IcebergCatalog, commit_with_retry

QUARANTINE_TABLE = "audit.bronze_quarantine"
# What a loader knows about a rejected row; the run id and time are added when the records are appended.
RECORD_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # `<drop prefix><file>` or `source table <name>`
        pa.field("partition_key", pa.string(), nullable=False),  # the drop's hour; "" for OLTP tables
        pa.field("row_key", pa.string()),  # key value(s) as text, '|'-joined; null when a part is null
        pa.field("rule", pa.string(), nullable=False),
        pa.field("column_name", pa.string(), nullable=False),
        pa.field("offending_value", pa.string()),  # null when the value was null
        pa.field("raw_row", pa.string(), nullable=False),  # the row as read, as a JSON object
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        *RECORD_SCHEMA,
        pa.field("dagster_run_id", pa.string(), nullable=False),
        pa.field("quarantined_at", pa.timestamp("us"), nullable=False),
    ]
)


def quarantine_records(
    rejects: RowRejects,
    *,
    dataset: str,
    source: str,
    row_key_columns: Sequence[str],
    partition_key: str = "",
    pii_columns: Collection[str] = (),
) -> pa.Table:
    """One record per (rejected row, broken rule) of `rejects`, in RECORD_SCHEMA.

    `source` must name where the rows came from without credentials (a drop file path, a table name),
    since auditors read this table.
    """
    violations = rejects.violations
    n = violations.num_rows
    raw_rows = pa.array([_json_row(row, pii_columns) for row in rejects.raw_rows.to_pylist()], pa.string())
    rows = violations.column("row").combine_chunks()
    offending = violations.column("offending_value")
    if pii_columns:
        is_pii = [name in pii_columns for name in violations.column("column_name").to_pylist()]
        offending = pa.array(
            [pii_digest(v) if pii else v for v, pii in zip(offending.to_pylist(), is_pii, strict=True)], pa.string()
        )
    return pa.Table.from_arrays(
        [
            pa.array([dataset] * n, pa.string()),
            pa.array([source] * n, pa.string()),
            pa.array([partition_key] * n, pa.string()),
            _row_keys(rejects.raw_rows, row_key_columns).take(rows),
            violations.column("rule"),
            violations.column("column_name"),
            offending,
            raw_rows.take(rows),
        ],
        schema=RECORD_SCHEMA,
    )


def record_quarantined_rows(catalog: IcebergCatalog, records: pa.Table, run_id: str) -> int:
    """Append `records` (RECORD_SCHEMA) stamped with the run id and the time; return how many."""
    if records.num_rows == 0:
        return 0
    now = datetime.now(UTC).replace(tzinfo=None)
    stamped = pa.Table.from_arrays(
        [
            *records.select(RECORD_SCHEMA.names).columns,
            pa.array([run_id] * records.num_rows, pa.string()),
            pa.array([now] * records.num_rows, pa.timestamp("us")),
        ],
        schema=QUARANTINE_SCHEMA,
    )
    table = catalog.load_or_create_table(QUARANTINE_TABLE, QUARANTINE_SCHEMA)
    commit_with_retry(table, lambda t: t.append(stamped))
    return records.num_rows


def quarantined_rows(catalog: IcebergCatalog, *, dataset: str | None = None, run_id: str | None = None) -> pa.Table:
    """The quarantine records, optionally of one dataset and/or one run (empty before the first one)."""
    from pyiceberg.expressions import AlwaysTrue, And, EqualTo

    table = catalog.table_or_none(QUARANTINE_TABLE)
    if table is None or table.current_snapshot() is None:
        return QUARANTINE_SCHEMA.empty_table()
    row_filter = AlwaysTrue()
    if dataset is not None:
        row_filter = And(row_filter, EqualTo("dataset", dataset))
    if run_id is not None:
        row_filter = And(row_filter, EqualTo("dagster_run_id", run_id))
    return table.scan(row_filter=row_filter).to_arrow()


def describe_rejects(counts: dict[tuple[str, str], int]) -> str:
    """'<rule> (column <c>): <n> row(s)' for each broken rule: what a log line or alert should say."""
    return "; ".join(f"{rule} (column {column}): {n} row(s)" for (column, rule), n in sorted(counts.items()))


def _row_keys(rows: pa.Table, columns: Sequence[str]) -> pa.Array:
    if not columns or rows.num_rows == 0:
        return pa.nulls(rows.num_rows, pa.string())
    parts = [rows.column(c).cast(pa.string()).combine_chunks() for c in columns]
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "|")  # null as soon as one part is null


def pii_digest(value: object) -> str | None:
    """`sha256:<hex>` of a personal-data value's text (None stays None: a missing value is no personal data)."""
    return None if value is None else "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()


def _json_row(row: dict, pii_columns: Collection[str] = ()) -> str:
    # JSON has no NaN/Infinity; anything else without a JSON form (timestamps, bytes) is kept as text.
    return json.dumps({k: pii_digest(v) if k in pii_columns else _json_value(v) for k, v in row.items()}, default=str)


def _json_value(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
