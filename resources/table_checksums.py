"""Order-independent content checksums of warehouse tables, computed by the engine in one pass.

Every dbt materialization records one (`strata/checksum`: of the whole table for an unpartitioned
model, of each day for a daily one), and `audit replay` computes the same value over a re-run of the
transformations to tell whether a past run's result can be reproduced. The value is
`rows=<n> hash=<h>`, `h` the sum of a hash of every row, so it depends on the rows only, not on their
order, and a duplicated row changes it. The hash function is the engine's own (DuckDB `hash`, Trino
`checksum`): values compare only within one engine and engine version, which is all replay needs.

Columns that name the invocation rather than the data (`dbt_invocation_id` in the quarantine models)
are left out: a re-run of the same data must give the same checksum.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from resources.warehouse import quote_identifier

# Lineage columns whose value is new on every dbt invocation, whatever the data.
INVOCATION_COLUMNS = frozenset({"dbt_invocation_id"})
EMPTY = "rows=0"
# `properties={'partitioning': "ARRAY['reading_date']"}` (the Iceberg partitioning on Trino), or the
# column a model filters its window on (`window_filter('booked_at')`, `delete_window('kpi_date')`).
PARTITIONING_COLUMN = re.compile(r"""ARRAY\[\s*'([A-Za-z_][A-Za-z0-9_]*)'""")
WINDOW_MACRO_COLUMN = re.compile(r"""(?:delete_window|window_filter)\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")
PARTITION_COLUMN_META = "partition_column"


def row_hash_sum_sql(engine: str, columns: Sequence[str]) -> str:
    """An aggregate expression: the order-independent hash of the rows' `columns`, as text."""
    names = [quote_identifier(c) for c in columns if c not in INVOCATION_COLUMNS]
    if not names:
        return "CAST(NULL AS VARCHAR)"
    if engine == "duckdb":
        return f"CAST(sum(CAST(hash({', '.join(names)}) AS HUGEINT)) AS VARCHAR)"
    if engine == "trino":
        return f"to_hex(checksum(ROW({', '.join(names)})))"
    raise ValueError(f"no row checksum for warehouse engine {engine!r}")


def format_checksum(rows: int, row_hash_sum: str | None) -> str:
    return f"rows={rows} hash={row_hash_sum}" if rows else EMPTY


def partition_column(node: Mapping[str, Any]) -> str | None:
    """The day column of a daily model: `meta.partition_column` when the model names it, else the
    first column of its `partitioning` property, else the column its window macros filter on.
    A timestamp column counts by its UTC date."""
    config = node.get("config", {})
    named = (config.get("meta") or {}).get(PARTITION_COLUMN_META) or (node.get("meta") or {}).get(PARTITION_COLUMN_META)
    if named:
        return str(named)
    match = PARTITIONING_COLUMN.search(str((config.get("properties") or {}).get("partitioning", "")))
    if match:
        return match.group(1)
    hooks = " ".join(str(hook.get("sql", "")) for hook in config.get("pre-hook", []) or [])
    match = WINDOW_MACRO_COLUMN.search(hooks) or WINDOW_MACRO_COLUMN.search(str(node.get("raw_code", "")))
    return match.group(1) if match else None
