"""The simulated week's loop (tests/week_simulation.py) stops when a run is ended from outside.

Its first complete run recorded two failed runs that were nothing of the platform's: a SIGTERM sent to the
test's process group (`uv run` forwards it, so the process got two) interrupted an hourly refresh, and 46 s
later pytest-timeout's `Failed` ended a daily build. `execute_in_process(raise_on_error=False)` turned
both into ordinary failed runs and the loop simulated on for minutes after its test was told to stop.

The daemons also request automation runs as the real daemon does: one evaluation per automation sensor,
its requests grouped by partition within that sensor. Deployed, each code location runs its own
automation sensors, so a daily model (transforms) and the forecast that reads it (analytics) never share
a run, even for the same day: the forecast follows once the model is materialized.
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from definitions import build_definitions
from sensors.automation_sensor import automation_sensor_name
from tests.week_simulation import SENSOR_NAME_TAG, RunStoppedFromOutside, SimulatedDaemons, latest_cron_tick

AT = datetime(2026, 10, 7, 17, tzinfo=UTC)


def run_one(asset: dg.AssetsDefinition) -> SimulatedDaemons:
    """Have the loop execute one run of `asset`, as if a schedule had requested it at AT."""
    with dg.instance_for_test() as instance:
        daemons = SimulatedDaemons(dg.Definitions(assets=[asset]), instance, {})
        daemons.now = AT
        daemons.execute([("schedule", None, dg.RunRequest(asset_selection=[asset.key]))])
        return daemons


def test_a_run_interrupted_by_sigterm_stops_the_loop():
    @dg.asset
    def hourly_refresh() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # Dagster turns it into an interrupt inside the step

    with pytest.raises(KeyboardInterrupt, match=r"simulated 2026-10-07 17:00, run \S+ of __ASSET_JOB: interrupted"):
        run_one(hourly_refresh)


def test_a_run_ended_by_pytest_timeout_stops_the_loop():
    @dg.asset
    def daily_build() -> None:
        pytest.fail("Timeout (>6000.0s) from pytest-timeout.")  # what pytest-timeout raises on SIGALRM

    with pytest.raises(RunStoppedFromOutside) as stopped:
        run_one(daily_build)
    assert "step daily_build was ended from outside its code: Failed: Timeout (>6000.0s) from pytest-timeout." in str(
        stopped.value
    )


def test_a_run_failed_by_its_own_code_is_recorded_and_the_loop_goes_on():
    @dg.asset
    def bad_data() -> None:
        raise dg.Failure("bronze.bookings: 3 rows without booking_id", allow_retries=False)

    @dg.asset
    def broken_code() -> None:
        raise ValueError("a bug in the asset")

    for asset in (bad_data, broken_code):
        [run] = run_one(asset).log.runs
        assert (run.trigger, run.success, run.at) == ("schedule", False, AT)


class Needed(dg.ConfigurableResource):
    name: str = "needed"


class Unneeded(dg.ConfigurableResource):
    """Stands for a resource no sensor uses; the daemon never builds it for one."""

    def setup_for_execution(self, context) -> None:
        raise RuntimeError("built for a sensor that does not use it")


def test_a_sensor_gets_only_the_resources_it_uses_as_from_the_daemon():
    """The daemon's code server builds only a sensor's (transitively) required resources. Given all of
    them, the loop built every Strata resource for every sensor, ~0.5 s of CPU per simulated hour."""

    @dg.asset
    def thing() -> None: ...

    @dg.sensor(job=dg.define_asset_job("thing_job", [thing]))
    def uses_needed(needed: Needed) -> dg.SensorResult:
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=needed.name)])

    defs = dg.Definitions(assets=[thing], sensors=[uses_needed], resources={"needed": Needed(), "unneeded": Unneeded()})
    with dg.instance_for_test() as instance:
        daemons = SimulatedDaemons(defs, instance, dict(defs.resources))
        [(trigger, _, request)] = daemons.sensor_requests()
    assert (trigger, request.run_key, request.tags["dagster/sensor_name"]) == ("sensor", "needed", "uses_needed")


@pytest.mark.parametrize(
    ("cron", "tick"),
    [
        ("30 3 * * *", datetime(2026, 10, 5, 3, 30, tzinfo=UTC)),  # between two hours: at its own time
        ("*/15 * * * *", datetime(2026, 10, 5, 4, tzinfo=UTC)),  # several an hour: once, the latest
        ("0 * * * *", datetime(2026, 10, 5, 4, tzinfo=UTC)),
        ("0 3 * * *", None),  # the hour before: ticked by the previous hour already
        ("0 2 * * *", None),
        ("0 6 * * 1", None),
    ],
)
def test_the_latest_cron_tick_of_the_hour_the_clock_just_moved_through(cron, tick):
    now = datetime(2026, 10, 5, 4, tzinfo=UTC)
    assert latest_cron_tick(cron, after=now - timedelta(hours=1), until=now) == tick


def test_the_daily_table_maintenance_at_0330_ticks_when_the_clock_passes_it(settings):
    """The loop ticked only the schedules due on the hour, so the 03:30 table maintenance never ran in the
    week, while the daemon runs it every night (its compaction keeps the drop ledger small: at hour 170
    the drop sensor read 171 one-row files of it on every tick, 0.45 s of CPU)."""
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        daemons = SimulatedDaemons(defs, instance, dict(defs.resources))
        at_four = {job: request for _, job, request in daemons.schedule_requests(datetime(2026, 10, 5, 4, tzinfo=UTC))}
        at_five = {job for _, job, _ in daemons.schedule_requests(datetime(2026, 10, 5, 5, tzinfo=UTC))}
    assert sorted(at_four) == ["extract_oltp", "fetch_weather", "maintain_tables"]
    maintenance = at_four["maintain_tables"]
    assert maintenance.tags["dagster/schedule_name"] == "iceberg_table_maintenance"
    assert maintenance.tags["strata/scheduled_for"] == "2026-10-05T03:30Z"
    assert at_four["extract_oltp"].tags["strata/scheduled_for"] == "2026-10-05T04:00Z"
    assert sorted(at_five) == ["extract_oltp", "fetch_weather"]


DAY = "2026-10-02"
NOW = datetime(2026, 10, 3, 1, tzinfo=UTC)  # DAY is the newest complete daily partition


def two_locations() -> dg.Definitions:
    """A daily input, a model following it (one sensor) and a forecast following the model (another sensor)."""
    daily = dg.DailyPartitionsDefinition("2026-10-01")
    eager = dg.AutomationCondition.eager()

    @dg.asset(partitions_def=daily)
    def telemetry() -> None: ...

    @dg.asset(partitions_def=daily, deps=[telemetry], automation_condition=eager)
    def model() -> None: ...

    @dg.asset(partitions_def=daily, deps=[model], automation_condition=eager)
    def forecast() -> None: ...

    sensors = [
        dg.AutomationConditionSensorDefinition(
            automation_sensor_name(job), target=[asset], run_tags={"dagster/priority": priority}, emit_backfills=False
        )
        for job, asset, priority in (("build_daily", model, "10"), ("forecast_daily", forecast, "7"))
    ]
    return dg.Definitions(assets=[telemetry, model, forecast], sensors=sensors)


def requested(requests: list[tuple[str, str | None, dg.RunRequest]]) -> list[tuple[str, str | None, list[str]]]:
    return [
        (request.tags[SENSOR_NAME_TAG], request.partition_key, [k.to_user_string() for k in request.asset_selection])
        for _, _, request in requests
    ]


def test_each_automation_sensor_requests_its_own_runs():
    defs = two_locations()
    instance = dg.DagsterInstance.ephemeral()
    daemons = SimulatedDaemons(defs, instance, resources={})
    assert daemons.automation_requests(NOW) == []  # the input is missing: nothing to follow

    telemetry = defs.resolve_implicit_global_asset_job_def()
    assert telemetry.execute_in_process(
        instance=instance, partition_key=DAY, asset_selection=[dg.AssetKey("telemetry")]
    ).success
    first = daemons.automation_requests(NOW + timedelta(minutes=1))
    # The model only: the forecast's sensor does not see the model as requested in the same tick.
    assert requested(first) == [(automation_sensor_name("build_daily"), DAY, ["model"])]
    assert first[0][2].tags["dagster/priority"] == "10"
    daemons.execute(first)
    assert [(run.assets, run.partition, run.success) for run in daemons.log.runs] == [(("model",), DAY, True)]

    second = daemons.automation_requests(NOW + timedelta(minutes=2))
    assert requested(second) == [(automation_sensor_name("forecast_daily"), DAY, ["forecast"])]
    assert second[0][2].tags["dagster/priority"] == "7"
    daemons.execute(second)
    assert daemons.automation_requests(NOW + timedelta(minutes=3)) == []
