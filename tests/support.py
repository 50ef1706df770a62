"""Helpers the integration tests share: generate demo data into a temp root and read tables back."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from audit.metadata import table_checksum
from demo.simulator import DemoConfig, generate
from resources import dbt_forkserver
from resources.settings import StrataSettings


def generate_demo(settings: StrataSettings, start: date, days: int, as_of: datetime | None = None) -> dict:
    cfg = DemoConfig(start=start, days=days, scale=0.01, seed=7)
    return generate(
        cfg,
        source_url=settings.source_database_url,
        landing_root=Path(settings.landing_root),
        truth_dir=settings.demo_dir,
        as_of=as_of,
    )


def refresh_unpartitioned(defs: dg.Definitions, instance: dg.DagsterInstance, **kwargs) -> dg.ExecuteInProcessResult:
    """The hourly refresh as one run of the single-location view: the OLTP extraction into Bronze and the
    unpartitioned Silver/Gold models it feeds, a failed blocking Bronze check stopping the models in the run.
    Deployed, these are two jobs of two code locations: `extract_oltp` (ingestion), then the models by
    automation, which holds them back across runs while a blocking check of Bronze fails."""
    jobs = [defs.resolve_job_def(name) for name in ("extract_oltp", "refresh_unpartitioned")]
    keys = set().union(*(job.asset_layer.selected_asset_keys for job in jobs))
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=sorted(keys, key=lambda key: key.to_user_string()), **kwargs
    )


def warehouse_tables(settings: StrataSettings) -> dict[str, pa.Table]:
    """Every Silver/Gold table of the local warehouse (restricted Gold included), by `schema.table`."""
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        names = con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('silver', 'gold', 'gold_restricted') AND table_type = 'BASE TABLE'"
        ).fetchall()
        return {name: con.execute(f"SELECT * FROM {name}").to_arrow_table() for (name,) in names}


def fingerprints(tables: dict[str, pa.Table]) -> dict[str, tuple[int, str]]:
    """(row count, content checksum) per table: what must not change when a run is repeated."""
    return {name: (t.num_rows, table_checksum(t, t.column_names)) for name, t in tables.items()}


def assert_gold_matches_truth(tables: dict, truth: dict) -> None:
    """Gold (and Silver telemetry per day) against the generator's ground truth, column by column."""
    assert_kpi_daily_matches_truth(tables["gold.kpi_daily"].to_pylist(), truth)
    per_status: dict[str, dict[str, int]] = {}
    for r in tables["gold.fct_bookings"].to_pylist():
        day = per_status.setdefault(str(r["booking_date"]), {})
        day[r["status"]] = day.get(r["status"], 0) + 1
    assert per_status == truth["bookings_per_status"]
    km: dict[str, dict[str, float]] = {}
    for r in tables["gold.fleet_health_daily"].to_pylist():
        km.setdefault(str(r["health_date"]), {})[str(r["vehicle_id"])] = round(r["km_driven"], 6)
    assert km == truth["km_driven_per_vehicle"]
    telemetry_per_day: dict[str, int] = {}
    for r in tables["silver.telemetry_clean"].select(["reading_date"]).to_pylist():
        telemetry_per_day[str(r["reading_date"])] = telemetry_per_day.get(str(r["reading_date"]), 0) + 1
    assert telemetry_per_day == truth["telemetry_rows_per_day"]


def assert_kpi_daily_matches_truth(kpi: list[dict], truth: dict) -> None:
    """Every column of every kpi_daily row, recomputed from the generator's ground truth."""
    expected = {}
    for day in sorted(set(truth["bookings_per_status"]) | set(truth["daily_revenue_cents"])):
        statuses = truth["bookings_per_status"].get(day, {})
        km = truth["km_driven_per_vehicle"].get(day, {})
        revenue = truth["daily_revenue_cents"].get(day, 0)
        expected[day] = {
            "bookings_total": sum(statuses.values()),
            **{f"bookings_{s}": statuses.get(s, 0) for s in ("reserved", "active", "completed", "cancelled")},
            "revenue_cents": revenue,
            "revenue_eur": Decimal(revenue) / 100,
            "km_driven": round(sum(km.values()), 6),
            "active_vehicles": len(km),
        }
    actual = {str(r.pop("kpi_date")): r for r in kpi}
    assert set(actual) == set(expected)
    for day, row in expected.items():
        assert actual[day].pop("km_driven") == pytest.approx(row.pop("km_driven"), abs=1e-5), day
        assert actual[day] == row, day


def dbt_forkserver_pids(directory: Path) -> list[int]:
    """The pids of the dbt forkservers listening in `directory` (asked over their sockets)."""
    pids = []
    for address in sorted(directory.glob("*.sock")):
        conn = dbt_forkserver.connect(address)
        if conn is None:
            continue
        with conn:
            conn.sendall(dbt_forkserver.encode_request({"ping": True}))
            messages = dbt_forkserver.read_messages(conn, bytearray())
        pids += [message["server"] for message in messages or []]
    return pids


@contextmanager
def private_dbt_forkserver() -> Iterator[Path]:
    """dbt calls made inside are served by a forkserver of their own, stopped at the end, so a test never
    kills or reuses the server other tests share. A short directory under /tmp: a Unix socket path holds at
    most 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="dbtfs-", dir="/tmp"))
    previous = os.environ.get(dbt_forkserver.DIRECTORY_ENV)
    os.environ[dbt_forkserver.DIRECTORY_ENV] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(dbt_forkserver.DIRECTORY_ENV, None)
        else:
            os.environ[dbt_forkserver.DIRECTORY_ENV] = previous
        for pid in dbt_forkserver_pids(directory):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(directory, ignore_errors=True)


def slow_dbt_python_model(pid_path: str) -> str:
    """A dbt Python model that runs a query DuckDB needs hours for and, once that query is under way, writes
    its process id to the file the expression `pid_path` names: dbt cancels the query on Ctrl-C (a Python
    `time.sleep` could not be cancelled, dbt waits for its worker threads). The id is written from a timer
    a second after the query began, not before it: a Ctrl-C landing between the write and the query would
    find nothing to cancel, and the query would then run for hours. For the tests that stop dbt mid-model."""
    return f"""
def model(dbt, session):
    import os, threading

    def announce():
        with open({pid_path}, "w") as out:
            out.write(str(os.getpid()))

    timer = threading.Timer(1.0, announce)
    timer.start()
    session.execute("select count(*) from range(1000000000000)").fetchall()
    return session.sql("select 1 as x")
"""


# The model after the slow one: never built when dbt is stopped.
AFTER_SLOW_DBT_MODEL = """
def model(dbt, session):
    dbt.ref("slow")
    return session.sql("select 2 as y")
"""


def create_database(server_url: str, name: str) -> str:
    """A new database on the PostgreSQL server at `server_url` (the `postgres_url` fixture's); its URL."""
    from urllib.parse import urlsplit

    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


@contextmanager
def local_instance_for_test(home: Path | str | None = None) -> Iterator[dg.DagsterInstance]:
    """A test instance (in `home`, else a temporary directory) with the event log storage the local
    profile's dagster.yaml configures, so runs pay what they pay under `make dev`."""
    import yaml

    repo = Path(__file__).resolve().parent.parent
    storage = yaml.safe_load((repo / "dagster.yaml").read_text())["event_log_storage"]
    with tempfile.TemporaryDirectory() as scratch:
        root = str(home or scratch)
        Path(root).mkdir(parents=True, exist_ok=True)
        with dg.instance_for_test(temp_dir=root, overrides={"event_log_storage": storage}) as instance:
            yield instance


@contextmanager
def backfilled_platform(
    tmp: Path, days: list[date]
) -> Iterator[tuple[StrataSettings, dg.Definitions, dg.DagsterInstance, object]]:
    """A fresh root under `tmp` with the demo data of `days`, and the whole graph backfilled over them the
    way `python -m jobs.backfill` does, on an instance in `tmp`: (settings, definitions, instance, the
    backfill summary). For module-scoped fixtures that read what one real backfill wrote."""
    from datetime import timedelta

    from definitions import build_definitions
    from jobs.backfill import run_backfill
    from resources.settings import load_settings
    from tests.conftest import ENVIRONMENT_OVERRIDES, TEST_START

    home = tmp / "dagster_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as env:
        for name in ENVIRONMENT_OVERRIDES:
            env.delenv(name, raising=False)
        env.setenv("STRATA_ROOT", str(tmp / "strata"))
        env.setenv("STRATA_START_DATE", TEST_START.isoformat())
        env.setenv("DAGSTER_HOME", str(home))
        settings = load_settings()
        generate_demo(settings, days[0], len(days))
        defs = build_definitions(settings)
        with local_instance_for_test(home) as instance:
            summary = run_backfill(defs, instance, days[0], days[-1] + timedelta(days=1))
            assert summary.success, summary
            yield settings, defs, instance, summary
