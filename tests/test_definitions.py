"""The code location: one graph from Bronze to Gold and ML, dbt sources wired to Bronze, checks and partitions."""

import dagster as dg

from definitions import build_definitions

BRONZE = {"customers", "stations", "vehicles", "bookings", "payments", "telemetry"}
SILVER = {f"stg_{t}" for t in BRONZE} | {
    "bookings_valid",
    "bookings",
    "bookings_quarantine",
    "telemetry_clean",
    "telemetry_quarantine",
}
GOLD = {
    "dim_customers",
    "dim_vehicles",
    "dim_stations",
    "fct_bookings",
    "fleet_health_daily",
    "kpi_daily",
    "demand_features_hourly",
}
DAILY = {
    ("silver", "telemetry_clean"),
    ("silver", "telemetry_quarantine"),
    ("gold", "fct_bookings"),
    ("gold", "fleet_health_daily"),
    ("gold", "kpi_daily"),
    ("gold", "demand_features_hourly"),
    ("ml", "demand_forecast"),
}


def test_definitions_hold_one_graph_from_bronze_to_gold(settings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    keys = {tuple(k.path) for k in graph.get_all_asset_keys()}
    expected = {("bronze", t) for t in BRONZE} | {("silver", t) for t in SILVER} | {("gold", t) for t in GOLD}
    assert keys == expected | {("ml", "demand_forecast")}

    # No dangling sources: every dependency is an asset this location materializes.
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.is_materializable, key
        assert node.group_name == key.path[0], key
        for parent in node.parent_keys:
            assert graph.get(parent).is_materializable, (key, parent)

    assert graph.get(dg.AssetKey(["silver", "stg_bookings"])).parent_keys == {dg.AssetKey(["bronze", "bookings"])}
    assert graph.get(dg.AssetKey(["silver", "stg_telemetry"])).parent_keys == {dg.AssetKey(["bronze", "telemetry"])}
    # The Python ML asset reads dbt marts: it is downstream of dbt in the same graph.
    assert graph.get(dg.AssetKey(["ml", "demand_forecast"])).parent_keys == {
        dg.AssetKey(["gold", "demand_features_hourly"]),
        dg.AssetKey(["gold", "dim_stations"]),
    }


def test_partitions_and_backfill_policies(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    telemetry = graph.get(dg.AssetKey(["bronze", "telemetry"]))
    assert isinstance(telemetry.partitions_def, dg.HourlyPartitionsDefinition)
    assert telemetry.partitions_def.get_first_partition_key() == "2026-10-01-00:00"
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if tuple(key.path) in DAILY:
            assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition), key
            assert node.backfill_policy == dg.BackfillPolicy.single_run(), key
        elif key.path[0] != "bronze" or key.path[1] != "telemetry":
            assert node.partitions_def is None, key


def test_dbt_tests_are_asset_checks_on_the_tables_they_guard(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    checks = {(tuple(c.asset_key.path), c.name) for c in graph.asset_check_keys}
    assert (("gold", "fct_bookings"), "unique_fct_bookings_booking_id") in checks
    assert (("gold", "kpi_daily"), "unique_kpi_daily_kpi_date") in checks
    guarded = {asset for asset, _ in checks}
    assert {("gold", t) for t in GOLD} <= guarded
    assert len(checks) >= 100


def test_jobs_split_by_partitioning(settings):
    defs = build_definitions(settings)
    assert {j.name for j in defs.jobs} == {"refresh_unpartitioned", "load_hourly", "build_daily"}


def test_the_drop_sensor_targets_bronze_telemetry(settings):
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("telemetry_drop_sensor")
    assert sensor.asset_selection.resolve(defs.resolve_asset_graph()) == {dg.AssetKey(["bronze", "telemetry"])}
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_error_severity_dbt_tests_are_blocking_checks(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    specs = {(tuple(k.asset_key.path), k.name): graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert specs[(("gold", "kpi_daily"), "unique_kpi_daily_kpi_date")].blocking
    assert specs[(("bronze", "telemetry"), "row_count_matches_manifest")].blocking
    assert not specs[(("bronze", "telemetry"), "speed_in_range")].blocking
