"""Automation follows content, not rematerializations, and no run Strata starts judges freshness.

- dbt materializations and Bronze OLTP loads carry their content checksum as the data version, and the
  automation rule reacts to data version changes: a refresh that changes nothing rebuilds no day, one that
  changes a booking of the newest day rebuilds exactly that day (real dbt, real instance);
- the partition-freshness checks (evaluated by the freshness sensor at its own clock) run in neither a
  drop sensor's run nor an automation run.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from assets.partitions import daily_partitions, hourly_partitions
from jobs.partition_freshness import CHECK_NAME, build_partition_freshness_checks, resolve_rules
from jobs.policies import PARTITION_FRESHNESS, apply_global_policies
from resources.source_db import connect_adbc
from tests.conftest import TEST_START
from tests.support import generate_demo, refresh_unpartitioned

DAY1, DAY2 = TEST_START.isoformat(), (TEST_START + timedelta(days=1)).isoformat()
# 03:00 on the day after DAY2: DAY2 is the newest daily partition.
MORNING = datetime(TEST_START.year, TEST_START.month, TEST_START.day, 3, tzinfo=UTC) + timedelta(days=2)
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
DATA_VERSION_TAG = "dagster/data_version"
STATIONS, STG_STATIONS = dg.AssetKey(["bronze", "stations"]), dg.AssetKey(["silver", "stg_stations"])
DIM_VEHICLES = dg.AssetKey(["gold", "dim_vehicles"])
TELEMETRY = dg.AssetKey(["bronze", "telemetry"])


def requested(result: dg.EvaluateAutomationConditionsResult) -> set[tuple[str, str | None]]:
    return {
        (r.key.to_user_string(), partition)
        for r in result.results
        if isinstance(r.key, dg.AssetKey) and r.true_subset.size
        for partition in (
            r.true_subset.expensively_compute_partition_keys() if r.true_subset.is_partitioned else [None]
        )
    }


def latest_data_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[str, str]:
    """(data version, strata/checksum) of the asset's latest materialization."""
    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization
    checksum = materialization.metadata.get("strata/checksum")
    return materialization.tags[DATA_VERSION_TAG], checksum.value if checksum else ""


@pytest.mark.slow
def test_automation_rebuilds_a_day_only_when_an_input_changed_content(settings):
    from definitions import build_definitions

    generate_demo(settings, TEST_START, 2)
    defs = build_definitions(settings)
    extract = defs.resolve_job_def("extract_oltp")

    def evaluate(instance, cursor):
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor, evaluation_time=MORNING)

    with dg.instance_for_test() as instance:
        hours = {RANGE_START: f"{DAY1}-00:00", RANGE_END: f"{DAY2}-23:00"}
        assert defs.resolve_job_def("load_hourly").execute_in_process(instance=instance, tags=hours).success
        assert refresh_unpartitioned(defs, instance).success
        days = {RANGE_START: DAY1, RANGE_END: DAY2}
        assert defs.resolve_job_def("build_daily").execute_in_process(instance=instance, tags=days).success
        settled = evaluate(instance, None)
        assert requested(settled) == set()
        dimension = latest_data_version(instance, DIM_VEHICLES)
        assert dimension[0] == dimension[1] and dimension[1].startswith("rows=")  # the content checksum

        # The hourly refresh again, with nothing changed upstream: every model is rematerialized, to the
        # same content, so no day is rebuilt (rematerializations alone requested the newest day each hour).
        assert refresh_unpartitioned(defs, instance).success
        assert latest_data_version(instance, DIM_VEHICLES) == dimension
        quiet = evaluate(instance, settled.cursor)
        assert requested(quiet) == set()

        # A Bronze extraction that brings nothing new keeps its data version: the models reading it stay.
        before = latest_data_version(instance, STATIONS)
        assert extract.execute_in_process(instance=instance, asset_selection=[STATIONS]).success
        assert latest_data_version(instance, STATIONS) == before
        still = evaluate(instance, quiet.cursor)
        assert requested(still) == set()

        # A booking of the newest day changes: the refresh publishes it, and exactly that day is rebuilt,
        # for the models that read bookings (and what reads them); telemetry-only models are not.
        with connect_adbc(settings.source_database_url) as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE bookings SET distance_km = distance_km + 1, updated_at = '2026-10-03 02:30:00.000000' "
                "WHERE booking_id = (SELECT min(booking_id) FROM bookings "
                f"WHERE booked_at >= '{DAY2}' AND distance_km IS NOT NULL)"
            )
            conn.commit()
        assert refresh_unpartitioned(defs, instance).success
        assert latest_data_version(instance, DIM_VEHICLES) == dimension
        changed = evaluate(instance, still.cursor)
        assert requested(changed) == {
            ("gold/fct_bookings", DAY2),
            ("gold/kpi_daily", DAY2),
            ("gold/demand_features_hourly", DAY2),
            ("ml/demand_forecast", DAY2),
        }

        # A changed station is published by Bronze alone: automation rebuilds the models that read it.
        with connect_adbc(settings.source_database_url) as conn, conn.cursor() as cur:
            cur.execute("UPDATE stations SET capacity = capacity + 1, updated_at = '2026-10-03 02:40:00.000000'")
            conn.commit()
        assert extract.execute_in_process(instance=instance, asset_selection=[STATIONS]).success
        assert latest_data_version(instance, STATIONS) != before
        assert (STG_STATIONS.to_user_string(), None) in requested(evaluate(instance, changed.cursor))


# --- the freshness checks stay out of sensor and automation runs ----------------------------------------


def test_a_drop_sensor_run_executes_the_quality_checks_of_its_job_but_not_partition_freshness(settings):
    from definitions import build_definitions

    generate_demo(settings, TEST_START, 1, as_of=datetime(2026, 10, 1, 2))
    defs = build_definitions(settings)
    sensor = defs.get_sensor_def("telemetry_drop_sensor")
    resources = defs.get_repository_def().get_top_level_resources()
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(
            instance=instance, definitions=defs, resources={k: resources[k] for k in ("landing", "iceberg")}
        ) as context:
            result = sensor.evaluate_tick(context)
        request = result.run_requests[0]
        job = defs.resolve_job_def(sensor.job_name)
        job_checks = {k for k in job.asset_layer.asset_graph.asset_check_keys if k.asset_key == TELEMETRY}
        assert dg.AssetCheckKey(TELEMETRY, CHECK_NAME) not in job_checks
        assert set(request.asset_check_keys) == job_checks  # named: the asset alone would run every check

        # Run as the daemon runs it: the asset and exactly the checks the request names.
        run = job.get_subset(
            asset_selection=set(request.asset_selection), asset_check_selection=set(request.asset_check_keys)
        ).execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags)
        assert run.success
        executed = {(e.asset_key, e.check_name) for e in run.get_asset_check_evaluations()}
        assert executed == {(k.asset_key, k.name) for k in job_checks}


START = date(2026, 10, 1)
KPI = dg.AssetKey(["gold", "kpi_daily"])


@dg.asset(key=TELEMETRY, group_name="bronze", partitions_def=hourly_partitions(START))
def telemetry_stand_in() -> None: ...


@dg.asset(key=KPI, group_name="gold", partitions_def=daily_partitions(START), deps=[TELEMETRY], tags={"daily": ""})
def kpi_stand_in() -> None: ...


@dg.asset_check(asset=KPI, description="A quality check that rides along with every run of the asset.")
def kpi_has_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def test_an_automation_run_executes_the_assets_checks_but_not_partition_freshness():
    """Run requests built by Dagster's own automation code (what the automation sensor launches), on
    stand-ins that the policy tables treat as Gold: automated, with a partition-freshness check."""
    from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests

    assets = apply_global_policies([telemetry_stand_in, kpi_stand_in])
    freshness = build_partition_freshness_checks(resolve_rules(PARTITION_FRESHNESS, assets), assets)
    defs = dg.Definitions(assets=assets, asset_checks=[*freshness, kpi_has_rows])
    graph = defs.resolve_asset_graph()
    with dg.instance_for_test() as instance:
        hours = {RANGE_START: "2026-10-01-00:00", RANGE_END: "2026-10-01-23:00"}
        first = dg.evaluate_automation_conditions(  # the sensor's first tick, before 1 October closes
            defs=defs, instance=instance, evaluation_time=datetime(2026, 10, 1, 12, tzinfo=UTC)
        )
        assert dg.materialize(assets, selection=[TELEMETRY], instance=instance, tags=hours).success
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor, evaluation_time=datetime(2026, 10, 2, 0, 30, tzinfo=UTC)
        )
        subsets = [r.true_subset for r in result.results if r.true_subset.size]
        [request] = build_run_requests(subsets, graph, run_tags={}, emit_backfills=False)
        assert (list(request.asset_selection), request.partition_key) == ([KPI], "2026-10-01")
        assert list(request.asset_check_keys) == [dg.AssetCheckKey(KPI, "kpi_has_rows")]

        run = (
            defs.resolve_implicit_global_asset_job_def()
            .get_subset(asset_selection={KPI}, asset_check_selection=set(request.asset_check_keys))
            .execute_in_process(instance=instance, partition_key=request.partition_key)
        )
        assert run.success
        assert {e.check_name for e in run.get_asset_check_evaluations()} == {"kpi_has_rows"}


# --- a target missing when automation first looks is built once ---------------------------------------

SOURCE, DIMENSION = dg.AssetKey(["bronze", "unchanging"]), dg.AssetKey(["silver", "dimension_of_unchanging"])


@dg.asset(key=SOURCE)
def unchanging_source() -> dg.MaterializeResult:
    return dg.MaterializeResult(data_version=dg.DataVersion("the same rows every hour"))


def test_a_target_missing_at_the_first_evaluation_is_requested_once_though_its_input_never_changes():
    """A fresh deployment: the source is extracted every hour to the same content, the dimension reading it
    has never been built. Dagster's `eager` would wait for an input change that never comes (the simulated
    week's `stg_vehicles`, read by the daily models' dbt tests); the rule requests it at its first evaluation,
    and after a failed build does not request it again at every tick."""
    from jobs.policies import BUILD_MISSING_THEN_QUALITY_GATED_EAGER

    @dg.asset(key=DIMENSION, deps=[SOURCE], automation_condition=BUILD_MISSING_THEN_QUALITY_GATED_EAGER)
    def dimension() -> None:
        raise RuntimeError("the first build fails")

    defs = dg.Definitions(assets=[unchanging_source, dimension])
    clock = datetime(2026, 10, 1, 1, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        assert dg.materialize([unchanging_source], instance=instance).success

        def evaluate(cursor, hours):
            return dg.evaluate_automation_conditions(
                defs=defs, instance=instance, cursor=cursor, evaluation_time=clock + timedelta(hours=hours)
            )

        first = evaluate(None, 0)
        assert requested(first) == {(DIMENSION.to_user_string(), None)}

        failed = dg.materialize([unchanging_source, dimension], selection=[DIMENSION], instance=instance,
                                raise_on_error=False)  # fmt: skip
        assert not failed.success
        assert dg.materialize([unchanging_source], instance=instance).success  # same content again
        second = evaluate(first.cursor, 1)
        assert requested(second) == set()
        assert requested(evaluate(second.cursor, 2)) == set()
