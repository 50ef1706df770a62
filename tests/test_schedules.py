"""Schedules as policy, and the priority of every run a schedule, sensor or automation starts."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from definitions import build_definitions
from jobs.policies import PRIORITY_TAG, priority_tags
from jobs.schedules import SCHEDULE_TAG, SCHEDULES
from sensors.automation_sensor import automation_sensor_name
from tests.conftest import TEST_START
from tests.support import generate_demo

TICK = datetime(2026, 10, 2, 13, tzinfo=UTC)


def evaluate_schedule(defs: dg.Definitions, name: str, at: datetime) -> list[dg.RunRequest] | str:
    """One tick of a schedule at its scheduled time, as the daemon evaluates it: run requests or the skip reason."""
    schedule = defs.resolve_schedule_def(name)
    with dg.build_schedule_context(scheduled_execution_time=at, repository_def=defs.get_repository_def()) as context:
        data = schedule.evaluate_tick(context)
    return data.run_requests if data.run_requests else data.skip_message


def test_the_schedule_table_is_what_runs(settings):
    defs = build_definitions(settings)
    schedules = {s.name: s for s in defs.schedules}
    assert {name: (s.cron_schedule, s.job_name, s.default_status) for name, s in schedules.items()} == {
        "hourly_oltp_extraction": ("0 * * * *", "extract_oltp", dg.DefaultScheduleStatus.RUNNING),
        "ml_retraining": ("0 2 * * *", "retrain_demand_model", dg.DefaultScheduleStatus.RUNNING),
        "iceberg_table_maintenance": ("30 3 * * *", "maintain_tables", dg.DefaultScheduleStatus.RUNNING),
        "weather_forecasts": ("*/15 * * * *", "fetch_weather", dg.DefaultScheduleStatus.RUNNING),
        "weekly_report": ("0 6 * * 1", "publish_weekly_report", dg.DefaultScheduleStatus.RUNNING),
        "slo_report": ("30 6 * * *", "report_slo", dg.DefaultScheduleStatus.RUNNING),
    }
    assert all(s.execution_timezone == "UTC" for s in schedules.values())
    assert {p.name for p in SCHEDULES} == set(schedules)

    # Table upkeep: one request a day, keyed by its tick, queued behind every data job.
    [upkeep] = evaluate_schedule(defs, "iceberg_table_maintenance", datetime(2026, 10, 3, 3, 30, tzinfo=UTC))
    assert (upkeep.run_key, upkeep.tags[PRIORITY_TAG]) == ("iceberg_table_maintenance:2026-10-03T03:30Z", "-5")


def test_the_0200_retraining_waits_for_the_previous_days_features_then_requests_that_day_once(settings):
    defs = build_definitions(settings)
    tick = datetime(2026, 10, 16, 2, tzinfo=UTC)  # needs 7 holdout + 7 training days: 2026-10-02 .. 10-15
    retraining = defs.resolve_job_def("retrain_demand_model").asset_layer.selected_asset_keys
    assert {key.to_user_string() for key in retraining} == {
        "ml/demand_training_features",
        "ml/demand_model_candidate",
        "ml/demand_model",
    }
    with dg.instance_for_test() as instance:

        def evaluate() -> list[dg.RunRequest] | str:
            schedule = defs.resolve_schedule_def("ml_retraining")
            with dg.build_schedule_context(
                instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
            ) as context:
                data = schedule.evaluate_tick(context)
            return data.run_requests if data.run_requests else data.skip_message

        features = dg.AssetKey(["gold", "demand_features_hourly"])
        for day in range(1, 15):  # 2026-10-01 .. 10-14, with a hole on 10-09
            if day != 9:
                instance.report_runless_asset_event(dg.AssetMaterialization(features, partition=f"2026-10-{day:02d}"))
        assert evaluate() == (
            "gold/demand_features_hourly has no materialization for 2026-10-15, 2026-10-09 (2 of the 14 day(s) "
            "up to 2026-10-15 it needs): ml_retraining skips this tick"
        )
        for day in (9, 15):
            instance.report_runless_asset_event(dg.AssetMaterialization(features, partition=f"2026-10-{day:02d}"))
        [request] = evaluate()
        assert (request.partition_key, request.run_key) == ("2026-10-15", "ml_retraining:2026-10-15")
        assert request.tags[PRIORITY_TAG] == "3"
        assert [r.run_key for r in evaluate()] == [request.run_key]  # evaluated twice, requested once


def test_the_hourly_extraction_requests_once_per_tick_with_its_jobs_priority(settings):
    defs = build_definitions(settings)
    [request] = evaluate_schedule(defs, "hourly_oltp_extraction", TICK)
    assert request.run_key == "hourly_oltp_extraction:2026-10-02T13:00Z"
    assert request.tags == {
        PRIORITY_TAG: "5",
        SCHEDULE_TAG: "2026-10-02T13:00Z",
        "dagster/schedule_name": "hourly_oltp_extraction",  # the audit record's trigger
    }
    # The same tick evaluated again (a daemon restart) asks for the same run key: Dagster launches it once.
    assert [r.run_key for r in evaluate_schedule(defs, "hourly_oltp_extraction", TICK)] == [request.run_key]
    assert evaluate_schedule(defs, "hourly_oltp_extraction", TICK.replace(hour=14))[0].run_key.endswith("14:00Z")


def test_the_monday_schedule_requests_exactly_one_run_for_the_previous_iso_week(settings):
    defs = build_definitions(settings)
    # The first Monday of the data (2026-10-01 is a Thursday): the week before has no partition, nothing runs.
    with dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 10, 5, 6, tzinfo=UTC), repository_def=defs.get_repository_def()
    ) as context:
        first = defs.resolve_schedule_def("weekly_report").evaluate_tick(context)
    assert first.run_requests == [] and first.skip_message == (
        "2026-09-28 is not a partition of publish_weekly_report (its first is 2026-10-05): nothing to build"
    )
    monday = datetime(2026, 10, 12, 6, tzinfo=UTC)
    [request] = evaluate_schedule(defs, "weekly_report", monday)
    assert (request.partition_key, request.run_key) == ("2026-10-05", "weekly_report:2026-10-05")
    assert request.tags[SCHEDULE_TAG] == "2026-10-12T06:00Z"
    report = defs.resolve_job_def("publish_weekly_report")
    partitions = report.partitions_def
    assert partitions.time_window_for_partition_key("2026-10-05") == dg.TimeWindow(
        datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 12, tzinfo=UTC)
    )
    assert request.partition_key in partitions.get_partition_keys(current_time=monday)
    # evaluated again (a daemon restart), the tick asks for the same run; the next Monday for the next week
    assert [r.run_key for r in evaluate_schedule(defs, "weekly_report", monday)] == [request.run_key]
    [next_week] = evaluate_schedule(defs, "weekly_report", datetime(2026, 10, 19, 6, tzinfo=UTC))
    assert next_week.partition_key == "2026-10-12"


def test_the_weather_fetch_runs_every_quarter_hour_once_per_tick(settings):
    defs = build_definitions(settings)
    tick = datetime(2026, 10, 2, 13, 45, tzinfo=UTC)
    [request] = evaluate_schedule(defs, "weather_forecasts", tick)
    assert request.run_key == "weather_forecasts:2026-10-02T13:45Z" and request.partition_key is None
    schedule = defs.resolve_schedule_def("weather_forecasts")
    assert schedule.job_name == "fetch_weather"


def test_each_automation_sensor_carries_the_priority_of_the_job_its_assets_belong_to(settings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    automated = {key for key in graph.get_all_asset_keys() if graph.get(key).automation_condition is not None}
    targeted: set[dg.AssetKey] = set()
    for job_name in ("build_daily", "refresh_unpartitioned", "forecast_daily"):
        sensor = defs.resolve_sensor_def(automation_sensor_name(job_name))
        assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        # the daemon stamps these on every run it requests for the sensor (`materialize_run_tags`)
        assert sensor.run_tags == priority_tags(job_name)
        assert not sensor.emit_backfills  # plain runs: a backfill would take the queue's backfill slots
        keys = sensor.asset_selection.resolve(graph)
        assert keys <= defs.resolve_job_def(job_name).asset_layer.selected_asset_keys
        targeted |= keys
    assert targeted == automated  # every automated asset, each by exactly one of them


@pytest.mark.slow
def test_runs_requested_by_the_schedule_and_the_drop_sensor_run_their_job_with_its_priority(settings):
    generate_demo(settings, TEST_START, 1)
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        # the drop sensor: one request per READY drop, for a run of load_hourly
        sensor = defs.resolve_sensor_def("telemetry_drop_sensor")
        assert sensor.job_name == "load_hourly"
        resources = {"landing": defs.resources["landing"], "iceberg": defs.resources["iceberg"]}
        with dg.build_sensor_context(instance=instance, definitions=defs, resources=resources) as context:
            requests = sensor(context).run_requests
        assert len(requests) == 24
        first = min(requests, key=lambda r: r.partition_key)
        assert first.tags[PRIORITY_TAG] == "0"
        loaded = defs.resolve_job_def("load_hourly").execute_in_process(
            instance=instance, partition_key=first.partition_key, tags=first.tags
        )
        assert loaded.success and loaded.dagster_run.tags[PRIORITY_TAG] == "0"

        # the hourly schedule: a real extract_oltp run, carrying its priority and scheduled time
        follow = defs.resolve_sensor_def(automation_sensor_name("refresh_unpartitioned")).asset_selection
        before = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=follow)
        [request] = evaluate_schedule(defs, "hourly_oltp_extraction", TICK)
        extracted = defs.resolve_job_def("extract_oltp").execute_in_process(instance=instance, tags=request.tags)
        assert extracted.success
        assert extracted.dagster_run.tags[PRIORITY_TAG] == "5"
        materialized = {e.asset_key.to_user_string() for e in extracted.get_asset_materialization_events()}
        oltp = ("bookings", "customers", "payments", "stations", "vehicles", "fields", "wells", "well_production")
        assert materialized == {f"bronze/{t}" for t in oltp}

        # ... and the unpartitioned models follow it by automation (another code location): the staging views
        # of the tables just extracted are requested (the models above them on the ticks after, once built).
        requested = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=follow, cursor=before.cursor
        )
        requested_keys = {r.key.to_user_string() for r in requested.results if r.true_subset.size}
        assert requested_keys == {f"silver/stg_{t}" for t in oltp}
