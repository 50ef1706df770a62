"""The three code locations (jobs/locations.py): each loads on its own, together they are exactly the
single-location graph, every dependency across them resolves to another location's asset (one lineage
graph), and each location's jobs, schedules and sensors target its own assets only."""

from __future__ import annotations

import re

import dagster as dg
import pytest

from definitions import build_definitions, build_location, build_platform
from jobs.backfill import load_code_locations
from jobs.locations import CODE_LOCATIONS, LOCATION_NAMES, PLATFORM_SENSORS_LOCATION

PLATFORM_SENSORS = {
    "audit_run_log_sensor",
    "freshness_alert_sensor",
    "run_failure_alert_sensor",
    "not_run_alert_sensor",
    "blocking_check_alert_sensor",
}


@pytest.fixture
def locations(settings) -> dict[str, dg.Definitions]:
    platform = build_platform(settings)
    return {name: build_location(name, settings, platform) for name in LOCATION_NAMES}


def own_keys(defs: dg.Definitions) -> set[dg.AssetKey]:
    graph = defs.resolve_asset_graph()
    return {key for key in graph.get_all_asset_keys() if graph.get(key).is_materializable}


def test_the_locations_together_are_the_single_location_graph(locations, settings):
    single = build_definitions(settings).resolve_asset_graph()
    owned = {name: own_keys(defs) for name, defs in locations.items()}
    assert all(owned.values()), owned
    # disjoint, and their union is the whole graph
    assert sum(len(keys) for keys in owned.values()) == len(set().union(*owned.values()))
    assert set().union(*owned.values()) == set(single.get_all_asset_keys())
    # every check lives with its asset, and none is lost or doubled
    checks = [key for defs in locations.values() for key in defs.resolve_asset_graph().asset_check_keys]
    assert sorted(checks, key=str) == sorted(single.asset_check_keys, key=str)
    for defs in locations.values():
        graph = defs.resolve_asset_graph()
        assert {key.asset_key for key in graph.asset_check_keys} <= own_keys(defs)


def test_every_dependency_across_locations_resolves_to_another_locations_asset(locations):
    owner = {key: name for name, defs in locations.items() for key in own_keys(defs)}
    crossing = set()
    for name, defs in locations.items():
        graph = defs.resolve_asset_graph()
        for key in own_keys(defs):
            for parent in graph.get(key).parent_keys:
                assert parent in owner, f"{key.to_user_string()}: no location has {parent.to_user_string()}"
                if owner[parent] != name:
                    assert not graph.get(parent).is_materializable  # a reference by key, not a second definition
                    crossing.add((owner[parent], name))
    # the lineage runs ingestion -> transforms -> analytics, never backwards
    assert crossing == {("ingestion", "transforms"), ("transforms", "analytics")}


def test_jobs_schedules_and_sensors_target_their_own_location(locations):
    for name, defs in locations.items():
        own = own_keys(defs)
        graph = defs.resolve_asset_graph()
        for job in defs.resolve_all_job_defs():
            if not job.name.startswith("__ASSET_JOB"):
                assert job.asset_layer.selected_asset_keys <= own, (name, job.name)
        jobs = {job.name for job in defs.jobs}
        assert {schedule.job_name for schedule in defs.schedules or []} <= jobs, name
        for sensor in defs.sensors or []:
            if isinstance(sensor, dg.AutomationConditionSensorDefinition):
                assert sensor.asset_selection.resolve(graph) <= own, (name, sensor.name)
            elif sensor.has_jobs:
                assert sensor.job_name in jobs, (name, sensor.name)
    # the sensors that read the whole instance run once, in one location
    owners = {
        sensor.name: name
        for name, defs in locations.items()
        for sensor in defs.sensors or []
        if sensor.name in PLATFORM_SENSORS
    }
    assert owners == dict.fromkeys(PLATFORM_SENSORS, PLATFORM_SENSORS_LOCATION)


def test_the_platform_sensors_watch_every_location(locations):
    platform = locations[PLATFORM_SENSORS_LOCATION]
    for name in ("run_failure_alert_sensor", "not_run_alert_sensor"):
        sensor = platform.resolve_sensor_def(name)
        assert isinstance(sensor, dg.RunStatusSensorDefinition)
        assert sensor._monitor_all_code_locations


def test_workspace_files_load_the_same_locations(strata_root):
    """The files workspace.yaml names, loaded as `dagster dev` loads them: one repository each."""
    loaded = load_code_locations()
    assert len(loaded) == len(CODE_LOCATIONS)
    names = [sorted(job.name for job in defs.jobs) for defs in loaded]
    assert names == [
        ["extract_oltp", "fetch_weather", "load_hourly", "maintain_tables"],
        ["build_daily", "refresh_unpartitioned"],
        ["forecast_daily", "publish_weekly_report", "report_slo", "retrain_demand_model"],
    ]
    for defs in loaded:
        assert defs.get_repository_def().has_job(sorted(job.name for job in defs.jobs)[0])


def test_an_asset_in_no_location_is_refused():
    from jobs.locations import location_by_key

    stray = dg.AssetSpec(["scratch", "notes"], group_name="scratch")

    @dg.multi_asset(specs=[stray])
    def scratch_notes(): ...

    with pytest.raises(ValueError, match=re.escape("assets in no code location (jobs/locations.py): scratch/notes")):
        location_by_key([scratch_notes])


def test_a_location_entry_file_does_not_build_the_single_location_view(strata_root):
    """A code server loads one location; the merge of all three (`definitions.defs`) is built only when read."""
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import definitions, locations.transforms as loc; "
        "assert 'defs' not in vars(definitions), 'the merged view was built'; "
        "print(sorted(job.name for job in loc.defs.jobs), len(definitions.defs.jobs))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=Path(__file__).parents[1], check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['build_daily', 'refresh_unpartitioned'] 10"
