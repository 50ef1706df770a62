"""The whole graph on two days of tiny demo data: Gold equals the generator's ground truth, and a
repeated backfill changes neither row counts nor checksums."""

from datetime import timedelta
from decimal import Decimal

import dagster as dg
import pytest

from definitions import build_definitions
from jobs.backfill import run_backfill, table_row_counts
from resources.iceberg import IcebergCatalog
from tests.conftest import TEST_START
from tests.support import fingerprints, generate_demo, warehouse_tables

DAYS = 2
pytestmark = pytest.mark.slow  # whole-graph runs: in CI and `make test`, skipped by `make test-fast`


@pytest.fixture
def backfilled(settings):
    truth = generate_demo(settings, TEST_START, DAYS)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    summary = run_backfill(defs, instance, TEST_START, TEST_START + timedelta(days=DAYS))
    return truth, defs, instance, summary


def test_every_asset_materializes_and_gold_matches_ground_truth(backfilled, settings):
    truth, defs, instance, summary = backfilled
    assert summary.success, summary
    assert summary.checks_failed == []
    assert summary.checks_passed >= 100  # every dbt test ran as an asset check

    graph = defs.resolve_asset_graph()
    materialized = {
        key for key in graph.get_all_asset_keys() if instance.get_latest_materialization_event(key) is not None
    }
    assert materialized == set(graph.get_all_asset_keys())

    counts = table_row_counts(defs)
    for table in ("customers", "stations", "vehicles", "bookings", "payments", "telemetry"):
        assert counts[f"bronze.{table}"] == truth["row_counts"][table], table

    tables = warehouse_tables(settings)
    kpi = tables["gold.kpi_daily"].to_pylist()
    assert {str(r["kpi_date"]): r["revenue_cents"] for r in kpi} == truth["daily_revenue_cents"]

    per_status: dict[str, dict[str, int]] = {}
    for r in tables["gold.fct_bookings"].to_pylist():
        day = per_status.setdefault(str(r["booking_date"]), {})
        day[r["status"]] = day.get(r["status"], 0) + 1
    assert per_status == truth["bookings_per_status"]

    km = {}
    for r in tables["gold.fleet_health_daily"].to_pylist():
        km.setdefault(str(r["health_date"]), {})[str(r["vehicle_id"])] = round(r["km_driven"], 6)
    assert km == truth["km_driven_per_vehicle"]

    assert_kpi_daily_matches_truth(tables["gold.kpi_daily"].to_pylist(), truth)
    telemetry_per_day: dict[str, int] = {}
    for r in tables["silver.telemetry_clean"].select(["reading_date"]).to_pylist():
        telemetry_per_day[str(r["reading_date"])] = telemetry_per_day.get(str(r["reading_date"]), 0) + 1
    assert telemetry_per_day == truth["telemetry_rows_per_day"]
    assert_dimensions_equal_source(tables, settings)
    assert_forecast_follows_its_inputs(settings, tables)

    # A second backfill of the same window is idempotent: same rows, same content.
    before = fingerprints(tables)
    bronze_before = {k: v for k, v in counts.items() if k.startswith("bronze.")}
    again = run_backfill(defs, instance, TEST_START, TEST_START + timedelta(days=DAYS))
    assert again.success
    assert fingerprints(warehouse_tables(settings)) == before
    assert {k: v for k, v in table_row_counts(defs).items() if k.startswith("bronze.")} == bronze_before


def test_bronze_materializations_carry_the_audit_metadata(backfilled):
    truth, _defs, instance, _ = backfilled
    event = instance.get_latest_materialization_event(dg.AssetKey(["bronze", "bookings"]))
    meta = event.asset_materialization.metadata
    for key in (
        "dagster/row_count",
        "dagster/table_name",
        "dagster/uri",
        "dagster/column_schema",
        "strata/rows_in",
        "strata/rows_out",
        "strata/checksum",
        "strata/data_window",
        "strata/snapshot_id",
        "strata/git_sha",
    ):
        assert key in meta, key
    assert meta["dagster/row_count"].value == truth["row_counts"]["bookings"]
    assert meta["dagster/table_name"].value == "bronze.bookings"
    assert len(meta["strata/checksum"].value) == 64

    gold = instance.get_latest_materialization_event(dg.AssetKey(["gold", "kpi_daily"]))
    gold_meta = gold.asset_materialization.metadata
    # The range run's last day: its own window, not the run's (tests/test_partition_metadata.py checks each day).
    assert gold.asset_materialization.partition == "2026-10-02"
    assert gold_meta["strata/data_window"].value == "[2026-10-02, 2026-10-03)"
    assert set(gold_meta["strata/input_snapshots"].value) == {
        "customers",
        "stations",
        "vehicles",
        "bookings",
        "payments",
        "telemetry",
    }


def assert_kpi_daily_matches_truth(kpi: list[dict], truth: dict) -> None:
    """Every column of every kpi_daily row, recomputed from the generator's ground truth."""
    expected = {}
    for day in sorted(set(truth["bookings_per_status"]) | set(truth["daily_revenue_cents"])):
        statuses = truth["bookings_per_status"].get(day, {})
        km = truth["km_driven_per_vehicle"].get(day, {})
        revenue = truth["daily_revenue_cents"].get(day, 0)
        expected[day] = {
            "bookings_total": sum(statuses.values()),
            **{f"bookings_{s}": statuses.get(s, 0) for s in ("reserved", "active", "completed", "cancelled")},
            "revenue_cents": revenue,
            "revenue_eur": Decimal(revenue) / 100,
            "km_driven": round(sum(km.values()), 6),
            "active_vehicles": len(km),
        }
    actual = {str(r.pop("kpi_date")): r for r in kpi}
    assert set(actual) == set(expected)
    for day, row in expected.items():
        assert actual[day].pop("km_driven") == pytest.approx(row.pop("km_driven"), abs=1e-5), day
        assert actual[day] == row, day


def assert_dimensions_equal_source(tables: dict, settings) -> None:
    """The Gold dimensions hold exactly the source's current rows (the OLTP database is the truth)."""
    from resources.source_db import SourceDatabase

    source = SourceDatabase(url=settings.source_database_url)
    for dimension, query, columns in (
        ("gold.dim_stations", "SELECT station_id, station_name, city, capacity FROM stations",
         ["station_id", "station_name", "city", "capacity"]),
        ("gold.dim_customers", "SELECT customer_id, full_name, email, city, segment FROM customers",
         ["customer_id", "full_name", "email", "city", "segment"]),
        ("gold.dim_vehicles", "SELECT vehicle_id, vehicle_type, model, home_station_id FROM vehicles",
         ["vehicle_id", "vehicle_type", "model", "home_station_id"]),
    ):  # fmt: skip
        expected = sorted(tuple(row.values()) for row in source.read_arrow(query).to_pylist())
        actual = sorted(tuple(r[c] for c in columns) for r in tables[dimension].to_pylist())
        assert actual == expected, dimension


def assert_forecast_follows_its_inputs(settings, tables: dict) -> None:
    """Row by row: tomorrow's forecast for a station and hour is today's bookings there, over capacity."""
    forecast = IcebergCatalog.from_settings(settings).load().load_table("ml.demand_forecast").scan().to_arrow()
    capacity = {r["station_id"]: r["capacity"] for r in tables["gold.dim_stations"].to_pylist()}
    features = {
        (r["feature_date"], r["start_station_id"], r["hour_of_day"]): r["bookings_started"]
        for r in tables["gold.demand_features_hourly"].to_pylist()
    }
    rows = forecast.to_pylist()
    assert len(rows) == len(features) > 0
    for r in rows:
        bookings = features[(r["feature_date"], r["start_station_id"], r["hour_of_day"])]
        assert r["forecast_date"] == r["feature_date"] + timedelta(days=1)
        assert r["expected_bookings"] == bookings
        assert r["expected_utilisation"] == pytest.approx(bookings / capacity[r["start_station_id"]])
