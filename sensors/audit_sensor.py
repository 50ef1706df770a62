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

The table is a projection of the event log: `rebuild_run_log` (audit/run_log.py) overwrites it from the
instance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from audit.record import TERMINAL_STATUSES, AuditRecord, iter_audit_records
from audit.run_log import RUN_LOG_TABLE, append_new_records
from resources.iceberg import IcebergCatalog

if TYPE_CHECKING:
    pass

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
    fresh = finished_runs_since(instance, cursor, limit)
    deadline = time.monotonic() + budget_s
    done: list[dg.RunRecord] = []
    records: list[AuditRecord] = []
    for run_record, record in iter_audit_records(instance, fresh, secrets=secrets):
        done.append(run_record)
        records.append(record)
        if time.monotonic() > deadline:
            break  # the rest (in update order, so the cursor stays exact) waits for the next tick
    written, already = append_new_records(catalog, records, writer=SENSOR_NAME)
    return TickOutcome(advance_cursor(cursor, done), written, already, len(done))


def finished_runs_since(instance: dg.DagsterInstance, cursor: AuditCursor, limit: int) -> list[dg.RunRecord]:
    """Up to `limit` runs finished since the cursor and not yet processed, in update order (the lineage
    sensor follows finished runs the same way)."""
    updated_after = datetime.fromtimestamp(cursor.after - OVERLAP_SECONDS, UTC) if cursor.after else None
    fetched = instance.get_run_records(
        dg.RunsFilter(statuses=list(TERMINAL_STATUSES), updated_after=updated_after),
        # The overlap re-reads up to len(seen) runs; asking for that many more keeps `limit` new ones.
        limit=limit + len(cursor.seen),
        order_by="update_timestamp",
        ascending=True,
    )
    return [r for r in fetched if r.dagster_run.run_id not in cursor.seen][:limit]


def advance_cursor(cursor: AuditCursor, done: list[dg.RunRecord]) -> AuditCursor:
    """The cursor after `done` (processed in update order): their newest time and the runs near it."""
    stamps = {r.dagster_run.run_id: r.update_timestamp.timestamp() for r in done}
    after = max([cursor.after, *stamps.values()])
    seen = {run_id: ts for run_id, ts in {**cursor.seen, **stamps}.items() if ts >= after - OVERLAP_SECONDS}
    return AuditCursor(after, seen)


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
