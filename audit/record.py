"""The audit trail: one record per finished run, built from the Dagster instance alone.

The event log is the source of truth. `build_audit_record` reads a run's record and the few event types
the audit needs (materializations with their `strata/` metadata, asset check evaluations, step and run
failures) and folds them into an `AuditRecord`. The Iceberg table `audit.run_log` written by the audit
sensor is only a projection of these records: `rebuild_run_log` (audit/run_log.py) can recreate it from
the instance at any time, and the `audit` CLI can read either. Error summaries come from audit/errors.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import dagster as dg

from audit.errors import error_summary, truncate
from audit.metadata import NOT_RUN_TAG, code_identity
from resources.redaction import scrub

TERMINAL_STATUSES = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)

# Only these event types are read: the rest of a run's log (engine events, log lines) is the bulk of it.
AUDIT_EVENT_TYPES = frozenset(
    {
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_OBSERVATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.RUN_CANCELED,
    }
)

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"
CODE_VERSION_TAG = "dagster/code_version"
TRIGGER_TAG = "strata/trigger"
ROW_COUNTS = ("strata/rows_in", "strata/rows_out", "strata/rows_quarantined")


@dataclass
class AuditRecord:
    """What an auditor asks about one run. Lists and maps are sorted so equal runs give equal records."""

    run_id: str
    job_name: str
    status: str  # SUCCESS / FAILURE / CANCELED
    trigger: str  # schedule / sensor / automation / backfill / manual
    trigger_detail: str  # schedule or sensor name, backfill id, or the strata/trigger tag
    asset_keys: list[str] = field(default_factory=list)  # "layer/table"
    partitions: list[str] = field(default_factory=list)  # keys, or "start..end" for a range run
    code_version: str = ""
    git_sha: str = ""
    image: str = ""
    data_windows: dict[str, str] = field(default_factory=dict)  # asset key -> "[start, end)"
    input_partitions: list[str] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0
    rows_quarantined: int = 0
    checksums: dict[str, str] = field(default_factory=dict)  # asset key -> content checksum
    snapshot_ids: dict[str, str] = field(default_factory=dict)  # asset key -> Iceberg snapshot written
    checks_passed: list[str] = field(default_factory=list)  # "asset/key:check_name"
    checks_failed: list[str] = field(default_factory=list)
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_s: float | None = None
    error_summary: str | None = None
    not_run_reason: str | None = None  # a guard kept the asset from running (the run still succeeds)
    # Rows the run wrote per partition, "layer/table[partition]" -> rows: one number per partition the
    # run materialized, so "how many rows did run X write to gold/kpi_daily for day D" has an answer.
    partition_rows: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, sort_keys=True)


# --- building a record -------------------------------------------------------------------------------


def _user_key(key: dg.AssetKey) -> str:
    return key.to_user_string()


def _utc(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


def _meta(metadata: Mapping[str, dg.MetadataValue], key: str) -> Any:
    value = metadata.get(key)
    return None if value is None else value.value


def classify_trigger(tags: Mapping[str, str]) -> tuple[str, str]:
    """(trigger, detail) from the tags Dagster and Strata put on a run.

    A backfill outranks the sensor/schedule that may have submitted it; Strata's own backfill CLI runs
    in-process without a Dagster backfill, so it marks its runs with `strata/trigger` instead.
    """
    if "dagster/backfill" in tags:
        return "backfill", tags["dagster/backfill"]
    strata_trigger = tags.get(TRIGGER_TAG, "")
    if strata_trigger.startswith("backfill"):
        return "backfill", strata_trigger
    if "dagster/schedule_name" in tags:
        return "schedule", tags["dagster/schedule_name"]
    # Automation runs are launched by an automation-condition sensor: the condition decided, not a sensor.
    if "dagster/auto_materialize" in tags or "dagster/asset_evaluation_id" in tags:
        return "automation", tags.get("dagster/sensor_name", "automation")
    if "dagster/sensor_name" in tags:
        return "sensor", tags["dagster/sensor_name"]
    if strata_trigger in ("schedule", "sensor"):
        return strata_trigger, strata_trigger
    if "dagster/parent_run_id" in tags:
        return "manual", f"re-execution of {tags['dagster/parent_run_id']}"
    return "manual", strata_trigger


@dataclass
class _AssetValues:
    """Per-asset values that may legitimately differ between the partitions of one run."""

    values: dict[str, dict[str | None, str]] = field(default_factory=dict)

    def add(self, asset: str, partition: str | None, value: Any) -> None:
        if value is None or value == "" or value == "none":
            return
        self.values.setdefault(asset, {})[partition] = str(value)

    def flatten(self) -> dict[str, str]:
        """One entry per asset, or one per partition where the partitions' values differ."""
        out: dict[str, str] = {}
        for asset, by_partition in self.values.items():
            if len(set(by_partition.values())) == 1:
                out[asset] = next(iter(by_partition.values()))
            else:
                out.update({f"{asset}[{p}]": v for p, v in by_partition.items()})
        return dict(sorted(out.items()))

    def flatten_windows(self) -> dict[str, str]:
        """Like `flatten`, but the contiguous windows of an asset's partitions (`[a, b)`, `[b, c)`) become
        one (`[a, c)`): a range run's windows stay one entry per asset however many partitions it has."""
        merged: dict[str, str] = {}
        for asset, by_partition in self.values.items():
            window = _merged_window(by_partition.values())
            if window is not None:
                merged[asset] = window
        rest = _AssetValues({a: v for a, v in self.values.items() if a not in merged})
        return dict(sorted({**rest.flatten(), **merged}.items()))


def _merged_window(windows: Iterable[str]) -> str | None:
    """`[first start, last end)` when the windows are `[start, end)` texts that follow each other."""
    bounds = []
    for window in set(windows):
        if not (window.startswith("[") and window.endswith(")")) or ", " not in window:
            return None
        bounds.append(tuple(window[1:-1].split(", ", 1)))
    bounds.sort()
    if any(end != next_start for (_, end), (next_start, _) in pairwise(bounds)):
        return None
    return f"[{bounds[0][0]}, {bounds[-1][1]})"


def _rows_written(metadata: Mapping[str, dg.MetadataValue]) -> int | None:
    """Rows a materialization wrote to its partition: `strata/rows_out` where the asset reports it, else
    the partition's row count (a daily dbt model replaces its day, so the day's rows are what it wrote)."""
    for key in ("strata/rows_out", "dagster/partition_row_count"):
        value = _meta(metadata, key)
        if value is not None:
            return int(value)
    return None


def record_from_events(
    run_record: dg.RunRecord,
    events: Iterable[dg.EventLogEntry],
    *,
    secrets: Iterable[str] = (),
    identity: tuple[str, str] | None = None,
) -> AuditRecord:
    """Fold one run's record and audit events into an AuditRecord (pure: no instance access).

    `identity` is the (git sha, image) fallback for runs that materialized nothing; by default the
    running code's identity, which the audit sensor shares with the runs of its code location.
    """
    run = run_record.dagster_run
    tags = run.tags
    status = run.status.value
    trigger, trigger_detail = classify_trigger(tags)

    asset_keys: set[str] = set()
    planned_partitions: set[str] = set()
    materialized_partitions: set[str] = set()
    code_versions: set[str] = set()
    git_shas: set[str] = set()
    images: set[str] = set()
    inputs: set[str] = set()
    windows, checksums, snapshots = _AssetValues(), _AssetValues(), _AssetValues()
    # Each partition (or unpartitioned asset) counts once, with its latest event in the run: every
    # partition of a range run has its own event and values, and a retried step must not count twice.
    rows_by_event: dict[tuple[str, str | None], dict[str, int]] = {}
    partition_rows: dict[str, int] = {}
    passed: set[str] = set()
    failed: set[str] = set()
    step_failures: list[tuple[str, Any]] = []
    run_failure: tuple[str, Any] | None = None
    canceled_message: str | None = None

    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        data = event.event_specific_data
        if kind == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
            asset_keys.add(_user_key(data.asset_key))
            if data.partition:
                planned_partitions.add(data.partition)
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = data.materialization
            asset = _user_key(mat.asset_key)
            asset_keys.add(asset)
            metadata = mat.metadata
            if mat.partition:
                materialized_partitions.add(mat.partition)
            code_version = (mat.tags or {}).get(CODE_VERSION_TAG)
            # Without an explicit code version Dagster uses the run id, which says nothing about the code.
            if code_version and code_version != run.run_id:
                code_versions.add(code_version)
            for key, target in (("strata/git_sha", git_shas), ("strata/image", images)):
                if value := _meta(metadata, key):
                    target.add(str(value))
            rows_by_event[(asset, mat.partition)] = {key: int(_meta(metadata, key) or 0) for key in ROW_COUNTS}
            if mat.partition and (written := _rows_written(metadata)) is not None:
                partition_rows[f"{asset}[{mat.partition}]"] = written
            windows.add(asset, mat.partition, _meta(metadata, "strata/data_window"))
            checksums.add(asset, mat.partition, _meta(metadata, "strata/checksum"))
            snapshots.add(asset, mat.partition, _meta(metadata, "strata/snapshot_id"))
            inputs.update(str(p) for p in _meta(metadata, "strata/input_partitions") or [])
            inputs.update(str(p) for p in _meta(metadata, "strata/drops") or [])
            pinned = _meta(metadata, "strata/input_snapshots") or {}
            inputs.update(f"bronze.{name}@{snapshot}" for name, snapshot in pinned.items())
        elif kind == dg.DagsterEventType.ASSET_OBSERVATION:
            # A quarantined drop is reported as an observation: it was this run's input even though
            # nothing was materialized from it.
            if drop := _meta(data.asset_observation.metadata, "strata/drop"):
                inputs.add(str(drop))
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            name = f"{_user_key(data.asset_key)}:{data.check_name}"
            (passed if data.passed else failed).add(name)
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            step_failures.append((entry.step_key or "?", data.error if data is not None else None))
        elif kind == dg.DagsterEventType.RUN_FAILURE:
            run_failure = (event.message or "", getattr(data, "error", None) if data is not None else None)
        elif kind == dg.DagsterEventType.RUN_CANCELED:
            canceled_message = event.message

    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        partitions = [f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}"]
    elif PARTITION_TAG in tags:
        partitions = [tags[PARTITION_TAG]]
    else:
        partitions = sorted(materialized_partitions or planned_partitions)

    fallback_sha, fallback_image = identity or code_identity()
    git_sha = ",".join(sorted(git_shas)) or tags.get("strata/git_sha") or fallback_sha
    image = ",".join(sorted(images)) or tags.get("strata/image") or fallback_image
    start, end = _utc(run_record.start_time), _utc(run_record.end_time)
    return AuditRecord(
        run_id=run.run_id,
        job_name=run.job_name,
        status=status,
        trigger=trigger,
        trigger_detail=trigger_detail,
        asset_keys=sorted(asset_keys),
        partitions=partitions,
        code_version=",".join(sorted(code_versions)) or git_sha,
        git_sha=git_sha,
        image=image,
        data_windows=windows.flatten_windows(),
        input_partitions=sorted(inputs),
        rows_in=sum(r["strata/rows_in"] for r in rows_by_event.values()),
        rows_out=sum(r["strata/rows_out"] for r in rows_by_event.values()),
        rows_quarantined=sum(r["strata/rows_quarantined"] for r in rows_by_event.values()),
        checksums=checksums.flatten(),
        snapshot_ids=snapshots.flatten(),
        checks_passed=sorted(passed),
        checks_failed=sorted(failed),
        start_time=start,
        end_time=end,
        duration_s=round(end.timestamp() - start.timestamp(), 6) if start and end else None,
        error_summary=error_summary(
            status, step_failures, run_failure, canceled_message, tags.get("dagster/failure_reason"), secrets
        ),
        not_run_reason=truncate(scrub(tags[NOT_RUN_TAG], secrets)) if tags.get(NOT_RUN_TAG) else None,
        partition_rows=dict(sorted(partition_rows.items())),
    )


def audit_events(instance: dg.DagsterInstance, run_id: str) -> Sequence[dg.EventLogEntry]:
    return instance.all_logs(run_id, of_type=set(AUDIT_EVENT_TYPES))


def build_audit_record(
    instance: dg.DagsterInstance, run_id: str, *, secrets: Iterable[str] | None = None
) -> AuditRecord:
    """The audit record of one finished run, from the instance's run record and event log only."""
    run_record = instance.get_run_record_by_id(run_id)
    if run_record is None:
        raise ValueError(f"run {run_id} is not in the Dagster instance")
    if run_record.dagster_run.status not in TERMINAL_STATUSES:
        raise ValueError(f"run {run_id} has not finished (status {run_record.dagster_run.status.value})")
    return record_from_events(
        run_record,
        audit_events(instance, run_id),
        secrets=() if secrets is None else secrets,
    )


def finished_run_records(
    instance: dg.DagsterInstance,
    *,
    updated_after: datetime | None = None,
    run_ids: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    page_size: int = 1000,
) -> Iterable[dg.RunRecord]:
    """Every finished run (optionally narrowed), oldest first, read page by page.

    Pages follow the storage id: Dagster's run cursor is an id, so it cannot page an update-time order.
    """
    wanted = [s for s in TERMINAL_STATUSES if statuses is None or s.value in statuses]
    if not wanted:
        return
    cursor = None
    while True:
        page = instance.get_run_records(
            dg.RunsFilter(statuses=wanted, updated_after=updated_after, run_ids=list(run_ids) if run_ids else None),
            limit=page_size,
            cursor=cursor,
            ascending=True,
        )
        yield from page
        if len(page) < page_size:
            return
        cursor = page[-1].dagster_run.run_id


def iter_audit_records(
    instance: dg.DagsterInstance, run_records: Iterable[dg.RunRecord], *, secrets: Iterable[str] | None = None
) -> Iterator[tuple[dg.RunRecord, AuditRecord]]:
    """(run record, audit record) per run, lazily, so a caller can stop when its time is up."""
    secrets = frozenset(secrets or ())
    identity = code_identity()
    for r in run_records:
        yield r, record_from_events(r, audit_events(instance, r.dagster_run.run_id), secrets=secrets, identity=identity)


def build_audit_records(
    instance: dg.DagsterInstance, run_records: Iterable[dg.RunRecord], *, secrets: Iterable[str] | None = None
) -> list[AuditRecord]:
    return [record for _, record in iter_audit_records(instance, run_records, secrets=secrets)]
