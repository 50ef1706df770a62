"""The audit sensor at scale: one tick records 1,000 finished runs (target < 10 s).

Runs: two template runs of a small Bronze-like asset (audit metadata from `audit_metadata`, two asset
checks) executed for real, one succeeding and one failing; then 1,000 runs cloned from them through
the instance API (the run plus every event of its template, renamed), 10% of them failed. Executing
1,000 runs in process would take minutes and measure Dagster's executor, not the audit trail.

Storage: the default local instance (SQLite run storage, one SQLite event-log file per run), as in
`make dev`; the Iceberg catalog is SQLite with a local warehouse.

Platform: ONE sensor tick (empty cursor, empty table): read the finished runs, read their audit events,
build 1,000 records, check the table for them and append them in one commit. Floor: the same run-records
query and the same per-run event reads, with no record building and no Iceberg.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa

from tests.benchmarks.measure import Measurement, measured, report

RUNS = 1000
FAILED_EVERY = 10  # one run in ten failed
TICK_TARGET_S = 10.0


def template_assets(*, fail: bool) -> list:
    """The asset (and its checks) the template runs materialize; `fail` makes its read fail."""
    from assets.audit_metadata import audit_metadata, table_checksum

    key = dg.AssetKey(["bronze", "bench_stations"])

    @dg.asset(key=key)
    def bench_stations() -> dg.MaterializeResult:
        if fail:
            raise RuntimeError("source read failed: no such table: bench_stations")
        rows = pa.table({"station_id": list(range(100)), "name": [f"s{i}" for i in range(100)]})
        return dg.MaterializeResult(
            metadata=audit_metadata(
                table_name="bronze.bench_stations",
                uri="file:///bench/bronze/bench_stations/metadata.json",
                rows_in=100,
                rows_out=100,
                table_row_count=100,
                checksum=table_checksum(rows, ["station_id"]),
                data_window=("2026-10-01 00:00:00", "2026-10-02 00:00:00"),
                input_partitions=["bench_stations@updated_at>=2026-10-01 00:00:00"],
                snapshot_id=1234567890,
                schema=rows.schema,
            )
        )

    @dg.asset_check(asset=key)
    def keys_unique() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    @dg.asset_check(asset=key)
    def rows_present() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    return [bench_stations, keys_unique, rows_present]


def clone_runs(instance: dg.DagsterInstance, template_ids: list[str], count: int) -> list[str]:
    """`count` new finished runs, each a copy of a template run's record and event log under a new id.

    Storing events one by one through the instance costs ~25 ms each (a connection and a commit per
    event, plus a schema check per new per-run SQLite file): 1,000 runs would take ~5 minutes. So each
    run's event-log file is a byte copy of its template's with the run id rewritten, and the run record
    goes through the run storage with the template's run events (start, success/failure), which set its
    status, start and end exactly as a real run's events do. The cross-run asset index is not filled:
    the audit reads only per-run logs.
    """
    storage = instance.event_log_storage
    templates = {}
    for run_id in template_ids:
        path = storage.path_for_shard(run_id)
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the .db file alone then holds every event
        job_events = [e.dagster_event for e in instance.all_logs(run_id) if e.is_dagster_event]
        job_events = [e for e in job_events if e.is_job_event]
        templates[run_id] = (instance.get_run_by_id(run_id), path, job_events)
    created = []
    for index in range(count):
        template_id = template_ids[1] if index % FAILED_EVERY == FAILED_EVERY - 1 else template_ids[0]
        run, path, job_events = templates[template_id]
        run_id = str(uuid.uuid4())
        target = storage.path_for_shard(run_id)
        shutil.copyfile(path, target)
        with closing(sqlite3.connect(target)) as conn, conn:
            conn.execute(
                "UPDATE event_logs SET run_id = ?, event = replace(event, ?, ?)", (run_id, template_id, run_id)
            )
        instance.add_run(
            dg.DagsterRun(job_name=run.job_name, run_id=run_id, tags={**run.tags, "strata/trigger": "bench"})
        )
        for event in job_events:
            instance.run_storage.handle_run_event(run_id, event, datetime.now(UTC))
        created.append(run_id)
    return created


def floor_read(instance: dg.DagsterInstance) -> int:
    """What any audit needs at least: the finished runs' records and their audit events."""
    from jobs.audit_trail import AUDIT_EVENT_TYPES, TERMINAL_STATUSES

    records = instance.get_run_records(
        dg.RunsFilter(statuses=list(TERMINAL_STATUSES)), limit=RUNS + 10, order_by="update_timestamp", ascending=True
    )
    events = 0
    for record in records:
        events += len(instance.all_logs(record.dagster_run.run_id, of_type=set(AUDIT_EVENT_TYPES)))
    return events


def main() -> list[str]:
    from resources.iceberg import IcebergCatalog
    from sensors.audit_sensor import RUN_LOG_TABLE, build_audit_sensor

    lines = []
    with tempfile.TemporaryDirectory(prefix="bench_audit_") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        with dg.instance_for_test(temp_dir=tmp) as instance:
            ok = dg.materialize(template_assets(fail=False), instance=instance)
            bad = dg.materialize(template_assets(fail=True)[:1], instance=instance, raise_on_error=False)
            clone_runs(instance, [ok.run_id, bad.run_id], RUNS)
            # The templates stay out of the count: the tick must find exactly RUNS runs.
            instance.delete_run(ok.run_id)
            instance.delete_run(bad.run_id)
        lines.append(f"audit sensor: created {RUNS} finished runs in {time.perf_counter() - began:.1f} s")

        # Each side opens the instance afresh, as a daemon meets a new run's event-log file for the first
        # time; one untimed read first warms the OS file cache for both.
        with dg.DagsterInstance.local_temp(tmp) as warm:
            floor_read(warm)
        floor: Measurement
        with dg.DagsterInstance.local_temp(tmp) as instance, measured() as floor:
            events = floor_read(instance)

        catalog = IcebergCatalog(uri=f"sqlite:///{root / 'catalog.db'}", warehouse=f"file://{root / 'warehouse'}")
        catalog.load()  # the catalog database exists in a deployment; creating it is not the tick's work
        sensor = build_audit_sensor()
        platform: Measurement
        with dg.DagsterInstance.local_temp(tmp) as instance:
            context = dg.build_sensor_context(instance=instance, resources={"iceberg": catalog})
            with measured() as platform:
                result = sensor(context)
        written = catalog.load().load_table(RUN_LOG_TABLE).scan().to_arrow().num_rows
        if written != RUNS:
            raise AssertionError(f"one tick wrote {written} records, expected {RUNS}: {result.skip_reason}")

        lines.append(
            report(
                f"audit sensor, one tick over {RUNS} finished runs",
                platform,
                floor,
                f"run records + {events} audit events read, no records, no Iceberg",
            )
        )
        verdict = "PASS" if platform.seconds < TICK_TARGET_S else "FAIL"
        lines.append(f"audit sensor: {written} records in one commit; target < {TICK_TARGET_S:.0f} s: {verdict}")
    return lines


if __name__ == "__main__":
    for line in main():
        print(line, flush=True)
    sys.exit(0)
