"""Writing per-partition check results to the local event log (resources/local_event_log.py).

A range run of hourly partitions records one check result per check and hour: the 181-day backfill
writes 11 x 4,344 of them. The figure: seconds per 1,000 results, stored the way a run stores them
(`report_dagster_event` on the run), median of 3, for the local instance's storage and for Dagster's
default SQLite storage. Floor: the same rows written with the raw sqlite3 module on open connections
(the event in the run's shard and in the index, and its row in `asset_check_executions`), in WAL mode
with `synchronous=NORMAL`, one commit per result, as the platform's storage does.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import serialize_value

from tests.benchmarks.measure import Measurement, report

RESULTS = 1000
REPEATS = 3
CHECKS_PER_HOUR = 8
RUN_ID = "bench000-0000-0000-0000-000000000000"
INSERT_EVENT = "INSERT INTO event_logs (run_id, event, asset_key) VALUES (?, ?, ?)"
POOLED = {
    "module": "resources.local_event_log",
    "class": "PooledSqliteEventLogStorage",
}


def check_events(count: int) -> Iterator[DagsterEvent]:
    for i in range(count):
        evaluation = dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(["bronze", "telemetry"]),
            check_name=f"check_{i % CHECKS_PER_HOUR}",
            passed=True,
            partition=f"2026-01-01-{i // CHECKS_PER_HOUR:05d}",
            metadata={"rows_validated": 420},
        )
        yield DagsterEvent(
            event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
            job_name="load_hourly",
            event_specific_data=evaluation,
        )


def through_instance(pooled: bool) -> float:
    with tempfile.TemporaryDirectory() as home:
        overrides = {"event_log_storage": {**POOLED, "config": {}}} if pooled else {}
        with dg.instance_for_test(temp_dir=home, overrides=overrides) as instance:
            instance.add_run(DagsterRun(job_name="load_hourly", run_id=RUN_ID))
            events = list(check_events(RESULTS))
            began = time.perf_counter()
            for event in events:
                instance.report_dagster_event(event, run_id=RUN_ID)
            return time.perf_counter() - began


def raw_sqlite() -> float:
    with tempfile.TemporaryDirectory() as home:
        connections = [sqlite3.connect(os.path.join(home, f"{name}.db")) for name in ("run", "index")]
        for conn in connections:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE event_logs (id INTEGER PRIMARY KEY, run_id TEXT, event TEXT, asset_key TEXT)")
        run_db, index_db = connections
        index_db.execute(
            "CREATE TABLE asset_check_executions (id INTEGER PRIMARY KEY, asset_key TEXT, check_name TEXT, "
            "run_id TEXT, partition TEXT, status TEXT, evaluation_event TEXT, storage_id INTEGER)"
        )
        index_db.execute("CREATE UNIQUE INDEX u ON asset_check_executions (asset_key, check_name, run_id, partition)")
        events = [(event, serialize_value(event)) for event in check_events(RESULTS)]
        began = time.perf_counter()
        for event, text in events:
            evaluation = event.event_specific_data
            key = evaluation.asset_key.to_string()
            with run_db:
                run_db.execute(INSERT_EVENT, (RUN_ID, text, key))
            with index_db:
                storage_id = index_db.execute(INSERT_EVENT, (RUN_ID, text, key)).lastrowid
            with index_db:
                index_db.execute(
                    "INSERT INTO asset_check_executions (asset_key, check_name, run_id, partition, status, "
                    "evaluation_event, storage_id) VALUES (?, ?, ?, ?, 'SUCCEEDED', ?, ?)",
                    (key, evaluation.check_name, RUN_ID, evaluation.partition, text, storage_id),
                )
        elapsed = time.perf_counter() - began
        for conn in connections:
            with closing(conn):
                pass
        return elapsed


def main() -> Iterator[str]:
    figures: dict[str, list[float]] = {"pooled": [], "default": [], "floor": []}
    for _ in range(REPEATS):
        figures["pooled"].append(through_instance(pooled=True))
        figures["default"].append(through_instance(pooled=False))
        figures["floor"].append(raw_sqlite())
    median = {name: statistics.median(values) for name, values in figures.items()}
    load = os.getloadavg()[0]
    yield report(
        f"event log, {RESULTS} check results of one run (median of {REPEATS}, load {load:.1f})",
        Measurement(seconds=median["pooled"]),
        Measurement(seconds=median["floor"]),
        "raw sqlite3, open connections",
    )
    yield (
        f"  Dagster's default SQLite storage: {median['default']:.1f} s "
        f"({median['default'] / median['pooled']:.1f}x the local instance's)"
    )
