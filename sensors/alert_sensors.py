"""Alerts for failed runs and failed blocking asset checks, through `AlertingResource`.

A failed run alerts with its id, job, the failing step and the first line of its error. A run whose
ingestion guard kept its assets from running (source unreachable, too little disk: tagged
`strata/not_run`) ends as a success, since no data was wrong, but it is an outage: it alerts once, with
the reasons and the assets that did not run (drops that are merely late are left to the freshness alert). A failed
blocking check (severity ERROR) alerts on its own, because it is the reason downstream tables were
not published even when the run that carried it is still going; both may fire for one run, with
different subjects. Error text goes through `resources.redaction.scrub` (in `AlertingResource.send`)
since exceptions from database drivers quote connection URLs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from assets.bronze.guard import OUTAGE_KEY
from audit.errors import WRAPPER_ERRORS, error_chain
from audit.metadata import NOT_RUN_TAG
from resources.alerting import Alert, AlertingResource

RUN_FAILURE_SENSOR = "run_failure_alert_sensor"
NOT_RUN_SENSOR = "not_run_alert_sensor"
MAX_NOT_RUN_ASSETS = 10  # asset keys named in one not-run alert; the rest are counted
CHECK_FAILURE_SENSOR = "blocking_check_alert_sensor"
CHECK_HISTORY_PER_TICK = 20  # completed executions read per check with news; ticks are 30 s apart
CHECK_PAGE = 3  # records per history query: most ticks find one new record per check
MAX_METADATA_FACTS = 4
# What Dagster records as a step's error when its retries ran out ("Exceeded max_retries of 3").
RETRY_ERRORS = frozenset({"RetryRequested", "RetryRequestedFromPolicy"})


def first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def underlying_error(error: Any) -> str:
    """`Class: first line` of the user's exception in a SerializableErrorInfo chain, past Dagster's
    wrappers and its retry error, whose own message ("Exceeded max_retries of 3") says nothing of the cause."""
    for link in error_chain(error):
        if link.cls_name not in WRAPPER_ERRORS and link.cls_name not in RETRY_ERRORS:
            return first_line(link.message)  # Dagster's message already starts with the class name
    return first_line(error.message)


def step_error(event: dg.DagsterEvent) -> str:
    """What made a step fail: the description of a `Failure`, else the first line of the user's exception
    (on the last attempt, when retries ran out, with the number of retries)."""
    data = event.step_failure_data
    error = (
        data.user_failure_data.description if data.user_failure_data and data.user_failure_data.description else None
    )
    if error is None and data.error is not None:
        error = underlying_error(data.error)
    text = first_line(error or event.message)
    if data.error is not None and data.error.cls_name in RETRY_ERRORS and data.error.message.startswith("Exceeded"):
        text += f" ({first_line(data.error.message).lower()})"
    return text


def run_failure_alert(
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent,
    step_failures: Sequence[dg.DagsterEvent],
    url: str | None = None,
) -> Alert:
    """What a person needs from a failed run: which job, which step, what error, where to look."""
    steps = [event.step_key for event in step_failures if event.step_key]
    error = step_error(step_failures[0]) if step_failures else first_line(failure_event.message)
    facts = {"Failed steps": ", ".join(steps)} if len(steps) > 1 else {}
    partition = run.tags.get("dagster/partition")
    if not partition and run.tags.get("dagster/asset_partition_range_start"):
        partition = (
            f"{run.tags['dagster/asset_partition_range_start']}..{run.tags['dagster/asset_partition_range_end']}"
        )
    return Alert(
        kind="run_failure",
        title=f"{run.job_name} run {run.run_id[:8]} failed" + (f" at step {steps[0]}" if steps else ""),
        details=error,
        run_id=run.run_id,
        job=run.job_name,
        partition=partition,
        url=url,
        facts=facts,
    )


def build_run_failure_alert_sensor(*, minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        minimum_interval_seconds=minimum_interval_seconds,
        # every code location's runs: one location runs this sensor for the whole instance
        monitor_all_code_locations=True,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends an alert for every failed run: job, failing step and the first line of the error.",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alerting: AlertingResource) -> None:
        run = context.dagster_run
        alert = run_failure_alert(
            run, context.failure_event, context.get_step_failure_events(), alerting.link(f"/runs/{run.run_id}")
        )
        delivered = alerting.send(alert)
        context.log.info(f"run {run.run_id} ({run.job_name}) failed; alert delivered: {delivered}")

    return run_failure_alert_sensor


def not_run_alert(run: dg.DagsterRun, not_run: dict[str, str], url: str | None = None) -> Alert:
    """What a person needs from a run whose guard said no: why, which assets, and what happens next.

    `not_run` maps each asset that did not run to its guard's reason (from the run's observations).
    """
    reasons = list(dict.fromkeys(not_run.values()))
    assets = sorted(not_run)
    shown = ", ".join(assets[:MAX_NOT_RUN_ASSETS]) + (
        f" and {len(assets) - MAX_NOT_RUN_ASSETS} more" if len(assets) > MAX_NOT_RUN_ASSETS else ""
    )
    facts = {"Not run": shown}
    # Nothing was extracted, so no watermark moved: the next run reads everything since the last load.
    facts["Next try"] = "the next schedule tick or sensor request (a new run); nothing was loaded, nothing is lost"
    return Alert(
        kind="not_run",
        title=f"{run.job_name} run {run.run_id[:8]}: {len(assets)} asset(s) not run, a precondition failed",
        details="; ".join(reasons),
        run_id=run.run_id,
        job=run.job_name,
        partition=run.tags.get("dagster/partition"),
        url=url,
        facts=facts,
    )


def not_run_outages(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Asset key -> guard reason of the assets a guard kept from running because of an outage (not
    because drops were late), from the `strata/not_run` observations it logged in the run."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION).records
    found = {}
    for record in records:
        observation = record.event_log_entry.asset_observation
        metadata = observation.metadata if observation is not None else {}
        outage = metadata.get(OUTAGE_KEY)
        if NOT_RUN_TAG in metadata and (outage is None or outage.value):
            found[observation.asset_key.to_user_string()] = str(metadata[NOT_RUN_TAG].value)
    return found


def build_not_run_alert_sensor(*, minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """Alerts once for every successful run tagged `strata/not_run` (the run-status cursor sees each run once).

    The outage is not retried inside the run: retrying a down source for minutes would hold the
    `source_db` pool slot. The next schedule tick is a new run (run key = the scheduled hour) that
    checks again and, since no watermark moved, extracts everything changed since the last load.
    """

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name=NOT_RUN_SENSOR,
        minimum_interval_seconds=minimum_interval_seconds,
        # every code location's runs: one location runs this sensor for the whole instance
        monitor_all_code_locations=True,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends an alert for every run whose ingestion guard kept its assets from running (an outage).",
    )
    def not_run_alert_sensor(context: dg.RunStatusSensorContext, alerting: AlertingResource) -> None:
        run = context.dagster_run
        if NOT_RUN_TAG not in run.tags:
            return
        not_run = not_run_outages(context.instance, run.run_id)
        if not not_run:
            return  # only drops not ready yet: the freshness alert covers lateness
        delivered = alerting.send(not_run_alert(run, not_run, alerting.link(f"/runs/{run.run_id}")))
        context.log.info(f"run {run.run_id} ({run.job_name}) did not run {sorted(not_run)}; delivered: {delivered}")

    return not_run_alert_sensor


def is_failed_blocking(evaluation: dg.AssetCheckEvaluation) -> bool:
    return not evaluation.passed and bool(evaluation.blocking) and evaluation.severity == dg.AssetCheckSeverity.ERROR


def check_failure_alert(
    evaluation: dg.AssetCheckEvaluation, run_id: str, job: str | None, url: str | None = None
) -> Alert:
    asset = evaluation.asset_key.to_user_string()
    facts = {}
    for name, value in list(evaluation.metadata.items())[:MAX_METADATA_FACTS]:
        text = str(getattr(value, "value", value))
        facts[name] = text if len(text) <= 200 else text[:197] + "..."
    return Alert(
        kind="check_failure",
        title=f"{asset}: blocking check {evaluation.check_name} failed",
        details=evaluation.description or "Downstream assets of this table were not materialized.",
        asset=asset,
        check=evaluation.check_name,
        run_id=run_id,
        job=job,
        partition=evaluation.partition,
        url=url,
        facts=facts,
    )


@dataclass
class CheckCursor:
    """Per check, the newest completed execution record already handled (record ids grow per check)."""

    started: bool = False
    last_ids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> CheckCursor:
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        return cls(bool(data.get("started")), {k: int(v) for k, v in data.get("last_ids", {}).items()})

    def serialize(self) -> str:
        return json.dumps({"started": self.started, "last_ids": dict(sorted(self.last_ids.items()))})


def _completed_since(storage: object, key: dg.AssetCheckKey, seen: int | None, statuses: set) -> list:
    """The completed executions of `key` newer than record id `seen`, newest first, at most
    CHECK_HISTORY_PER_TICK. Read in small pages: a tick usually finds one or two new records per check,
    and every record read is deserialized, so reading a fixed 20 made the sensor's cost grow with the
    number of checks times 20 (1.4 s a tick after a day of hourly runs)."""
    found: list = []
    before: int | None = None
    while len(found) < CHECK_HISTORY_PER_TICK:
        page = storage.get_asset_check_execution_history(key, limit=CHECK_PAGE, cursor=before, status=statuses)
        fresh = [r for r in page if seen is None or r.id > seen]
        found.extend(fresh)
        if len(fresh) < len(page) or len(page) < CHECK_PAGE or seen is None:
            break  # reached what was seen, or the start of the history (or a first tick: the newest suffice)
        before = page[-1].id
    return found[:CHECK_HISTORY_PER_TICK]


def new_check_failures(
    storage: object, check_keys: Sequence[dg.AssetCheckKey], cursor: CheckCursor
) -> tuple[list[tuple[dg.AssetCheckEvaluation, str]], CheckCursor]:
    """Failed blocking evaluations completed since the cursor, oldest first, and the advanced cursor.

    Reads the asset check execution records (one batched query for the latest record per check, and
    the history only of checks with something new): they live in the index of every event log storage,
    including the run-sharded SQLite one used locally, where a global event-log cursor does not work.
    On the first tick the cursor is set to what exists, so turning the sensor on replays no history.
    """
    from dagster._core.storage.asset_check_execution_record import COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES

    latest = storage.get_latest_asset_check_execution_by_key(list(check_keys))
    last_ids = dict(cursor.last_ids)
    failures: list[tuple[dg.AssetCheckEvaluation, str]] = []
    for key in check_keys:
        record = latest.get(key)
        name = key.to_user_string()
        seen = last_ids.get(name)
        if record is None or (seen is not None and record.id <= seen):
            continue
        new = _completed_since(storage, key, seen, COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES)
        if not new:
            continue  # only a planned execution so far: look again next tick
        last_ids[name] = max(r.id for r in new)
        if not cursor.started:
            continue
        for execution in sorted(new, key=lambda r: r.id):
            evaluation = execution.event.dagster_event.event_specific_data if execution.event else None
            if isinstance(evaluation, dg.AssetCheckEvaluation) and is_failed_blocking(evaluation):
                failures.append((evaluation, execution.run_id))
    return failures, CheckCursor(True, last_ids)


def build_check_failure_alert_sensor(
    *, minimum_interval_seconds: int = 30, check_keys: Sequence[dg.AssetCheckKey] | None = None
) -> dg.SensorDefinition:
    """Alerts once for every failed blocking check of `check_keys` (every code location's checks, for the
    one location that runs this sensor), else of this code location's assets."""
    watched = sorted(check_keys, key=lambda k: k.to_user_string()) if check_keys is not None else None

    @dg.sensor(
        name=CHECK_FAILURE_SENSOR,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends an alert for every failed blocking asset check (severity ERROR).",
    )
    def blocking_check_alert_sensor(context: dg.SensorEvaluationContext, alerting: AlertingResource) -> dg.SensorResult:
        instance = context.instance
        check_keys = (
            watched
            if watched is not None
            else sorted(context.repository_def.asset_graph.asset_check_keys, key=lambda k: k.to_user_string())
        )
        cursor = CheckCursor.parse(context.cursor)
        failures, new_cursor = new_check_failures(instance.event_log_storage, check_keys, cursor)
        jobs: dict[str, str | None] = {}
        for evaluation, run_id in failures:
            if run_id not in jobs:
                run = instance.get_run_by_id(run_id)
                jobs[run_id] = run.job_name if run else None
            alerting.send(check_failure_alert(evaluation, run_id, jobs[run_id], alerting.link(f"/runs/{run_id}")))
        summary = (
            f"{len(check_keys)} check(s) watched: {len(failures)} new failed blocking evaluation(s)"
            if cursor.started
            else f"first tick: starting after the {len(new_cursor.last_ids)} check(s) already evaluated"
        )
        context.log.info(summary)
        return dg.SensorResult(cursor=new_cursor.serialize(), skip_reason=dg.SkipReason(summary))

    return blocking_check_alert_sensor
