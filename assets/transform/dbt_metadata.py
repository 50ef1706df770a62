"""What a dbt materialization says about its table, read from the warehouse after `dbt build`.

dagster-dbt reports that a model was built, not what it holds: no row count, and for a daily model
built over a range of days one Output whose metadata Dagster copies onto every day's event. Here the
warehouse is asked, in two queries for the whole run (its columns, and per model the total rows and
the rows of each day of the window), and every model's materialization gets `dagster/row_count`,
`dagster/table_name` and `dagster/column_schema`; a daily model gets, per day, its own
`dagster/partition_row_count` and `strata/data_window`. dagster-dbt's own `fetch_row_counts()` does
not fit: it counts whole tables (never views), and its count lands on every partition of a range.

The same checksums are the materializations' data versions (`content_data_version`): a rebuild that
leaves a table (or a day) as it was keeps its data version, so automation, which follows data version
changes (jobs/policies.py), rebuilds nothing downstream of it.

The SQL is portable (quoted identifiers, `?` parameters, `information_schema`), so it runs on DuckDB
and Trino alike through `Warehouse.query_arrow`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg

from resources.table_checksums import EMPTY, format_checksum, partition_column, row_hash_sum_sql
from resources.warehouse import Warehouse, quote_identifier, relation_name


@dataclass(frozen=True)
class ModelTable:
    """The warehouse relation a dbt model builds, and the column that says which day a row belongs to."""

    schema: str
    table: str
    partition_column: str | None = None
    descriptions: Mapping[str, str] = field(default_factory=dict)
    materialized: str = "table"  # a view gets no checksum: it holds no rows of its own

    @property
    def checksummed(self) -> bool:
        return self.materialized != "view"

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass
class TableFacts:
    """What the warehouse holds for one model after the run."""

    columns: list[tuple[str, str]] = field(default_factory=list)  # (name, type) in table order
    row_count: int | None = None
    rows_per_day: dict[date, int] = field(default_factory=dict)  # days of the run's window only
    # resources/table_checksums.py: of the whole table (unpartitioned models) and of each day of the window
    checksum: str | None = None
    checksum_per_day: dict[date, str] = field(default_factory=dict)


def model_table(node: Mapping[str, Any], partitioned: bool) -> ModelTable:
    return ModelTable(
        schema=str(node["schema"]),
        table=str(node.get("alias") or node["name"]),
        partition_column=partition_column(node) if partitioned else None,
        descriptions={name: str(col.get("description") or "") for name, col in node.get("columns", {}).items()},
        materialized=str(node.get("config", {}).get("materialized", "table")),
    )


def read_table_facts(
    warehouse: Warehouse, tables: Sequence[ModelTable], window: dg.TimeWindow | None
) -> dict[str, TableFacts]:
    """Columns, total rows and (for partitioned tables, within `window`) rows per day, by table name.

    Two queries whatever the number of models: every Silver/Gold step opens the warehouse once or twice,
    not once per model. A model whose relation is missing (it failed) is simply absent from the result.
    """
    unique = list({t.name: t for t in tables}.values())
    if not unique:
        return {}
    facts: dict[str, TableFacts] = {}
    schemas = sorted({t.schema for t in unique})
    columns = warehouse.query_arrow(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema IN ({', '.join('?' for _ in schemas)}) "
        "ORDER BY table_schema, table_name, ordinal_position",
        schemas,
    ).to_pylist()
    wanted = {t.name for t in unique}
    for row in columns:
        name = f"{row['table_schema']}.{row['table_name']}"
        if name in wanted:
            facts.setdefault(name, TableFacts()).columns.append((row["column_name"], str(row["data_type"])))

    selects: list[str] = []
    params: list[Any] = []
    for table in unique:
        if table.name not in facts:
            continue
        relation = relation_name(table.schema, table.table)
        label = table.name.replace("'", "''")
        # Content checksums of what the run wrote: the whole table, or (daily) each day of the window.
        row_hash = row_hash_sum_sql(warehouse.engine, [name for name, _ in facts[table.name].columns])
        no_hash = "CAST(NULL AS VARCHAR)"
        total_hash = row_hash if table.checksummed and window is None else no_hash
        selects.append(
            f"SELECT '{label}' AS t, CAST(NULL AS DATE) AS d, count(*) AS n, {total_hash} AS c FROM {relation}"
        )
        column_type = dict(facts[table.name].columns).get(table.partition_column or "")
        if window is not None and column_type is not None:
            column = quote_identifier(table.partition_column)
            selects.append(
                f"SELECT '{label}' AS t, CAST({column} AS DATE) AS d, count(*) AS n, "
                f"{row_hash if table.checksummed else no_hash} AS c FROM {relation} "
                f"WHERE {column} >= ? AND {column} < ? GROUP BY CAST({column} AS DATE)"
            )
            params += window_bounds(window, column_type)
    if selects:
        for row in warehouse.query_arrow("\nUNION ALL\n".join(selects), params).to_pylist():
            table_facts = facts[row["t"]]
            checksum = format_checksum(int(row["n"]), row["c"]) if row["c"] is not None or not row["n"] else None
            if row["d"] is None:
                table_facts.row_count = int(row["n"])
                if window is None and checksum is not None:
                    table_facts.checksum = checksum
            else:
                table_facts.rows_per_day[_as_date(row["d"])] = int(row["n"])
                if checksum is not None:
                    table_facts.checksum_per_day[_as_date(row["d"])] = checksum
    return facts


def window_bounds(window: dg.TimeWindow, column_type: str) -> list[Any]:
    """[start, end) as dates for a DATE column, else as naive UTC timestamps."""
    start, end = window.start.replace(tzinfo=None), window.end.replace(tzinfo=None)
    return [start.date(), end.date()] if column_type.lower() == "date" else [start, end]


def _as_date(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


def table_metadata(table: ModelTable, facts: TableFacts | None) -> dict[str, Any]:
    """The metadata every materialization of this model carries, whatever the partition."""
    metadata: dict[str, Any] = {"dagster/table_name": table.name}
    if facts is None:
        return metadata
    if facts.row_count is not None:
        metadata["dagster/row_count"] = facts.row_count
    if facts.checksum is not None and table.checksummed:
        metadata["strata/checksum"] = facts.checksum
    if facts.columns:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[
                dg.TableColumn(name, data_type, description=table.descriptions.get(name) or None)
                for name, data_type in facts.columns
            ]
        )
    return metadata


def day_metadata(table: ModelTable, facts: TableFacts | None, day_window: dg.TimeWindow) -> dict[str, Any]:
    """One day's own metadata: its window and, when the model has a day column, the rows it holds."""
    day, next_day = day_window.start.date(), day_window.end.date()
    metadata: dict[str, Any] = {"strata/data_window": f"[{day:%Y-%m-%d}, {next_day:%Y-%m-%d})"}
    if facts is not None and table.partition_column in dict(facts.columns):
        metadata["dagster/partition_row_count"] = sum(n for d, n in facts.rows_per_day.items() if day <= d < next_day)
        if table.checksummed:  # a day the run left empty has the empty checksum
            metadata["strata/checksum"] = facts.checksum_per_day.get(day, EMPTY)
    return metadata


def content_data_version(
    table: ModelTable, facts: TableFacts | None, window: dg.TimeWindow | None
) -> dg.DataVersion | None:
    """The data version of a model's materialization: its content checksum, so that an unchanged rebuild
    keeps it. Unpartitioned: the whole table's. Daily: the day's checksum when the run built one day; a
    run over several days yields one Output for all of them (Dagster copies its data version onto every
    day), so each day gets a digest of all the days' checksums: unchanged when no day changed, new for
    every day of the range when one did (a spurious change at most, never a missed one).

    None (Dagster then derives the version from the model's code version and its inputs' versions) for a
    view, which holds no rows of its own, and when the warehouse could not be read."""
    if facts is None or not table.checksummed:
        return None
    if window is None:
        return dg.DataVersion(facts.checksum) if facts.checksum is not None else None
    if table.partition_column not in dict(facts.columns):
        return None
    first, end = window.start.date(), window.end.date()
    days = [first + timedelta(days=n) for n in range((end - first).days)]
    checksums = [facts.checksum_per_day.get(day, EMPTY) for day in days]
    if len(days) == 1:
        return dg.DataVersion(checksums[0])
    digest = hashlib.sha256("\n".join(f"{d:%Y-%m-%d} {c}" for d, c in zip(days, checksums, strict=True)).encode())
    return dg.DataVersion(f"days={first:%Y-%m-%d}..{days[-1]:%Y-%m-%d} sha256={digest.hexdigest()[:32]}")
