"""A clock-driven stand-in for Dagster's daemons: the platform runs a stretch of simulated time by itself.

At each simulated hour the upstream world moves on (bookings, status changes, one telemetry drop per hour,
late drops as scripted), then every schedule tick due, every sensor and every automation condition is
evaluated at that time exactly as the daemons would, and exactly the runs they request are executed,
stamped with the tags the daemons put on them. Nothing else is launched. The simulated week test and the
week benchmark both drive the platform through this one loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from demo.simulator import DemoConfig, LateDrops, advance, generate
from demo.world import HOUR_US, to_us
from jobs.partition_freshness import resolve_rules
from jobs.policies import PARTITION_FRESHNESS
from resources.settings import StrataSettings
from sensors.automation_sensor import AUTOMATION_SENSOR_PREFIX
from sensors.freshness_sensor import SENSOR_NAME as FRESHNESS_SENSOR
from sensors.freshness_sensor import build_freshness_alert_sensor

SCHEDULE_NAME_TAG = "dagster/schedule_name"
SENSOR_NAME_TAG = "dagster/sensor_name"
AUTO_MATERIALIZE_TAG = "dagster/auto_materialize"
ASSET_EVALUATION_ID_TAG = "dagster/asset_evaluation_id"


@dataclass(frozen=True)
class LateHour:
    """A drop for `hour` that its producer delivers at `delivered_at` instead of right after the hour."""

    hour: datetime
    delivered_at: datetime


@dataclass
class Executed:
    """One run the loop executed, and at which simulated time."""

    at: datetime
    trigger: str  # schedule / sensor / automation
    run_id: str
    success: bool
    assets: tuple[str, ...]
    partition: str | None
    seconds: float = 0.0  # wall time of the run


@dataclass
class WeekLog:
    runs: list[Executed] = field(default_factory=list)
    tick_seconds: list[float] = field(default_factory=list)  # evaluation cost per simulated hour (no runs)

    def figures(self) -> dict:
        """What the week cost: runs by trigger and kind, and the daemons' evaluation time per hour."""
        ticks = sorted(self.tick_seconds)
        by_kind: dict[str, list[float]] = {}
        for run in self.runs:
            by_kind.setdefault(f"{run.trigger}:{_partition_kind(run.partition)}", []).append(run.seconds)
        return {
            "runs": len(self.runs),
            "run_seconds": round(sum(r.seconds for r in self.runs), 1),
            "by_kind": {k: {"runs": len(v), "seconds": round(sum(v), 1)} for k, v in sorted(by_kind.items())},
            "tick_seconds_median": round(ticks[len(ticks) // 2], 3) if ticks else None,
            "tick_seconds_max": round(ticks[-1], 3) if ticks else None,
            "tick_seconds_total": round(sum(ticks), 1),
        }

    def built(self, asset: str) -> list[tuple[datetime, str | None]]:
        return [(r.at, r.partition) for r in self.runs if asset in r.assets and r.success]


def _partition_kind(partition: str | None) -> str:
    if partition is None:
        return "unpartitioned"
    return "daily" if len(partition) == len("2026-10-01") else "hourly"


@dataclass(frozen=True)
class WeekScenario:
    """The simulated week of the test and the benchmark: one drop 3 hours late, one hour that never arrives
    until day 5, and a clock that runs on past the last day's 06:00 deadline so every day is judged."""

    start: datetime
    days: int = 7

    @property
    def late(self) -> LateHour:
        return LateHour(self.start + timedelta(days=1, hours=10), self.start + timedelta(days=1, hours=14))

    @property
    def missing(self) -> LateHour:
        return LateHour(self.start + timedelta(days=2, hours=14), self.start + timedelta(days=4, hours=9))

    @property
    def until(self) -> datetime:
        return self.start + timedelta(days=self.days, hours=7)

    def run(self, settings: StrataSettings, defs: dg.Definitions, instance: dg.DagsterInstance, **kwargs):
        return run_week(
            settings,
            defs,
            instance,
            start=self.start,
            days=self.days + 1,
            late=[self.late, self.missing],
            until=self.until,
            **kwargs,
        )


@contextmanager
def upstream_services() -> Iterator[None]:
    """What `make dev` runs beside Dagster for the week to use: the demo weather API (its 15-minute
    schedule ticks on the simulated hours). Settings loaded inside the block point at it."""
    from demo.weather_api import serve_weather_api

    previous = os.environ.get("STRATA_WEATHER_URL")
    with serve_weather_api(seed=7, scale=0.01) as weather:
        os.environ["STRATA_WEATHER_URL"] = weather.url
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("STRATA_WEATHER_URL", None)
            else:
                os.environ["STRATA_WEATHER_URL"] = previous


def late_drops(late: list[LateHour], now: datetime) -> LateDrops:
    hour_of = {h: to_us(h.hour.replace(tzinfo=None)) // HOUR_US for h in late}
    return LateDrops(
        withheld=frozenset(hour_of[h] for h in late if now < h.delivered_at),
        delivered=frozenset(hour_of[h] for h in late if now >= h.delivered_at),
    )


def hourly(start: datetime, end: datetime) -> Iterator[datetime]:
    moment = start
    while moment <= end:
        yield moment
        moment += timedelta(hours=1)


class SimulatedDaemons:
    """Evaluates schedules, sensors and automation at a given time, and executes what they request."""

    def __init__(
        self,
        defs: dg.Definitions,
        instance: dg.DagsterInstance,
        resources: dict,
        alerting: object | None = None,
    ):
        self.defs = defs
        self.instance = instance
        self.resources = resources
        self.graph = defs.resolve_asset_graph()
        self.repository = defs.get_repository_def()
        self.now = datetime(1970, 1, 1, tzinfo=UTC)
        # The freshness sensor of definitions.py reads the wall clock; this one reads the simulated clock.
        assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
        self.freshness = build_freshness_alert_sensor(
            clock=lambda: self.now, partition_rules=resolve_rules(PARTITION_FRESHNESS, assets)
        )
        self.alerting = alerting
        self.cursors: dict[str, str | None] = {}
        self.automation_cursors: dict[str, object] = {}  # per automation sensor, as the daemon keeps them
        self.evaluations = 0
        self.run_keys: set[tuple[str, str]] = set()
        self.log = WeekLog()

    # --- the daemons -------------------------------------------------------------------------------------

    def tick(self, now: datetime) -> None:
        self.now = now
        began = time.perf_counter()
        requests = self.schedule_requests(now) + self.sensor_requests()
        self.log.tick_seconds.append(time.perf_counter() - began)
        self.execute(requests)
        # Automation follows what the runs changed; the daemon evaluates again on its next tick.
        for step in range(4):
            began = time.perf_counter()
            requests = self.automation_requests(now + timedelta(minutes=1 + step))
            self.log.tick_seconds[-1] += time.perf_counter() - began
            if not requests:
                break
            self.execute(requests)
        self.evaluate_freshness()

    def schedule_requests(self, now: datetime) -> list[tuple[str, str, dg.RunRequest]]:
        requests = []
        for schedule in self.defs.schedules or []:
            tick = latest_cron_tick(schedule.cron_schedule, after=now - timedelta(hours=1), until=now)
            if tick is None:
                continue
            with dg.build_schedule_context(
                instance=self.instance, scheduled_execution_time=tick, repository_def=self.repository
            ) as context:
                result = schedule.evaluate_tick(context)
            for request in result.run_requests or []:
                tags = {**request.tags, **dg.DagsterRun.tags_for_schedule(schedule)}
                requests.append(("schedule", schedule.job_name, request.with_replaced_attrs(tags=tags)))
        return requests

    def sensor_requests(self) -> list[tuple[str, str, dg.RunRequest]]:
        requests = []
        for sensor in self.defs.sensors or []:
            if sensor.name.startswith(AUTOMATION_SENSOR_PREFIX) or sensor.name == FRESHNESS_SENSOR:
                continue
            with dg.build_sensor_context(
                instance=self.instance,
                cursor=self.cursors.get(sensor.name),
                definitions=self.defs,
                resources=self._resources_of(sensor),
            ) as context:
                result = sensor.evaluate_tick(context)
            if result.cursor is not None:
                self.cursors[sensor.name] = result.cursor
            for request in result.run_requests or []:
                if (sensor.name, request.run_key) in self.run_keys:
                    continue  # the daemon launches a run key once per sensor
                self.run_keys.add((sensor.name, request.run_key))
                tags = {**request.tags, **dg.DagsterRun.tags_for_sensor(sensor)}
                requests.append(("sensor", sensor.job_name, request.with_replaced_attrs(tags=tags)))
        return requests

    def automation_requests(self, now: datetime) -> list[tuple[str, str | None, dg.RunRequest]]:
        """What the automation daemon requests at `now`: it evaluates each automation sensor on its own (its
        assets, its cursor) and groups that sensor's requests by partition, so a run never spans two sensors,
        i.e. two jobs or two code locations, and an asset of another sensor never counts as requested with it."""
        self.evaluations += 1
        requests = []
        for sensor in self.defs.sensors or []:
            if not isinstance(sensor, dg.AutomationConditionSensorDefinition):
                continue
            result = dg.evaluate_automation_conditions(
                defs=self.defs,
                instance=self.instance,
                asset_selection=sensor.asset_selection,
                cursor=self.automation_cursors.get(sensor.name),
                evaluation_time=now,
            )
            self.automation_cursors[sensor.name] = result.cursor
            by_partition: dict[str | None, list[dg.AssetKey]] = {}
            for evaluated in result.results:
                subset = evaluated.true_subset
                if subset.size == 0:
                    continue
                if self.graph.get(evaluated.key).partitions_def is None:
                    by_partition.setdefault(None, []).append(evaluated.key)
                else:
                    for partition in subset.expensively_compute_partition_keys():
                        by_partition.setdefault(partition, []).append(evaluated.key)
            tags = {
                **sensor.run_tags,
                SENSOR_NAME_TAG: sensor.name,
                AUTO_MATERIALIZE_TAG: "true",
                ASSET_EVALUATION_ID_TAG: str(self.evaluations),
            }
            for partition, keys in sorted(by_partition.items(), key=lambda item: item[0] or ""):
                request = dg.RunRequest(
                    asset_selection=keys,
                    asset_check_keys=self._ride_along_checks(keys),
                    partition_key=partition,
                    tags=tags,
                )
                requests.append(("automation", None, request))
        return requests

    def _ride_along_checks(self, keys: list[dg.AssetKey]) -> list[dg.AssetCheckKey]:
        """The checks the daemon runs with these assets: all of theirs but those with an automation condition
        of their own (Dagster's `_ride_along_check_keys_for_assets`), such as the partition-freshness checks."""
        checks = self.graph.get_check_keys_for_assets(set(keys))
        return sorted((c for c in checks if self.graph.get(c).automation_condition is None), key=str)

    def evaluate_freshness(self) -> None:
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(FRESHNESS_SENSOR),
            definitions=self.defs,
            resources={"alerting": self.alerting or self.resources["alerting"]},
        ) as context:
            self.cursors[FRESHNESS_SENSOR] = self.freshness(context).cursor

    # --- running what was requested ----------------------------------------------------------------------

    def execute(self, requests: list[tuple[str, str | None, dg.RunRequest]]) -> None:
        for trigger, job_name, request in requests:
            job = (
                self.defs.resolve_job_def(job_name)
                if job_name and job_name != "__ASSET_JOB"
                else self.defs.resolve_implicit_global_asset_job_def()
            )
            began = time.perf_counter()
            tags = dict(request.tags)
            if request.run_key:
                tags["dagster/run_key"] = request.run_key
            if request.asset_check_keys is not None:  # the run executes exactly the checks it names
                job = job.get_subset(
                    asset_selection=set(request.asset_selection or ()),
                    asset_check_selection=set(request.asset_check_keys),
                )
            result = job.execute_in_process(
                instance=self.instance,
                partition_key=request.partition_key,
                asset_selection=list(request.asset_selection)
                if request.asset_selection and request.asset_check_keys is None
                else None,
                tags=tags,
                raise_on_error=False,
            )
            stop_if_stopped_from_outside(result, at=self.now)
            assets = tuple(
                sorted(
                    e.asset_key.to_user_string()
                    for e in result.get_asset_materialization_events()
                    if e.asset_key is not None
                )
            )
            self.log.runs.append(
                Executed(
                    self.now,
                    trigger,
                    result.run_id,
                    result.success,
                    assets,
                    request.partition_key,
                    time.perf_counter() - began,
                )
            )

    def _resources_of(self, sensor: dg.SensorDefinition) -> dict:
        """Only the resources the sensor needs, as the daemon's code server builds them: a sensor context
        initializes every resource it is given, and building all of Strata's for every sensor cost ~0.5 s
        of CPU per simulated hour that the daemon never spends."""
        from dagster._core.execution.resources_init import get_transitive_required_resource_keys

        defined = self.repository.get_top_level_resources()
        needed = get_transitive_required_resource_keys(sensor.required_resource_keys, defined)
        return {key: resource for key, resource in defined.items() if key in needed}


class RunStoppedFromOutside(RuntimeError):
    """A run ended by something outside its own code: a timeout, an exit, a framework error."""


def stop_if_stopped_from_outside(result: dg.ExecuteInProcessResult, *, at: datetime) -> None:
    """Stop the simulation when a run was ended from outside instead of by its own code.

    `execute_in_process(raise_on_error=False)` turns anything that ends a run into a failed run and
    returns: a SIGTERM or Ctrl-C (Dagster raises it inside the step as an interrupt), and even pytest-timeout
    (its `Failed` is a BaseException, which Dagster records as an unexpected step error). The loop would
    then simulate on after its test was told to stop, with a run missing and a failure that says nothing
    about the data. A run that failed by its own code (bad data, a failed check, a resource that cannot
    start) is recorded and the loop goes on: the test judges those at the end.
    """
    from dagster._core.events import RunFailureReason
    from dagster._core.execution.plan.objects import ErrorSource

    if result.success:
        return
    where = f"simulated {at:%Y-%m-%d %H:%M}, run {result.run_id} of {result.job_def.name}"
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error_source == ErrorSource.UNEXPECTED_ERROR:
            error = event.step_failure_data.error  # its message starts with the exception's class
            message = error.message.strip() if error else "?"
            raise RunStoppedFromOutside(f"{where}: step {event.step_key} was ended from outside its code: {message}")
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            reason = event.job_failure_data.failure_reason
            if reason == RunFailureReason.UNEXPECTED_TERMINATION:
                # What Python does with a SIGINT: whoever sent the signal wants the whole session to end.
                raise KeyboardInterrupt(f"{where}: interrupted by a signal (SIGINT/SIGTERM)")
            if reason == RunFailureReason.RUN_EXCEPTION:
                raise RunStoppedFromOutside(f"{where}: {event.message}")


def latest_cron_tick(cron: str, *, after: datetime, until: datetime) -> datetime | None:
    """The latest tick of `cron` in (after, until], or None. The clock moves an hour at a time, so a
    schedule between two hours (the 03:30 table maintenance) ticks at its own time when the clock passes
    it, and one that ticks several times an hour (weather, every 15 minutes) ticks once, at the latest."""
    from dagster._utils.schedules import cron_string_iterator

    tick = next(cron_string_iterator(until.timestamp(), cron, "UTC", ascending=False))
    return tick if after.timestamp() < tick.timestamp() <= until.timestamp() else None


def run_week(
    settings: StrataSettings,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    start: datetime,
    days: int,
    late: list[LateHour],
    until: datetime,
    alerting: object | None = None,
    on_hour: Callable[[datetime], None] | None = None,
) -> SimulatedDaemons:
    """Generate an empty world at `start`, then move clock and world on hour by hour until `until`."""
    cfg = DemoConfig(start=start.date(), days=days, scale=0.01, seed=7)
    paths = {
        "source_url": settings.source_database_url,
        "landing_root": Path(settings.landing_root),
        "truth_dir": settings.demo_dir,
    }
    generate(cfg, as_of=start.replace(tzinfo=None), **paths)
    daemons = SimulatedDaemons(defs, instance, dict(defs.resources), alerting=alerting)
    for now in hourly(start + timedelta(hours=1), until):
        advance(cfg, as_of=now.replace(tzinfo=None), late=late_drops(late, now), **paths)
        daemons.tick(now)
        if on_hour:
            on_hour(now)
    return daemons
