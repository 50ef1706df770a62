"""Schedules as policy: what runs on a clock, in one table, running by default.

Strata replaces cron: on a normal day nothing needs a person. Three things start runs:
- the clock, for work that has no event to follow: the table below;
- the READY-marker sensor, for each hourly telemetry drop (sensors/drop_sensor.py);
- automation conditions (jobs/policies.py), for everything downstream. The daily build of Silver
  and Gold is one of them, not a schedule: a day is built once it is complete (all 24 hourly Bronze
  partitions loaded), which a clock cannot know.

Each request names what it covers and uses it as its run key (`<schedule>:<scheduled time>`, or the
partition), so a tick evaluated twice requests once, and it carries its job's priority tag.

A policy may name an input whose daily partitions must exist before its tick requests anything
(`requires_previous_day_of`, over the last `requires_days` days up to the previous day): the 02:00
retraining waits until Gold holds the previous day's features and enough history for a holdout and a
minimal training set, and skips the tick with that reason until then (a fresh install does not fail
every night for its first week).

A slot (`builds_nothing_yet`) is visible in the UI and skips every tick with the reason, until the
issue that fills it gives it something to build. A slot with no job is only listed here: there is
nothing for it to target yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg

from assets.ml.training import TrainingWindowConfig
from jobs.policies import priority_tags

SCHEDULE_TAG = "strata/scheduled_for"


@dataclass(frozen=True)
class SchedulePolicy:
    name: str
    cron: str  # UTC
    job: str | None  # the job whose runs it starts (and whose priority they carry); None: a listed slot only
    purpose: str
    previous_day: bool = False  # request the daily partition of the day before the tick
    previous_week: bool = False  # request the weekly partition (Monday-based ISO week) before the tick's week
    builds_nothing_yet: bool = False  # a reserved slot: visible, skips every tick with `purpose` as the reason
    requires_previous_day_of: dg.AssetKey | None = None  # skip while this asset lacks the previous day...
    requires_days: int = 1  # ...or any of the days before it in this many days up to the previous day


SCHEDULES: list[SchedulePolicy] = [
    SchedulePolicy(
        "hourly_oltp_extraction",
        "0 * * * *",
        "extract_oltp",
        "Hourly, on the hour: incremental extraction of the OLTP tables into Bronze. Automation carries the "
        "changes on to the unpartitioned Silver/Gold models (dimensions, bookings), then the daily models.",
    ),
    SchedulePolicy(
        "ml_retraining",
        "0 2 * * *",
        "retrain_demand_model",
        "Daily 02:00 UTC: retrain the demand model on the trailing 90 days up to the previous day, gate it "
        "on the 7-day holdout and promote it; waits for the previous day's gold/demand_features_hourly. "
        "ml/demand_forecast follows its features (and a promotion) through automation.",
        previous_day=True,
        requires_previous_day_of=dg.AssetKey(["gold", "demand_features_hourly"]),
        requires_days=TrainingWindowConfig().holdout_days + TrainingWindowConfig().min_training_days,
    ),
    SchedulePolicy(
        "iceberg_table_maintenance",
        "30 3 * * *",
        "maintain_tables",
        "Daily 03:30 UTC, after the night's loads: compaction of small Iceberg data files, snapshot expiry and "
        "orphan-file removal for the Bronze and audit tables, under TABLE_RETENTION in jobs/policies.py.",
    ),
    SchedulePolicy(
        "weekly_report",
        "0 6 * * 1",
        "publish_weekly_report",
        "Monday 06:00: the executive report of the previous ISO week from Gold, published to the outputs "
        "area and sent by e-mail.",
        previous_week=True,
    ),
    SchedulePolicy(
        "slo_report",
        "30 6 * * *",
        "report_slo",
        "Daily 06:30 UTC, after the 06:00 freshness deadline: platform/slo_report of the previous day, the SLO "
        "figures per asset group from the event log, published to the outputs area.",
        previous_day=True,
    ),
    SchedulePolicy(
        "weather_forecasts",
        "*/15 * * * *",
        "fetch_weather",
        "Every 15 minutes: forecasts of every location from the weather API into Bronze; automation carries "
        "them on to silver/weather_conditions and the demand features.",
    ),
]


def previous_day(moment: datetime) -> str:
    return f"{moment - timedelta(days=1):%Y-%m-%d}"


def previous_week(moment: datetime) -> str:
    """The weekly partition key (its Monday) of the ISO week before the one `moment` falls in."""
    return f"{moment.date() - timedelta(days=moment.weekday() + 7):%Y-%m-%d}"


def run_request_for(policy: SchedulePolicy, scheduled_for: datetime) -> dg.RunRequest:
    """The one request a tick of `policy` makes: keyed by its partition, or by its scheduled time."""
    tags = {**priority_tags(policy.job or ""), SCHEDULE_TAG: f"{scheduled_for:%Y-%m-%dT%H:%MZ}"}
    if policy.previous_day:
        day = previous_day(scheduled_for)
        return dg.RunRequest(run_key=f"{policy.name}:{day}", partition_key=day, tags=tags)
    if policy.previous_week:
        week = previous_week(scheduled_for)
        return dg.RunRequest(run_key=f"{policy.name}:{week}", partition_key=week, tags=tags)
    return dg.RunRequest(run_key=f"{policy.name}:{scheduled_for:%Y-%m-%dT%H:%MZ}", tags=tags)


def build_schedule(policy: SchedulePolicy, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    def evaluate(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        if policy.builds_nothing_yet:
            return dg.SkipReason(policy.purpose)
        if policy.requires_previous_day_of is not None:
            last = context.scheduled_execution_time - timedelta(days=1)
            needed = [f"{last - timedelta(days=n):%Y-%m-%d}" for n in range(policy.requires_days)]
            present = context.instance.get_materialized_partitions(policy.requires_previous_day_of)
            if missing := [day for day in needed if day not in present]:
                return dg.SkipReason(
                    f"{policy.requires_previous_day_of.to_user_string()} has no materialization for "
                    f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} ({len(missing)} of the "
                    f"{policy.requires_days} day(s) up to {needed[0]} it needs): {policy.name} skips this tick"
                )
        request = run_request_for(policy, context.scheduled_execution_time)
        if request.partition_key is not None and (reason := _not_a_partition(context, policy, request.partition_key)):
            return dg.SkipReason(reason)
        return request

    return dg.ScheduleDefinition(
        name=policy.name,
        cron_schedule=policy.cron,
        execution_timezone="UTC",
        job=job,
        execution_fn=evaluate,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=policy.purpose,
    )


def _not_a_partition(context: dg.ScheduleEvaluationContext, policy: SchedulePolicy, key: str) -> str | None:
    """Why `key` cannot be requested, if it is not a partition of the job (the week before the first
    Monday of the data, the day before its first day): the tick skips instead of failing its run."""
    if context.repository_def is None:
        return None
    partitions = context.repository_def.get_job(policy.job).partitions_def
    if partitions is None or partitions.has_partition_key(key):
        return None
    first = partitions.get_first_partition_key()
    return f"{key} is not a partition of {policy.job} (its first is {first}): nothing to build"


def build_schedules(
    jobs: Sequence[dg.UnresolvedAssetJobDefinition], table: Sequence[SchedulePolicy] = SCHEDULES
) -> list[dg.ScheduleDefinition]:
    """A running schedule for every policy with a job; each targets that job by name."""
    by_name = {job.name: job for job in jobs}
    return [build_schedule(policy, by_name[policy.job]) for policy in table if policy.job is not None]
