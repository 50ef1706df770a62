"""Great Expectations suites as asset checks: parsing, blocking vs warning, the Silver contract's
quarantine, and a new suite file becoming new checks without code changes."""

import json
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.drop_protocol import drop_prefix
from assets.quality_checks import SuiteFileError, build_quality_checks, load_suite_files, parse_suite_file
from definitions import build_definitions
from demo.drop_producer import write_drop
from jobs.backfill import run_backfill
from resources.iceberg import IcebergCatalog
from resources.source_db import connect_adbc
from tests.conftest import TEST_START
from tests.support import generate_demo, warehouse_tables

BAD_HOUR = datetime(2026, 10, 1, 9)


def write_suite(folder: Path, name: str, expectations: list[dict]) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"name": name, "expectations": expectations}))
    return path


def test_suite_files_become_checks_with_their_severity():
    suites = {s.suite["name"]: s for s in load_suite_files()}
    assert {"bronze.telemetry", "bronze.bookings", "bronze.payments"} <= set(suites)
    telemetry = {c.name: c.blocking for c in suites["bronze.telemetry"].checks}
    assert telemetry["row_count_matches_manifest"] is True
    assert telemetry["speed_in_range"] is False  # a warning: Bronze keeps raw rows, Silver quarantines them


def test_a_new_suite_file_adds_checks_without_code_changes(tmp_path):
    write_suite(
        tmp_path,
        "bronze.stations",
        [
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "capacity", "min_value": 1},
             "severity": "critical", "meta": {"check": "capacity_positive"}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "city"},
             "severity": "warning", "meta": {"check": "city_present"}},
        ],
    )  # fmt: skip
    checks = build_quality_checks({dg.AssetKey(["bronze", "stations"]): None}, load_suite_files(tmp_path))
    specs = {spec.name: spec.blocking for spec in checks[0].check_specs}
    assert specs == {"capacity_positive": True, "city_present": False}


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        ({"type": "expect_column_to_exist", "kwargs": {"column": "x"}}, "needs meta.check"),
        ({"type": "expect_column_to_exist", "kwargs": {"column": "x"}, "meta": {"check": "c"}, "severity": "info"},
         "severity must be one of"),
    ],
)  # fmt: skip
def test_a_broken_suite_file_is_refused_naming_the_file(tmp_path, expectation, message):
    path = write_suite(tmp_path, "bronze.stations", [expectation])
    with pytest.raises(SuiteFileError, match=rf"bronze.stations.json: expectation 0 .*{message}"):
        parse_suite_file(path)


def check_outcomes(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def materialized_in(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.mark.slow
def test_bad_telemetry_values_warn_in_bronze_and_are_quarantined_in_silver(settings):
    generate_demo(settings, TEST_START, 1)
    drop = Path(settings.landing_root) / drop_prefix("telemetry", BAD_HOUR) / "part-00000.parquet"
    rows = pq.read_table(drop)
    speeds = rows.column("speed_kmh").to_pylist()
    speeds[0], speeds[1] = 300.0, -5.0
    battery = rows.column("battery_pct").to_pylist()
    battery[2] = 140.0
    bad = rows.set_column(4, "speed_kmh", pa.array(speeds)).set_column(5, "battery_pct", pa.array(battery))
    write_drop(Path(settings.landing_root), "telemetry", BAD_HOUR, [bad])  # a producer's (bad) re-delivery

    summary = run_backfill(
        build_definitions(settings), dg.DagsterInstance.ephemeral(), TEST_START, TEST_START + timedelta(days=1)
    )
    # Exactly the two range warnings fail, for the bad hour only; nothing is blocked.
    assert sorted(summary.checks_failed) == ["bronze/telemetry:battery_in_range", "bronze/telemetry:speed_in_range"]
    assert all(ok for _, _, ok, _ in summary.runs)

    tables = warehouse_tables(settings)
    quarantined = tables["silver.telemetry_quarantine"].to_pylist()
    assert sorted((r["rule"], r["offending_value"]) for r in quarantined) == [
        ("battery_pct_between_0_and_100", "140.0"),
        ("speed_kmh_between_0_and_250", "-5.0"),
        ("speed_kmh_between_0_and_250", "300.0"),
    ]
    assert all(r["dagster_run_id"] == summary.runs[2][1] for r in quarantined)  # the build_daily run
    # The good rows of the same partition are published; the three bad readings are not.
    clean = tables["silver.telemetry_clean"]
    bad_keys = {(r["vehicle_id"], r["ts"]) for r in quarantined}
    published = set(zip(clean.column("vehicle_id").to_pylist(), clean.column("ts").to_pylist(), strict=True))
    assert not bad_keys & published
    assert clean.num_rows == 10 * 42 * 24 - 3


def test_a_failing_critical_check_blocks_downstream_and_a_warning_does_not(settings):
    generate_demo(settings, TEST_START, 1)
    defs = build_definitions(settings)
    job = defs.resolve_job_def("refresh_unpartitioned")
    instance = dg.DagsterInstance.ephemeral()
    dbt_models = {key.to_user_string() for key in defs.resolve_assets_def(dg.AssetKey(["silver", "stg_bookings"])).keys}
    # stg_telemetry reads bronze.telemetry: load one hour so the Silver views can be built.
    defs.resolve_job_def("load_hourly").execute_in_process(instance=instance, partition_key="2026-10-01-00:00")

    # A warning-level failure: an implausible trip distance in the source.
    with connect_adbc(settings.source_database_url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE bookings SET distance_km = 900 WHERE booking_id = (SELECT min(booking_id) FROM bookings)")
        conn.commit()
    warned = job.execute_in_process(instance=instance, raise_on_error=False)
    assert warned.success
    failed = {key for key, ok in check_outcomes(warned).items() if not ok}
    assert failed == {("bronze/bookings", "distance_plausible")}
    assert dbt_models <= materialized_in(warned)

    # A critical failure: a second copy of a booking written into Bronze behind the loader's back.
    catalog = IcebergCatalog(uri=settings.iceberg_catalog_uri, warehouse=settings.iceberg_warehouse)
    bookings = catalog.load().load_table("bronze.bookings")
    copy = bookings.scan(limit=1).to_arrow()
    bookings.append(copy)
    blocked = job.execute_in_process(instance=instance, raise_on_error=False)
    failed = {key for key, ok in check_outcomes(blocked).items() if not ok}
    assert failed == {("bronze/bookings", "booking_id_unique"), ("bronze/bookings", "distance_plausible")}
    assert "bronze/bookings" in materialized_in(blocked)
    assert not dbt_models & materialized_in(blocked)  # nothing downstream was published


def test_bookings_breaking_the_silver_contract_are_quarantined_and_the_rest_published(settings):
    generate_demo(settings, TEST_START, 1)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    defs.resolve_job_def("load_hourly").execute_in_process(instance=instance, partition_key="2026-10-01-00:00")
    with connect_adbc(settings.source_database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT booking_id FROM bookings ORDER BY booking_id LIMIT 2")
        unknown, too_long = [row[0] for row in cur.fetchall()]
        cur.execute(f"UPDATE bookings SET status = 'lost' WHERE booking_id = {unknown}")
        cur.execute(f"UPDATE bookings SET status = 'completed-and-then-some' WHERE booking_id = {too_long}")
        cur.execute("SELECT count(*) FROM bookings")
        total = cur.fetchone()[0]
        conn.commit()

    result = defs.resolve_job_def("refresh_unpartitioned").execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    failed = {key for key, ok in check_outcomes(result).items() if not ok}
    # Bronze only warns; staging's accepted_values test only warns; nothing blocks.
    assert ("bronze/bookings", "status_allowed") in failed
    assert "silver/bookings" in materialized_in(result)

    tables = warehouse_tables(settings)
    quarantined = sorted(
        (r["booking_id"], r["rule"], r["offending_value"]) for r in tables["silver.bookings_quarantine"].to_pylist()
    )
    assert quarantined == sorted(
        [
            (unknown, "status_allowed", "lost"),
            (too_long, "status_allowed", "completed-and-then-some"),
            (too_long, "status_at_most_16_chars", "completed-and-then-some"),
        ]
    )
    published = tables["silver.bookings"].column("booking_id").to_pylist()
    assert unknown not in published and too_long not in published
    assert len(published) == total - 2  # every other booking is published, none silently dropped
