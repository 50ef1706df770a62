"""The audit sensor: every finished run (success, failure, canceled) gets exactly one row in `audit.run_log`.

A plain sensor rather than a `run_status_sensor`: a run-status sensor handles one run per evaluation,
while a backfill can finish hundreds of runs between two ticks; here one tick reads up to
`MAX_RUNS_PER_TICK` finished runs (or as many as `TICK_BUDGET_SECONDS` allows), builds their records and
appends them in ONE Iceberg commit.

Exactly once, in two layers:
- the cursor holds the newest run update time processed and the ids of the runs processed within
  `OVERLAP_SECONDS` of it. The next query starts `OVERLAP_SECONDS` earlier, because run storage stamps
  `update_timestamp` before its transaction commits, so a concurrent writer can make an older stamp
  visible after a newer one; the ids say which of the overlapping runs are already done;
- the append itself skips run ids already in the table (the cursor may be lost, a run's update time
  moves when tags are added to it later, the table may have been rebuilt). The check runs inside
  `commit_with_retry`, so a concurrent writer's rows are seen on a retry.

The table is a projection of the event log: `rebuild_run_log` overwrites it from the instance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from jobs.audit_trail import (
    RUN_LOG_SCHEMA,
    RUN_LOG_TABLE,
    TERMINAL_STATUSES,
    AuditRecord,
    build_audit_records,
    finished_run_records,
    iter_audit_records,
    records_to_arrow,
)
from resources.iceberg import IcebergCatalog, commit_with_retry

if TYPE_CHECKING:
    from pyiceberg.table import Table

SENSOR_NAME = "audit_run_log_sensor"
MAX_RUNS_PER_TICK = 1000
# Reading a run's event log costs ~1-3 ms on a single-database event log (Postgres) but ~30-50 ms on the
# local run-sharded SQLite storage (Dagster checks each run file's schema on first open), so the tick
# also stops building records after this long, well inside the 60 s sensor timeout, and commits those.
TICK_BUDGET_SECONDS = 40.0
OVERLAP_SECONDS = 2.0


@dataclass(frozen=True)
class AuditCursor:
    """Newest run update time processed (epoch seconds) and the runs processed near it."""

    after: float = 0.0
    seen: dict[str, float] = field(default_factory=dict)  # run id -> update timestamp

    @classmethod
    def parse(cls, raw: str | None) -> AuditCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(float(data.get("after", 0.0)), {k: float(v) for k, v in data.get("seen", {}).items()})

    def serialize(self) -> str:
        return json.dumps({"after": self.after, "seen": self.seen}, sort_keys=True)


@dataclass
class TickOutcome:
    cursor: AuditCursor
    written: list[str]  # run ids appended to the table
    already_recorded: list[str]  # run ids found in the table already (not written again)
    runs_read: int

    @property
    def summary(self) -> str:
        return (
            f"{self.runs_read} finished run(s) read -> {len(self.written)} audit record(s) written to "
            f"{RUN_LOG_TABLE}, {len(self.already_recorded)} already recorded"
        )


def run_log_table(catalog: IcebergCatalog) -> Table:
    return catalog.load_or_create_table(RUN_LOG_TABLE, RUN_LOG_SCHEMA)


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


def append_new_records(catalog: IcebergCatalog, records: Sequence[AuditRecord]) -> tuple[list[str], list[str]]:
    """Append the records whose run is not in the table yet, in one commit; (written, skipped) run ids."""
    if not records:
        return [], []
    unique = list({r.run_id: r for r in records}.values())

    def write(table: Table) -> tuple[list[str], list[str]]:
        present = recorded_run_ids(table, unique)
        new = [r for r in unique if r.run_id not in present]
        if new:
            table.append(records_to_arrow(new), snapshot_properties={"strata.writer": SENSOR_NAME})
        return [r.run_id for r in new], sorted(present)

    return commit_with_retry(run_log_table(catalog), write)


def process_finished_runs(
    instance: dg.DagsterInstance,
    catalog: IcebergCatalog,
    cursor: AuditCursor,
    *,
    limit: int = MAX_RUNS_PER_TICK,
    budget_s: float = TICK_BUDGET_SECONDS,
    secrets: Iterable[str] | None = None,
) -> TickOutcome:
    """One tick's work: read the runs finished since the cursor, record them, return the next cursor."""
    updated_after = datetime.fromtimestamp(cursor.after - OVERLAP_SECONDS, UTC) if cursor.after else None
    fetched = instance.get_run_records(
        dg.RunsFilter(statuses=list(TERMINAL_STATUSES), updated_after=updated_after),
        # The overlap re-reads up to len(seen) runs; asking for that many more keeps `limit` new ones.
        limit=limit + len(cursor.seen),
        order_by="update_timestamp",
        ascending=True,
    )
    fresh = [r for r in fetched if r.dagster_run.run_id not in cursor.seen][:limit]
    deadline = time.monotonic() + budget_s
    done: list[dg.RunRecord] = []
    records: list[AuditRecord] = []
    for run_record, record in iter_audit_records(instance, fresh, secrets=secrets):
        done.append(run_record)
        records.append(record)
        if time.monotonic() > deadline:
            break  # the rest (in update order, so the cursor stays exact) waits for the next tick
    written, already = append_new_records(catalog, records)

    stamps = {r.dagster_run.run_id: r.update_timestamp.timestamp() for r in done}
    after = max([cursor.after, *stamps.values()])
    seen = {run_id: ts for run_id, ts in {**cursor.seen, **stamps}.items() if ts >= after - OVERLAP_SECONDS}
    return TickOutcome(AuditCursor(after, seen), written, already, len(done))


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


def build_audit_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Writes one audit record per finished run (success, failure, canceled) to Iceberg {RUN_LOG_TABLE}, "
            "built from the run's event log. Launches no runs."
        ),
    )
    def audit_run_log_sensor(context: dg.SensorEvaluationContext, iceberg: IcebergCatalog) -> dg.SensorResult:
        outcome = process_finished_runs(context.instance, iceberg, AuditCursor.parse(context.cursor))
        context.log.info(outcome.summary)
        return dg.SensorResult(cursor=outcome.cursor.serialize(), skip_reason=dg.SkipReason(outcome.summary))

    return audit_run_log_sensor
