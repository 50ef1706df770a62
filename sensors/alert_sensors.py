"""Alerts for failed runs and failed blocking asset checks, through `AlertingResource`.

A failed run alerts with its id, job, the failing step and the first line of its error. A failed
blocking check (severity ERROR) alerts on its own, because it is the reason downstream tables were
not published even when the run that carried it is still going; both may fire for one run, with
different subjects. Error text goes through `redact` (in `AlertingResource.send`) since exceptions
from database drivers quote connection URLs.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from resources.alerting import Alert, AlertingResource

RUN_FAILURE_SENSOR = "run_failure_alert_sensor"
CHECK_FAILURE_SENSOR = "blocking_check_alert_sensor"
CHECK_EVENTS_PER_TICK = 500
MAX_METADATA_FACTS = 4


def first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def step_error(event: dg.DagsterEvent) -> str:
    """The first line of a step failure's error (the user's exception, not Dagster's wrapper)."""
    data = event.step_failure_data
    error = data.user_failure_data.description if data.user_failure_data and data.user_failure_data.description else None
    if error is None and data.error is not None:
        cause = data.error.cause if data.error.cls_name == "DagsterExecutionStepExecutionError" else None
        error = (cause or data.error).to_string()
    return first_line(error or event.message)


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
        partition = f"{run.tags['dagster/asset_partition_range_start']}..{run.tags['dagster/asset_partition_range_end']}"
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


def is_failed_blocking(evaluation: dg.AssetCheckEvaluation) -> bool:
    return (
        not evaluation.passed and bool(evaluation.blocking) and evaluation.severity == dg.AssetCheckSeverity.ERROR
    )


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


def _check_evaluation_records(instance: dg.DagsterInstance, after: int | None, limit: int, ascending: bool = True):
    # The instance-level get_event_records is deprecated for events with a dedicated fetch method;
    # check evaluations have none, and the storage-level call is the supported one.
    return instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after),
        limit=limit,
        ascending=ascending,
    )


def build_check_failure_alert_sensor(*, minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """Alerts on failed blocking checks recorded since the cursor (the last event storage id seen).

    The first tick only records where the event log ends: turning the sensor on must not replay
    every check that ever failed.
    """

    @dg.sensor(
        name=CHECK_FAILURE_SENSOR,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends an alert for every failed blocking asset check (severity ERROR).",
    )
    def blocking_check_alert_sensor(
        context: dg.SensorEvaluationContext, alerting: AlertingResource
    ) -> dg.SensorResult:
        instance = context.instance
        if context.cursor is None:
            latest = _check_evaluation_records(instance, None, limit=1, ascending=False)
            start = latest[0].storage_id if latest else 0
            return dg.SensorResult(
                cursor=str(start), skip_reason=dg.SkipReason(f"starting after check evaluation event {start}")
            )
        records = _check_evaluation_records(instance, int(context.cursor), CHECK_EVENTS_PER_TICK)
        failed, jobs = 0, {}
        for record in records:
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            if not isinstance(evaluation, dg.AssetCheckEvaluation) or not is_failed_blocking(evaluation):
                continue
            run_id = record.run_id
            if run_id not in jobs:
                run = instance.get_run_by_id(run_id)
                jobs[run_id] = run.job_name if run else None
            failed += 1
            alerting.send(check_failure_alert(evaluation, run_id, jobs[run_id], alerting.link(f"/runs/{run_id}")))
        cursor = str(records[-1].storage_id) if records else context.cursor
        summary = f"{len(records)} check evaluation(s) since event {context.cursor}: {failed} failed blocking"
        context.log.info(summary)
        return dg.SensorResult(cursor=cursor, skip_reason=dg.SkipReason(summary))

    return blocking_check_alert_sensor
