"""Compatibility views: every legacy name declared in a model's `meta.legacy_views` exists in the
warehouse after a dbt build and returns exactly the governed table's rows, column by column; the same
statements dbt-trino sends parse as Trino SQL."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from tests.test_dbt_project import SCRATCH_ROWS, create_scratch_warehouse, dbt_env, run_dbt  # noqa: F401
from tests.test_trino_prod_path import parse_trino, prod_runs  # noqa: F401


def declared_views(manifest: dict) -> dict[tuple[str, str], tuple[str, str, dict[str, str]]]:
    """(schema, legacy name) -> (governed schema, governed table, legacy column -> governed column)."""
    views = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model":
            continue
        for view in (node["config"].get("meta") or {}).get("legacy_views", []):
            key = (view.get("schema", "legacy"), view["name"])
            assert key not in views, f"legacy view {key} declared twice"
            views[key] = (node["schema"], node["alias"] or node["name"], dict(view["columns"]))
    return views


def quoted(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


@pytest.mark.slow  # a whole `dbt run` of the project (~20-40 s on a loaded machine)
def test_every_declared_legacy_view_returns_the_governed_rows(dbt_env: Path, tmp_path: Path) -> None:  # noqa: F811
    create_scratch_warehouse(dbt_env, SCRATCH_ROWS)
    run_dbt(tmp_path, "run", "--target", "local")
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    declared = declared_views(manifest)
    # The mobility domain declares these (one with spaces in the view and column names).
    assert {("legacy", "CUSTOMER_MASTER"), ("legacy", "Daily KPI Report"), ("legacy", "KPI_DAILY")} <= set(declared)

    with duckdb.connect(str(dbt_env), read_only=True) as con:
        existing = {
            (schema, name)
            for schema, name in con.execute(
                "select table_schema, table_name from information_schema.tables where table_type = 'VIEW' "
                "and table_schema in (select distinct table_schema from information_schema.tables "
                "where table_schema not in ('bronze', 'silver', 'gold', 'main'))"
            ).fetchall()
        }
        assert existing == set(declared)
        for (schema, name), (governed_schema, table, columns) in declared.items():
            legacy_columns = [r[0] for r in con.execute(f"describe {quoted(schema, name)}").fetchall()]
            assert legacy_columns == list(columns), name
            legacy_rows = con.execute(f"select * from {quoted(schema, name)}").fetchall()
            governed_rows = con.execute(
                f"select {', '.join(quoted(c) for c in columns.values())} from {quoted(governed_schema, table)}"
            ).fetchall()
            assert legacy_rows, f"{name}: the scratch data must give the governed table rows"
            assert len(legacy_rows) == len(governed_rows), name
            assert sorted(legacy_rows, key=repr) == sorted(governed_rows, key=repr), name
        # A legacy name with a space reads like any column.
        report = con.execute('select "Report Date", "Bookings Total" from legacy."Daily KPI Report"').fetchall()
        kpi = con.execute("select kpi_date, bookings_total from gold.kpi_daily").fetchall()
        assert sorted(report) == sorted(kpi)


@pytest.mark.slow  # two dbt runs
def test_a_legacy_view_follows_a_rebuild_of_its_table(dbt_env: Path, tmp_path: Path) -> None:  # noqa: F811
    """The views are re-created by the on-run-end hook of the run that built their table: a view over a
    table built again reads the new rows (here: one customer more)."""
    rows = {**SCRATCH_ROWS, "customers": SCRATCH_ROWS["customers"][:1]}
    create_scratch_warehouse(dbt_env, rows)
    run_dbt(tmp_path, "run", "--target", "local", "--select", "+dim_customers")
    with duckdb.connect(str(dbt_env), read_only=True) as con:
        assert con.execute('select count(*) from legacy."CUSTOMER_MASTER"').fetchone() == (1,)
    create_scratch_warehouse(dbt_env, SCRATCH_ROWS)
    run_dbt(tmp_path, "run", "--target", "local", "--select", "+dim_customers")
    with duckdb.connect(str(dbt_env), read_only=True) as con:
        names = con.execute('select "Customer Name", "Customer Segment" from legacy."CUSTOMER_MASTER"').fetchall()
    # the view reads the governed table, personal data masked: the name "[redacted]" (dbt/macros/pii.sql)
    assert sorted(names) == sorted(("[redacted]", r[4]) for r in SCRATCH_ROWS["customers"])


@pytest.mark.slow  # two dbt-trino runs against the Trino stand-in
def test_legacy_view_statements_parse_as_trino(prod_runs) -> None:  # noqa: F811
    from sqlglot import exp

    run = prod_runs["first"]
    declared = declared_views(run.manifest)
    views = [s for s in run.statements if s.lower().startswith("create or replace view")]
    created = {}
    for sql in views:
        (tree,) = parse_trino(sql)
        assert isinstance(tree, exp.Create) and tree.kind == "VIEW", sql
        target = tree.this
        if target.db in ("silver", "gold"):
            continue  # the staging views dbt-trino creates as models
        created[(target.db, target.name)] = tree
        assert target.catalog == "iceberg", sql
    assert set(created) == set(declared)
    for key, tree in created.items():
        governed_schema, table, columns = declared[key]
        select = tree.expression
        assert [p.alias for p in select.expressions] == list(columns), key
        assert [p.this.name for p in select.expressions] == list(columns.values()), key
        (source,) = list(select.find_all(exp.Table))
        assert (source.catalog, source.db, source.name) == ("iceberg", governed_schema, table), key
    assert any(s.lower().startswith('create schema if not exists "iceberg"."legacy"') for s in run.statements)
