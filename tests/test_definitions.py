"""The code location: one graph from Bronze to Gold and ML, dbt sources wired to Bronze, checks and partitions."""

from datetime import UTC, datetime

import dagster as dg

from definitions import build_definitions

BRONZE = {"customers", "stations", "vehicles", "bookings", "payments", "telemetry", "weather_forecasts"}
SILVER = {f"stg_{t}" for t in BRONZE} | {
    "bookings_valid",
    "bookings",
    "bookings_quarantine",
    "telemetry_clean",
    "telemetry_quarantine",
    "weather_conditions",
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
    ("silver", "stg_telemetry"),
    ("silver", "telemetry_clean"),
    ("silver", "telemetry_quarantine"),
    ("gold", "fct_bookings"),
    ("gold", "fleet_health_daily"),
    ("gold", "kpi_daily"),
    ("gold", "demand_features_hourly"),
    ("ml", "demand_forecast"),
}
# One model per day and run: each day's candidate is judged against the champion the day before left.
RETRAINING = {("ml", "demand_training_features"), ("ml", "demand_model_candidate"), ("ml", "demand_model")}
ML = {"demand_forecast", "demand_training_features", "demand_model_candidate", "demand_model"}
# The second domain (oil & gas), added as configuration: its production OLTP tables and its hourly ledger feeds.
OILGAS_BRONZE = {"fields", "wells", "well_production", "journal_lines", "journal_control_totals"}
OILGAS_SILVER = {f"stg_{t}" for t in OILGAS_BRONZE}
OILGAS_GOLD = {
    "field_production_daily",
    "field_production_variance",
    "trial_balance_daily",
    "trial_balance_reconciliation",
}
OILGAS_HOURLY = {("bronze", "journal_lines"), ("bronze", "journal_control_totals")}
OILGAS_DAILY = {("silver", "stg_journal_lines"), ("silver", "stg_journal_control_totals")} | {
    ("gold", t) for t in OILGAS_GOLD
}


def test_definitions_hold_one_graph_from_bronze_to_gold(settings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    keys = {tuple(k.path) for k in graph.get_all_asset_keys()}
    expected = {("bronze", t) for t in BRONZE} | {("silver", t) for t in SILVER} | {("gold", t) for t in GOLD}
    oilgas = {("bronze", t) for t in OILGAS_BRONZE} | {("silver", t) for t in OILGAS_SILVER}
    assert keys == expected | oilgas | {("gold", t) for t in OILGAS_GOLD} | {("ml", t) for t in ML} | {
        ("maintenance", "iceberg_tables"),
        ("reports", "weekly_executive_report"),
        ("gold_restricted", "dim_customers_unmasked"),
        ("platform", "slo_report"),
    }

    # No dangling sources: every dependency is an asset this location materializes.
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.is_materializable, key
        assert node.group_name == key.path[0], key
        for parent in node.parent_keys:
            assert graph.get(parent).is_materializable, (key, parent)

    assert graph.get(dg.AssetKey(["silver", "stg_bookings"])).parent_keys == {dg.AssetKey(["bronze", "bookings"])}
    assert graph.get(dg.AssetKey(["silver", "stg_telemetry"])).parent_keys == {dg.AssetKey(["bronze", "telemetry"])}
    # The dimensions feed the facts: customers and vehicles are not islands.
    assert {dg.AssetKey(["gold", "dim_customers"]), dg.AssetKey(["gold", "dim_vehicles"])} <= graph.get(
        dg.AssetKey(["gold", "fct_bookings"])
    ).parent_keys
    assert dg.AssetKey(["gold", "dim_vehicles"]) in graph.get(dg.AssetKey(["gold", "fleet_health_daily"])).parent_keys
    # Weather from the API reaches the demand features through Silver.
    assert graph.get(dg.AssetKey(["silver", "stg_weather_forecasts"])).parent_keys == {
        dg.AssetKey(["bronze", "weather_forecasts"])
    }
    assert (
        dg.AssetKey(["silver", "weather_conditions"])
        in graph.get(dg.AssetKey(["gold", "demand_features_hourly"])).parent_keys
    )
    # The Python ML assets read dbt marts: data -> features -> candidate -> production model -> forecast.
    assert graph.get(dg.AssetKey(["ml", "demand_forecast"])).parent_keys == {
        dg.AssetKey(["gold", "demand_features_hourly"]),
        dg.AssetKey(["gold", "dim_stations"]),
        dg.AssetKey(["silver", "weather_conditions"]),  # the forecast day's weather is a model input
        dg.AssetKey(["ml", "demand_model"]),
    }
    assert graph.get(dg.AssetKey(["ml", "demand_training_features"])).parent_keys == {
        dg.AssetKey(["gold", "demand_features_hourly"]),
        dg.AssetKey(["gold", "dim_stations"]),
        dg.AssetKey(["silver", "weather_conditions"]),
    }
    assert graph.get(dg.AssetKey(["ml", "demand_model"])).parent_keys == {dg.AssetKey(["ml", "demand_model_candidate"])}


def connected_components(graph) -> list[set[dg.AssetKey]]:
    """The asset graph's weakly connected components (lineage edges in either direction)."""
    unseen, components = set(graph.get_all_asset_keys()), []
    while unseen:
        frontier, component = [unseen.pop()], set()
        while frontier:
            key = frontier.pop()
            component.add(key)
            node = graph.get(key)
            for neighbour in (node.parent_keys | node.child_keys) & unseen:
                unseen.discard(neighbour)
                frontier.append(neighbour)
        components.append(component)
    return components


def test_the_lineage_graph_is_one_connected_graph_per_source_domain(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    components = connected_components(graph)
    # Table upkeep reads and writes no data of the graph: it stands alone, outside every downstream selection.
    upkeep = {dg.AssetKey(["maintenance", "iceberg_tables"])}
    assert upkeep in components
    components.remove(upkeep)
    # The SLO report reads the event log, not the data: it stands alone too.
    slo = {dg.AssetKey(["platform", "slo_report"])}
    assert slo in components
    components.remove(slo)
    # The oil & gas domain shares no table with mobility: its production system and its finance feed
    # are one graph each, and everything else is the mobility graph.
    production = {"bronze/fields", "bronze/wells", "bronze/well_production", "silver/stg_fields", "silver/stg_wells"}
    production |= {"silver/stg_well_production", "gold/field_production_daily", "gold/field_production_variance"}
    finance = {f"bronze/{t}" for t in ("journal_lines", "journal_control_totals")}
    finance |= {f"silver/stg_{t}" for t in ("journal_lines", "journal_control_totals")}
    finance |= {"gold/trial_balance_daily", "gold/trial_balance_reconciliation"}
    named = sorted(({k.to_user_string() for k in c} for c in components), key=len)
    assert named[:2] == [finance, production], named
    assert len(named) == 3 and "gold/kpi_daily" in named[2], named


def test_partitions_and_backfill_policies(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    telemetry = graph.get(dg.AssetKey(["bronze", "telemetry"]))
    assert isinstance(telemetry.partitions_def, dg.HourlyPartitionsDefinition)
    assert telemetry.partitions_def.get_first_partition_key() == "2026-10-01-00:00"
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if tuple(key.path) in DAILY | OILGAS_DAILY:
            assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition), key
            assert node.backfill_policy == dg.BackfillPolicy.single_run(), key
        elif key.path == ["platform", "slo_report"]:  # a day's figures, one run per day
            assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition), key
        elif key.path == ["reports", "weekly_executive_report"]:
            assert isinstance(node.partitions_def, dg.WeeklyPartitionsDefinition), key
            assert node.partitions_def.get_first_partition_key() == "2026-10-05"  # the first Monday
        elif tuple(key.path) in RETRAINING:
            assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition), key
            assert node.backfill_policy == dg.BackfillPolicy.multi_run(1), key
        elif tuple(key.path) in OILGAS_HOURLY | {("bronze", "telemetry")}:
            assert isinstance(node.partitions_def, dg.HourlyPartitionsDefinition), key
            assert node.backfill_policy == dg.BackfillPolicy.single_run(), key
        else:
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
    assert {j.name for j in defs.jobs} == {
        "extract_oltp",
        "refresh_unpartitioned",
        "load_hourly",
        "build_daily",
        "forecast_daily",
        "fetch_weather",
        "publish_weekly_report",
        "maintain_tables",
        "retrain_demand_model",
        "report_slo",
    }
    assert defs.resolve_job_def("report_slo").asset_layer.selected_asset_keys == {
        dg.AssetKey(["platform", "slo_report"])
    }
    # Upkeep runs on its own clock, never as part of the hourly OLTP refresh.
    assert defs.resolve_job_def("maintain_tables").asset_layer.selected_asset_keys == {
        dg.AssetKey(["maintenance", "iceberg_tables"])
    }
    # The weather API has a job of its own: the hourly refresh never calls it.
    assert defs.resolve_job_def("fetch_weather").asset_layer.selected_asset_keys == {
        dg.AssetKey(["bronze", "weather_forecasts"])
    }
    assert dg.AssetKey(["bronze", "weather_forecasts"]) not in (
        defs.resolve_job_def("extract_oltp").asset_layer.selected_asset_keys
    )
    # A job runs in one code location: the hourly extraction holds Bronze only, the models are another job.
    assert {k.path[0] for k in defs.resolve_job_def("extract_oltp").asset_layer.selected_asset_keys} == {"bronze"}
    assert {k.path[0] for k in defs.resolve_job_def("refresh_unpartitioned").asset_layer.selected_asset_keys} == {
        "silver",
        "gold",
        "gold_restricted",
    }
    assert {k.to_user_string() for k in defs.resolve_job_def("forecast_daily").asset_layer.selected_asset_keys} == {
        "ml/demand_forecast"
    }
    # The retraining assets belong to their own job only: a backfill of the daily models trains no model.
    retraining = defs.resolve_job_def("retrain_demand_model").asset_layer.selected_asset_keys
    assert {tuple(k.path) for k in retraining} == RETRAINING
    assert not retraining & defs.resolve_job_def("build_daily").asset_layer.selected_asset_keys


def test_each_drop_feed_has_its_own_sensor_in_the_hourly_job(settings):
    defs = build_definitions(settings)
    feeds = {"telemetry", "journal_lines", "journal_control_totals"}
    assert defs.resolve_job_def("load_hourly").asset_layer.selected_asset_keys == {
        dg.AssetKey(["bronze", feed]) for feed in feeds
    }
    for feed in feeds:
        sensor = defs.resolve_sensor_def(f"{feed}_drop_sensor")
        # the hourly job, not an implicit asset job: its runs queue with load_hourly's priority
        assert sensor.job_name == "load_hourly"
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_error_severity_dbt_tests_are_blocking_checks(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    specs = {(tuple(k.asset_key.path), k.name): graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert specs[(("gold", "kpi_daily"), "unique_kpi_daily_kpi_date")].blocking
    assert specs[(("bronze", "telemetry"), "row_count_matches_manifest")].blocking
    assert not specs[(("bronze", "telemetry"), "speed_in_range")].blocking


def ui_backfill_targets(graph, selection: list[dg.AssetKey], partition_names: list[str]) -> dict[str, set[str]]:
    """What the UI's launcher (GraphQL `launchPartitionBackfill` with an asset selection) would target:
    the same `PartitionBackfill.from_asset_partitions` call, partition keys per asset."""
    from dagster._core.execution.backfill import PartitionBackfill

    with dg.instance_for_test() as instance:
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="ui-backfill",
            asset_graph=graph,
            partition_names=partition_names,
            asset_selection=selection,
            backfill_timestamp=datetime(2026, 10, 5, tzinfo=UTC).timestamp(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
    target = backfill.asset_backfill_data.target_subset
    return {key.to_user_string(): set(target.get_partitions_subset(key).get_partition_keys()) for key in selection}


def test_a_ui_backfill_over_bronze_hours_and_daily_models_targets_every_selected_asset(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    telemetry = dg.AssetKey(["bronze", "telemetry"])
    # the weekly report is downstream too, but published per week by its own schedule, not in a data backfill
    data = dg.AssetSelection.assets(telemetry).downstream() - dg.AssetSelection.groups("reports")
    downstream = sorted(data.resolve(graph) - {telemetry}, key=lambda k: k.to_user_string())
    assert {tuple(k.path) for k in downstream} == {
        ("silver", "stg_telemetry"),
        ("silver", "telemetry_clean"),
        ("silver", "telemetry_quarantine"),
        ("gold", "fleet_health_daily"),
        ("gold", "kpi_daily"),
    }
    hours = [f"2026-10-02-{hour:02d}:00" for hour in range(24)]
    targets = ui_backfill_targets(graph, [telemetry, *downstream], hours)
    assert targets.pop("bronze/telemetry") == set(hours)
    # every daily asset gets the day those hours make up (before the mapping only Bronze was targeted)
    assert targets == {key.to_user_string(): {"2026-10-02"} for key in downstream}

    daily = sorted((dg.AssetKey(list(path)) for path in DAILY), key=lambda k: k.to_user_string())

    # the daily models alone, with daily keys, over two days
    assert ui_backfill_targets(graph, daily, ["2026-10-02", "2026-10-03"]) == {
        key.to_user_string(): {"2026-10-02", "2026-10-03"} for key in daily
    }


def test_every_asset_has_an_owner_from_the_policy_table(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    owners = {key.to_user_string(): graph.get(key).owners for key in graph.get_all_asset_keys()}
    assert {key for key, listed in owners.items() if not listed} == set()
    # Each group's owners are exactly its row of the table (one place decides, definitions.py applies it).
    by_group = {}
    for key in graph.get_all_asset_keys():
        by_group.setdefault(graph.get(key).group_name, set()).add(tuple(graph.get(key).owners))
    assert by_group == {
        "bronze": {("team:data-platform",)},
        "silver": {("team:data-platform",)},
        "gold": {("team:analytics-engineering",)},
        "gold_restricted": {("team:analytics-engineering", "privacy@strata.example")},
        "ml": {("team:data-science",)},
        "reports": {("team:analytics-engineering",)},
        "maintenance": {("team:data-platform",)},
        "platform": {("team:data-platform",)},
    }
