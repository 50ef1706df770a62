"""Whole graph on one day at scale 1 (~1M telemetry rows) versus the same SQL in plain DuckDB.

Platform: `run_backfill` (hourly Bronze load with drop verification into Iceberg, OLTP extraction,
dbt build of every model with its tests as asset checks). Floor: the same compiled dbt model SQL run
in order in one DuckDB connection over the raw drop files and the source tables, with no Dagster, no
Iceberg, no verification and no tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from tests.benchmarks.measure import Measurement, measured, report

BENCH_START = date(2026, 10, 1)


def generate(root: Path, scale: float) -> None:
    env = {**os.environ, "STRATA_ROOT": str(root), "STRATA_START_DATE": BENCH_START.isoformat()}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            "generate",
            "--days",
            "1",
            "--scale",
            str(scale),
            "--start",
            str(BENCH_START),
        ],
        env=env,
        check=True,
        capture_output=True,
    )


def run_platform(root: Path, instance: dg.DagsterInstance | None = None) -> Measurement:
    """`instance`: where the runs are recorded (default: an in-memory one; an on-disk one when something
    must read the runs' events afterwards, as the daemon's sensors do)."""
    from definitions import build_definitions
    from jobs.backfill import run_backfill
    from resources.settings import load_settings

    os.environ["STRATA_ROOT"] = str(root)
    os.environ["STRATA_START_DATE"] = BENCH_START.isoformat()
    defs = build_definitions(load_settings())
    instance = instance or dg.DagsterInstance.ephemeral()
    with measured() as m:
        summary = run_backfill(defs, instance, BENCH_START, BENCH_START + timedelta(days=1))
    if not summary.success:
        raise RuntimeError(f"platform run failed: {summary}")
    m.parts = {job: seconds for job, _, _, seconds in summary.runs}
    hourly_run = next(run_id for job, run_id, _, _ in summary.runs if job == "load_hourly")
    m.steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(hourly_run)}
    return m


def compiled_models(floor_root: Path) -> list[tuple[str, str, str]]:
    """(relation, materialization, compiled SQL) of every model in dependency order."""
    from resources.environment import dbt_executable
    from resources.settings import DBT_PROJECT_DIR

    target = floor_root / "dbt_target"
    env = {**os.environ, "STRATA_ROOT": str(floor_root)}
    subprocess.run(
        [
            dbt_executable(),
            "compile",
            "--quiet",
            "--profiles-dir",
            ".",
            "--target-path",
            str(target),
            "--target",
            "local",
        ],
        cwd=DBT_PROJECT_DIR,
        env=env,
        check=True,
    )
    manifest = json.loads((target / "manifest.json").read_text())
    models = {uid: n for uid, n in manifest["nodes"].items() if n["resource_type"] == "model"}
    ordered, done = [], set()

    def visit(uid: str) -> None:
        if uid in done or uid not in models:
            return
        for dep in models[uid]["depends_on"]["nodes"]:
            visit(dep)
        done.add(uid)
        node = models[uid]
        ordered.append((f'{node["schema"]}."{node["alias"]}"', node["config"]["materialized"], node["compiled_code"]))

    for uid in sorted(models):
        visit(uid)
    return ordered


def run_floor(root: Path, floor_root: Path) -> Measurement:
    import duckdb

    from assets.bronze.contracts import oltp_contracts
    from resources.source_db import SourceDatabase

    floor_root.mkdir(parents=True, exist_ok=True)
    # The floor database must be named like the warehouse: compiled SQL says "warehouse"."silver"."x".
    db_path = floor_root / "warehouse.duckdb"
    con = duckdb.connect(str(db_path))
    con.execute("CREATE SCHEMA IF NOT EXISTS bronze")
    for name in oltp_contracts():
        con.execute(f"CREATE TABLE bronze.{name} AS SELECT * FROM range(0) WHERE false")  # placeholder for compile
    drop_feed_views(con, root / "landing")
    con.close()
    models = compiled_models(floor_root)  # compiling is not part of the measured work
    source = SourceDatabase(url=f"sqlite:///{root / 'source' / 'oltp.sqlite'}")
    with measured() as m:
        con = duckdb.connect(str(db_path))
        con.execute("SET TimeZone = 'UTC'")
        run_floor_sql(con, source, models)
        con.close()
    return m


def warm_validation_seconds() -> tuple[int, float]:
    """Read the day's telemetry from Iceberg and validate it again in this process, where Great
    Expectations is already imported: the cost of the checks themselves, without the one-off import."""
    import time

    from assets.quality.checks import read_rows
    from assets.quality.gx_validation import validate
    from assets.quality.suites import load_suite_files
    from resources.iceberg import IcebergCatalog
    from resources.settings import load_settings

    settings = load_settings()
    suite = next(s for s in load_suite_files() if s.suite["name"] == "bronze.telemetry")
    catalog = IcebergCatalog.from_settings(settings)
    began = time.perf_counter()
    rows = read_rows(suite, None, catalog, None)
    outcomes = validate(suite, rows, {"rows_in": len(rows), "rows_accepted": len(rows),
                                      "window_end": "2026-10-02T00:00:00",
                                      "window_last_15_minutes": "2026-10-01T23:45:00"})  # fmt: skip
    seconds = time.perf_counter() - began
    if errors := {o.check: o.metadata["error"] for o in outcomes if "error" in o.metadata}:
        raise RuntimeError(f"expectations could not run, so this is not the whole suite's time: {errors}")
    return len(rows), seconds


def quality_lines(steps: dict[str, float]) -> list[str]:
    """GX validation of the day's telemetry next to the time to materialize it (target: under 25%)."""
    load, checks = steps["bronze__telemetry"], steps["gx_bronze_telemetry"]
    rows, warm = warm_validation_seconds()
    return [
        f"GX suite on bronze/telemetry ({rows:,} rows), warm: {warm:.1f} s (read + validate) vs materialization "
        f"{load:.1f} s -> checks add {100 * warm / load:.0f}% (target < 25%)",
        f"  same check step in the run, incl. the one-off Great Expectations import: {checks:.1f} s "
        f"({100 * checks / load:.0f}%)",
    ]


def main(scale: float = 1.0) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp:
        root = Path(tmp) / "strata"
        with measured() as gen:
            generate(root, scale)
        platform = run_platform(root)
        floor = run_floor(root, Path(tmp) / "floor")
        return [
            f"demo generate (1 day, scale {scale}): {gen.seconds:.1f} s",
            report("whole graph, 1 day", platform, floor, "compiled dbt SQL in plain DuckDB"),
            "  platform runs: " + ", ".join(f"{job} {seconds:.1f} s" for job, seconds in platform.parts.items()),
            *quality_lines(platform.steps),
        ]


def drop_feed_views(con: object, landing: Path, skip: tuple[str, ...] = ()) -> None:
    """Every file-drop feed of the contracts (telemetry, and the second domain's journal feeds) as a view
    over its Parquet files in the landing zone, for the floors: what the platform loads into Bronze."""
    from assets.bronze.contracts import file_drop_contracts

    for name in file_drop_contracts():
        if name in skip:
            continue
        files = f"{landing / name}/*/*/*.parquet".replace("'", "''")
        con.execute(f"DROP TABLE IF EXISTS bronze.{name}")
        con.execute(
            f"CREATE OR REPLACE VIEW bronze.{name} AS SELECT * FROM read_parquet('{files}', union_by_name = true)"
        )


def run_floor_sql(con: object, source: object, models: list) -> None:
    """The floor's SQL part, shared by the benchmarks: the OLTP tables copied into Bronze as their
    contracts type them, then every compiled dbt model, in dependency order, in one DuckDB connection."""
    from assets.bronze.conform import conform_to_contract
    from assets.bronze.contracts import oltp_contracts

    for name, contract in oltp_contracts().items():
        rows = conform_to_contract(source.read_arrow(f"SELECT * FROM {name}"), contract, name, exact=False)  # noqa: F841
        con.execute(f"CREATE OR REPLACE TABLE bronze.{name} AS SELECT * FROM rows")
    for schema in sorted({relation.rsplit(".", 1)[0] for relation, _, _ in models} | {"silver", "gold"}):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")  # every schema a model lands in (gold_restricted too)
    for relation, materialized, sql in models:
        kind = "VIEW" if materialized == "view" else "TABLE"
        con.execute(f"CREATE OR REPLACE {kind} {relation} AS {sql}")
