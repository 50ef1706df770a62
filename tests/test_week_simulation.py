"""The simulated daemons (tests/week_simulation.py) request automation runs as the real daemon does: one
evaluation per automation sensor, its requests grouped by partition within that sensor. Deployed, each code
location runs its own automation sensors, so a daily model (transforms) and the forecast that reads it
(analytics) never share a run, even for the same day: the forecast follows once the model is materialized."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from sensors.automation_sensor import automation_sensor_name
from tests.week_simulation import SENSOR_NAME_TAG, SimulatedDaemons

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
