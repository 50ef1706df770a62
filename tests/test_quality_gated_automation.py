"""Blocking checks gate across runs: automation does not start what is downstream of a table whose
blocking check failed, until that table is materialized again and passes. Shown on the Python asset
`ml/demand_forecast`, downstream of the dbt model `gold/dim_stations` (the gap dagster-dbt leaves: its
dbt tests are not blocking, so automation would go ahead)."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

import dagster as dg
import pytest

from assets.ml.training import RETRAINING_ASSETS
from definitions import build_definitions
from jobs.policies import FOLLOW_INPUTS_LABEL
from resources.iceberg import IcebergCatalog
from resources.source_db import connect_adbc
from tests.conftest import TEST_START
from tests.support import generate_demo, refresh_unpartitioned

FORECAST = dg.AssetKey(["ml", "demand_forecast"])
STATIONS = dg.AssetKey(["gold", "dim_stations"])
DAY = TEST_START.isoformat()
# Evaluated the morning after DAY: DAY is then the latest daily partition, the one `eager` considers.
MORNING_AFTER = datetime(TEST_START.year, TEST_START.month, TEST_START.day, 3) + timedelta(days=1)
CAPACITY_CHECK = "in_range_dim_stations_capacity__1"  # the dbt test of dim_stations.capacity >= 1


def failed_checks(result: dg.ExecuteInProcessResult) -> set[tuple[str, str]]:
    return {(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations() if not e.passed}


def demo_day_with_telemetry(settings) -> tuple[dg.Definitions, dg.DagsterInstance]:
    """One day of demo data, its first telemetry hour loaded (the Silver views need bronze.telemetry)."""
    generate_demo(settings, TEST_START, 1)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    defs.resolve_job_def("load_hourly").execute_in_process(instance=instance, partition_key=f"{DAY}-00:00")
    return defs, instance


def set_capacity(settings, station_id: int, capacity: int, updated_at: str) -> None:
    with connect_adbc(settings.source_database_url) as conn, conn.cursor() as cur:
        cur.execute(
            f"UPDATE stations SET capacity = {capacity}, updated_at = '{updated_at}' WHERE station_id = {station_id}"
        )
        conn.commit()


def true_partitions(result) -> set[str]:
    return set(result.true_subset.expensively_compute_partition_keys() or ())


def evaluation_of(run, key: dg.AssetKey):
    return next(result for result in run.results if result.key == key)


def parts(result) -> dict[str, set[str]]:
    """Partitions for which each part of `eager & all_deps_blocking_checks_passed` holds."""
    return {child.condition.get_label(): true_partitions(child) for child in result.child_results}


def test_every_silver_gold_and_ml_asset_is_gated_by_blocking_checks(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        condition = graph.get(key).automation_condition
        # the condition's operands, and those of an operand that is itself an OR (follow inputs, or build what
        # is missing at the first evaluation)
        operands = [] if condition is None else list(condition.operands)
        labels = {c.get_label() for c in operands} | {
            g.get_label() for c in operands for g in getattr(c, "operands", ())
        }
        if key.path[0] in ("bronze", "reports", "maintenance", "platform") or key in RETRAINING_ASSETS:
            # Bronze is started by its sensor and jobs; the model retraining, the weekly report, table
            # maintenance and the SLO report by their schedules
            assert condition is None, key
        else:
            assert {FOLLOW_INPUTS_LABEL, "all_deps_blocking_checks_passed"} <= labels, key


@pytest.mark.slow
def test_a_failed_dbt_test_holds_back_the_python_asset_until_the_table_passes_again(settings):
    defs, instance = demo_day_with_telemetry(settings)
    refresh = partial(refresh_unpartitioned, defs)  # the OLTP extraction and the unpartitioned models
    assert refresh(instance=instance).success
    for daily in ("build_daily", "forecast_daily"):
        assert defs.resolve_job_def(daily).execute_in_process(instance=instance, partition_key=DAY).success
    forecast_rows = IcebergCatalog.from_settings(settings).load().load_table("ml.demand_forecast").scan().to_arrow()
    assert forecast_rows.num_rows > 0 and forecast_rows.column("expected_utilisation").to_pylist()[0] > 0

    def evaluate(cursor=None):
        return dg.evaluate_automation_conditions(
            defs=defs,
            instance=instance,
            asset_selection=dg.AssetSelection.assets(FORECAST),
            evaluation_time=MORNING_AFTER,
            cursor=cursor,
        )

    quiet = evaluate()
    assert quiet.total_requested == 0  # everything is up to date

    # The source sets a station's capacity to 0: dim_stations is rebuilt and its blocking test fails.
    set_capacity(settings, 1, 0, "2026-10-03 08:00:00.000000")
    broken = refresh(instance=instance, raise_on_error=False)
    assert not broken.success
    assert failed_checks(broken) == {("gold/dim_stations", CAPACITY_CHECK)}
    assert STATIONS in {e.asset_key for e in broken.get_asset_materialization_events()}
    held = evaluate(quiet.cursor)
    assert held.total_requested == 0
    # Following the inputs alone would run it (an input updated); the failed blocking check holds it back.
    assert parts(evaluation_of(held, FORECAST)) == {
        FOLLOW_INPUTS_LABEL: {DAY},
        "all_deps_blocking_checks_passed": set(),
    }

    # The source is fixed; dim_stations is rebuilt and passes: the forecast is requested for DAY.
    set_capacity(settings, 1, 12, "2026-10-03 09:00:00.000000")
    fixed = refresh(instance=instance)
    assert not failed_checks(fixed)
    released = evaluate(held.cursor)
    assert released.total_requested == 1
    assert true_partitions(evaluation_of(released, FORECAST)) == {DAY}


@pytest.mark.slow
def test_a_failing_dbt_test_in_the_run_stops_the_python_asset_of_that_run(settings):
    defs, instance = demo_day_with_telemetry(settings)
    # A trip that ends before it starts: the contract allows it, the dbt tests on trip duration do not.
    with connect_adbc(settings.source_database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE bookings SET ended_at = '2026-10-01 08:00:00.000000', started_at = '2026-10-01 08:30:00.000000' "
            "WHERE booking_id = (SELECT min(booking_id) FROM bookings WHERE status = 'completed')"
        )
        conn.commit()
    refresh_unpartitioned(defs, instance, raise_on_error=False)

    # The daily models and the forecast in one run, as the single-location view can run them (deployed, the
    # forecast runs in another code location, held back by automation: the test above).
    selection = [
        *defs.resolve_job_def("build_daily").asset_layer.selected_asset_keys,
        *defs.resolve_job_def("forecast_daily").asset_layer.selected_asset_keys,
    ]
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, partition_key=DAY, asset_selection=selection, raise_on_error=False
    )
    assert not result.success
    assert ("gold/fct_bookings", "in_range_fct_bookings_duration_min__0") in failed_checks(result)
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["gold", "fct_bookings"]) in materialized
    assert FORECAST not in materialized  # the Python asset did not run on the failed data
    started = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert "dbt_daily_models" in started and "demand_forecast" not in started
