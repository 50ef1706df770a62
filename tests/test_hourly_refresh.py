"""The hourly refresh across code locations: the schedule runs `extract_oltp` (ingestion) and the
unpartitioned Silver/Gold models (transforms) follow by automation. How many automation ticks of the
transforms location does a new extraction take to reach Gold (issue 10: within the hour)? Evaluated as
the daemon does (one evaluation per automation sensor, tests/week_simulation.py), on real dbt runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from definitions import build_definitions
from demo.simulator import DemoConfig, advance, generate
from sensors.automation_sensor import automation_sensor_name
from tests.conftest import TEST_START
from tests.support import refresh_unpartitioned
from tests.week_simulation import SENSOR_NAME_TAG, SimulatedDaemons

MORNING = datetime(TEST_START.year, TEST_START.month, TEST_START.day, 10)


@pytest.mark.slow
def test_on_a_warm_instance_a_new_extraction_reaches_silver_and_gold_in_one_tick(settings):
    cfg = DemoConfig(start=TEST_START, days=1, scale=0.01, seed=7)
    paths = {
        "source_url": settings.source_database_url,
        "landing_root": Path(settings.landing_root),
        "truth_dir": settings.demo_dir,
    }
    generate(cfg, as_of=MORNING, **paths)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    # stg_telemetry (an unpartitioned view) reads bronze.telemetry: load its first hour
    load = defs.resolve_job_def("load_hourly")
    assert load.execute_in_process(instance=instance, partition_key=f"{TEST_START}-00:00").success
    daemons = SimulatedDaemons(defs, instance, dict(defs.resources))
    models = {
        key.to_user_string() for key in defs.resolve_job_def("refresh_unpartitioned").asset_layer.selected_asset_keys
    }
    sensor = automation_sensor_name("refresh_unpartitioned")
    minutes = (MORNING.replace(tzinfo=UTC) + timedelta(minutes=step) for step in range(1000))
    assert not daemons.automation_requests(next(minutes))  # the baseline tick: Bronze is still empty

    def ticks_to_follow() -> list[set[str]]:
        """Tick by tick, what the unpartitioned models' sensor requests, until it requests nothing more."""
        ticks = []
        while requests := [
            r for r in daemons.automation_requests(next(minutes)) if r[2].tags[SENSOR_NAME_TAG] == sensor
        ]:
            daemons.execute(requests)
            assert all(run.success for run in daemons.log.runs)
            ticks.append({key.to_user_string() for _, _, request in requests for key in request.asset_selection})
            assert len(ticks) < 10, ticks
        return ticks

    # Warm: one full refresh (the OLTP extraction and every unpartitioned model, their checks passed) and
    # the day's daily models (an automation subset of the dbt models also runs the dbt tests that relate
    # the daily tables to them, which need those tables to exist).
    assert refresh_unpartitioned(defs, instance).success
    assert (
        defs.resolve_job_def("build_daily").execute_in_process(instance=instance, partition_key=f"{TEST_START}").success
    )
    assert not [r for r in daemons.automation_requests(next(minutes)) if r[2].tags[SENSOR_NAME_TAG] == sensor]

    # An hour later the source has new bookings: one extraction, then one tick requests every model at once.
    advance(cfg, as_of=MORNING + timedelta(hours=1), **paths)
    assert defs.resolve_job_def("extract_oltp").execute_in_process(instance=instance).success
    # ... the models of the tables whose content changed (new bookings and payments), not the others: their
    # Bronze data versions are the same (a refresh that changes nothing rebuilds nothing)
    bookings = {"silver/stg_bookings", "silver/stg_payments", "silver/bookings", "silver/bookings_valid"}
    assert ticks_to_follow() == [bookings | {"silver/bookings_quarantine"}]
    assert bookings <= models

    # And every hour after it: the first hour's run built only some models, yet ran each one's own tests,
    # those that read another model too (stg_bookings' relationship to stg_stations). Had one been left
    # out, the blocking check would have no result for stg_bookings' newest materialization, and
    # automation would hold silver/bookings back from the second hour on (the simulated week).
    for hour in (3, 6):
        advance(cfg, as_of=MORNING + timedelta(hours=hour), **paths)
        assert defs.resolve_job_def("extract_oltp").execute_in_process(instance=instance).success
        assert ticks_to_follow() == [bookings | {"silver/bookings_quarantine"}], f"hour {hour}"
    stg_bookings = dg.AssetKey(["silver", "stg_bookings"])
    relationships = [
        key for key in defs.resolve_asset_graph().get(stg_bookings).check_keys if key.name.startswith("relationships")
    ]
    assert relationships
    latest = instance.get_latest_materialization_event(stg_bookings)
    for key in relationships:
        [record] = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
        assert record.status.value == "SUCCEEDED", (key.name, record.status)
        assert record.run_id == latest.run_id, key.name


@pytest.mark.slow
def test_on_a_cold_instance_the_first_automation_runs_of_the_models_succeed(settings):
    """Before any daily table exists, automation brings the unpartitioned models up in subset runs. With
    dbt's default test selection those runs also ran the daily models' relationship tests and failed on
    `Table with name telemetry_clean does not exist` (DBT_INDIRECT_SELECTION=cautious for them, dbt_models.py)."""
    cfg = DemoConfig(start=TEST_START, days=1, scale=0.01, seed=7)
    generate(
        cfg,
        as_of=MORNING,
        source_url=settings.source_database_url,
        landing_root=Path(settings.landing_root),
        truth_dir=settings.demo_dir,
    )
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert (
        defs.resolve_job_def("load_hourly")
        .execute_in_process(instance=instance, partition_key=f"{TEST_START}-00:00")
        .success
    )
    daemons = SimulatedDaemons(defs, instance, dict(defs.resources))
    sensor = automation_sensor_name("refresh_unpartitioned")
    minutes = (MORNING.replace(tzinfo=UTC) + timedelta(minutes=step) for step in range(1000))
    daemons.automation_requests(next(minutes))  # the baseline tick
    assert defs.resolve_job_def("extract_oltp").execute_in_process(instance=instance).success
    built: set[str] = set()
    for _ in range(10):
        requests = [r for r in daemons.automation_requests(next(minutes)) if r[2].tags[SENSOR_NAME_TAG] == sensor]
        if not requests:
            break
        daemons.execute(requests)
        failed = [run.run_id for run in daemons.log.runs if not run.success]
        assert not failed, f"automation runs failed before any daily table existed: {failed}"
        built |= {key.to_user_string() for _, _, request in requests for key in request.asset_selection}
    assert {"silver/bookings", "gold/dim_vehicles", "gold/dim_stations"} <= built, built
