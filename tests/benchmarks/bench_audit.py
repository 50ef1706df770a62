"""The audit sensor at scale: one tick records 1,000 finished runs (target < 10 s).

Runs: two template runs of a small Bronze-like asset (audit metadata from `audit_metadata`, two asset
checks) executed for real, one succeeding and one failing; then 1,000 runs cloned from them (the run
record plus every event of its template, under a new run id), one in ten failed. Executing 1,000 runs
in process would take minutes and measure Dagster's executor, not the audit trail.

Two event-log storages, because they differ by an order of magnitude in what the audit must read:
- run-sharded SQLite, the default of a local `DAGSTER_HOME` (`make dev`): one SQLite file per run, and
  Dagster checks each file's alembic schema on first open (~30-50 ms per run, whoever reads it);
- a single-database event log (Dagster's consolidated SQLite storage), the shape of the Postgres
  event log used in prod: one indexed table for every run.

Platform: ONE sensor tick (empty cursor, empty `audit.run_log`) on a freshly opened instance, as a code
server opens one per evaluation: read the finished runs, read their audit events, build 1,000 records,
check the table for them and append them in one commit. Floor: the same run-records query and the same
per-run event reads on a freshly opened instance, with no record building and no Iceberg.
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
from dagster._core.storage.event_log import SqliteEventLogStorage

from tests.benchmarks.measure import Measurement, measured, report

RUNS = 1000
FAILED_EVERY = 10  # one run in ten failed
TICK_TARGET_S = 10.0


def template_assets(*, fail: bool) -> list:
    """The asset (and its checks) the template runs materialize; `fail` makes its read fail."""
    from audit.metadata import audit_metadata, table_checksum

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


def copy_event_log(instance: dg.DagsterInstance, template_id: str, run_id: str, events: list) -> None:
    """Give `run_id` the template's event log, the cheap way each storage allows.

    Storing events one by one through the instance costs ~25 ms each (a connection and a commit per
    event, and a schema check per new run file): 1,000 runs would take ~5 minutes. Run-sharded SQLite
    gets a byte copy of the template's run file with the run id rewritten; a single-database log gets
    the template's events, renamed, in one INSERT. The cross-run asset index is not filled: the audit
    reads only per-run logs.
    """
    storage = instance.event_log_storage
    if isinstance(storage, SqliteEventLogStorage):
        target = storage.path_for_shard(run_id)
        shutil.copyfile(storage.path_for_shard(template_id), target)
        with closing(sqlite3.connect(target)) as conn, conn:
            conn.execute(
                "UPDATE event_logs SET run_id = ?, event = replace(event, ?, ?)", (run_id, template_id, run_id)
            )
    else:
        renamed = [e._replace(run_id=run_id) for e in events]
        with storage.run_connection(run_id) as conn:
            conn.execute(storage.prepare_insert_event_batch(renamed))


def clone_runs(instance: dg.DagsterInstance, template_ids: list[str], count: int) -> list[str]:
    """`count` new finished runs, each a copy of a template run's record and event log under a new id.

    The run record goes through the run storage with the template's run events (start, success or
    failure), which set its status, start and end exactly as a real run's events do.
    """
    storage = instance.event_log_storage
    templates = {}
    for run_id in template_ids:
        if isinstance(storage, SqliteEventLogStorage):
            with closing(sqlite3.connect(storage.path_for_shard(run_id))) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the .db file alone then holds every event
        events = list(instance.all_logs(run_id))
        job_events = [e.dagster_event for e in events if e.is_dagster_event and e.dagster_event.is_job_event]
        templates[run_id] = (instance.get_run_by_id(run_id), events, job_events)
    created = []
    for index in range(count):
        template_id = template_ids[1] if index % FAILED_EVERY == FAILED_EVERY - 1 else template_ids[0]
        run, events, job_events = templates[template_id]
        run_id = str(uuid.uuid4())
        copy_event_log(instance, template_id, run_id, events)
        instance.add_run(
            dg.DagsterRun(job_name=run.job_name, run_id=run_id, tags={**run.tags, "strata/trigger": "bench"})
        )
        for event in job_events:
            instance.run_storage.handle_run_event(run_id, event, datetime.now(UTC))
        created.append(run_id)
    return created


def floor_read(instance: dg.DagsterInstance) -> int:
    """What any audit needs at least: the finished runs' records and their audit events."""
    from audit.record import AUDIT_EVENT_TYPES, TERMINAL_STATUSES

    records = instance.get_run_records(
        dg.RunsFilter(statuses=list(TERMINAL_STATUSES)), limit=RUNS + 10, order_by="update_timestamp", ascending=True
    )
    events = 0
    for record in records:
        events += len(instance.all_logs(record.dagster_run.run_id, of_type=set(AUDIT_EVENT_TYPES)))
    return events


STORAGES = {
    "run-sharded SQLite (local default)": None,
    "single-database event log (prod shape)": "consolidated",
}


def storage_overrides(root: Path, kind: str | None) -> dict | None:
    if kind != "consolidated":
        return None
    return {
        "event_log_storage": {
            "module": "dagster._core.storage.event_log",
            "class": "ConsolidatedSqliteEventLogStorage",
            "config": {"base_dir": str(root / "event_log")},
        }
    }


def bench_storage(label: str, kind: str | None) -> list[str]:
    from audit.run_log import RUN_LOG_TABLE
    from resources.iceberg import IcebergCatalog
    from sensors.audit_sensor import build_audit_sensor

    lines = []
    with tempfile.TemporaryDirectory(prefix="bench_audit_") as tmp:
        root = Path(tmp)
        overrides = storage_overrides(root, kind)
        began = time.perf_counter()
        with dg.instance_for_test(temp_dir=tmp, overrides=overrides) as instance:
            ok = dg.materialize(template_assets(fail=False), instance=instance)
            bad = dg.materialize(template_assets(fail=True)[:1], instance=instance, raise_on_error=False)
            clone_runs(instance, [ok.run_id, bad.run_id], RUNS)
            # The templates stay out of the count: the tick must find exactly RUNS runs.
            instance.delete_run(ok.run_id)
            instance.delete_run(bad.run_id)
        setup_s = time.perf_counter() - began

        # One untimed read first warms the OS file cache for both sides.
        with dg.DagsterInstance.local_temp(tmp, overrides=overrides) as warm:
            floor_read(warm)
        floor: Measurement
        with dg.DagsterInstance.local_temp(tmp, overrides=overrides) as instance, measured() as floor:
            events = floor_read(instance)

        catalog = IcebergCatalog(uri=f"sqlite:///{root / 'catalog.db'}", warehouse=f"file://{root / 'warehouse'}")
        catalog.load()  # the catalog database exists in a deployment; creating it is not the tick's work
        sensor = build_audit_sensor()
        platform: Measurement
        with dg.DagsterInstance.local_temp(tmp, overrides=overrides) as instance:
            context = dg.build_sensor_context(instance=instance, resources={"iceberg": catalog})
            with measured() as platform:
                result = sensor(context)
        written = catalog.load().load_table(RUN_LOG_TABLE).scan().to_arrow().num_rows
        if written != RUNS:
            raise AssertionError(f"one tick wrote {written} records, expected {RUNS}: {result.skip_reason}")

        lines.append(
            report(
                f"audit sensor, one tick over {RUNS} finished runs, {label}",
                platform,
                floor,
                f"run records + {events} audit events read, no records, no Iceberg",
            )
        )
        verdict = "PASS" if platform.seconds < TICK_TARGET_S else "FAIL"
        lines.append(
            f"  {written} records in one commit; target < {TICK_TARGET_S:.0f} s: {verdict} "
            f"(set-up of {RUNS} runs: {setup_s:.1f} s)"
        )
    return lines


def main() -> list[str]:
    lines = []
    for label, kind in STORAGES.items():
        lines += bench_storage(label, kind)
    return lines


if __name__ == "__main__":
    for line in main():
        print(line, flush=True)
    sys.exit(0)
