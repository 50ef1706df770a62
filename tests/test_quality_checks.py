"""Great Expectations suites as asset checks: parsing, blocking vs warning, the Silver contract's
quarantine, and a new suite file becoming new checks without code changes."""

import json
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from assets.quality.checks import build_quality_checks, reported_parameters
from assets.quality.gx_validation import validate
from assets.quality.suites import (
    SuiteFileError,
    columns_to_read,
    load_suite_files,
    parse_suite_file,
    referenced_columns,
)
from definitions import build_definitions
from resources.iceberg import IcebergCatalog
from resources.source_db import connect_adbc
from resources.warehouse import Warehouse
from tests.conftest import TEST_START
from tests.support import generate_demo, refresh_unpartitioned

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
    silver = {c.name: c.blocking for c in suites["silver.telemetry_clean"].checks}
    assert silver["speed_in_range"] is True  # Silver publishes only what keeps the contract


def test_checks_that_read_the_warehouse_share_its_pool(settings):
    checks = build_definitions(settings).asset_checks
    pools = {
        key.asset_key.to_user_string(): checks_def.node_def.pool
        for checks_def in checks
        for key in checks_def.check_keys
        if key.name == "booking_id_unique"
    }
    assert pools == {"bronze/bookings": None, "silver/bookings": "warehouse"}


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


def test_a_check_reads_exactly_the_columns_its_suite_names():
    suites = {s.suite["name"]: s for s in load_suite_files()}
    named = ("vehicle_id", "speed_kmh", "battery_pct", "lat", "lon", "ts")  # in the suite's order
    assert referenced_columns(suites["bronze.telemetry"]) == named
    telemetry_table = ["vehicle_id", "ts", "lat", "lon", "speed_kmh", "battery_pct", "odometer_km", "fault_code"]
    assert columns_to_read(suites["bronze.telemetry"], telemetry_table) == telemetry_table[:6]  # in table order


@pytest.mark.parametrize(
    ("expectations", "table", "read"),
    [
        # A column the table lacks is not read (GX reports it missing, as when reading everything).
        ([{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "gone"}},
          {"type": "expect_column_pair_values_to_be_equal", "kwargs": {"column_A": "b", "column_B": "a"}}],
         ["a", "b", "c"], ["a", "b"]),
        # Counting rows needs no column, but some column must be read to have the rows.
        ([{"type": "expect_table_row_count_to_equal", "kwargs": {"value": 3}}], ["a", "b"], ["a"]),
        # Expectations that may look at any column read the whole table.
        ([{"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": ["a"]}}], ["a", "b"], ["a", "b"]),
        ([{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a", "row_condition": 'b=="x"',
           "condition_parser": "pandas"}}], ["a", "b"], ["a", "b"]),
    ],
)  # fmt: skip
def test_columns_to_read_keep_every_column_an_expectation_may_look_at(tmp_path, expectations, table, read):
    for index, expectation in enumerate(expectations):
        expectation["meta"] = {"check": f"check_{index}"}
    suite = parse_suite_file(write_suite(tmp_path, "bronze.stations", expectations))
    assert columns_to_read(suite, table) == read


def test_validation_reports_counts_and_a_sample_of_offending_values_with_the_given_parameters(tmp_path):
    import pandas as pd

    expectations = [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "speed", "min_value": 0, "max_value": 250},
         "severity": "warning", "meta": {"check": "speed_in_range"}},
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["vehicle", "minute"]},
         "severity": "warning", "meta": {"check": "one_reading"}},
        {"type": "expect_table_row_count_to_equal", "kwargs": {"value": {"$PARAMETER": "rows_accepted"}},
         "severity": "critical", "meta": {"check": "row_count"}},
    ]  # fmt: skip
    suite = parse_suite_file(write_suite(tmp_path, "bronze.readings", expectations))
    speeds = [10.0, 300.0, 20.0, -1.0] + [30.0 + i for i in range(16)] + [400.0 + i for i in range(12)]
    vehicles = [1, 1, 1, 2, *range(3, 31)]  # vehicle 1 reads twice at minute 0
    rows = pd.DataFrame({"vehicle": vehicles, "minute": [0, 0, 1, 0] + [0] * 28, "speed": speeds})

    outcomes = {o.check: o for o in validate(suite, rows, {"rows_accepted": 32})}
    speed = outcomes["speed_in_range"]
    assert not speed.success
    assert speed.metadata["unexpected_count"] == 14
    assert speed.metadata["unexpected_percent"] == pytest.approx(100 * 14 / 32)
    assert speed.metadata["unexpected_sample"].value == [300.0, -1.0] + [400.0 + i for i in range(8)]  # first 10
    unique = outcomes["one_reading"]
    assert (unique.success, unique.metadata["unexpected_count"]) == (False, 2)
    assert unique.metadata["unexpected_sample"].value == ["{'vehicle': 1, 'minute': 0}"] * 2
    assert (outcomes["row_count"].success, outcomes["row_count"].metadata["observed_value"]) == (True, 32)

    # The suite's GX objects are reused within the process: new parameters and an edited suite still apply.
    assert not {o.check: o for o in validate(suite, rows, {"rows_accepted": 30})}["row_count"].success
    expectations[0]["kwargs"]["max_value"] = 500
    edited = parse_suite_file(write_suite(tmp_path, "bronze.readings", expectations))
    assert {o.check: o for o in validate(edited, rows, {"rows_accepted": 32})}["speed_in_range"].metadata[
        "unexpected_count"
    ] == 1


def test_gx_still_reads_the_fingerprint_switch_the_checks_turn_off():
    """`gx_context` sets HASH_THRESHOLD = 0 so GX does not md5 every validated frame; if a GX upgrade
    stops reading it, validation is still correct but slower: move the switch along."""
    import inspect

    from great_expectations.execution_engine.pandas_execution_engine import PandasExecutionEngine

    assert "HASH_THRESHOLD" in inspect.getsource(PandasExecutionEngine.get_batch_data_and_markers)


@pytest.mark.parametrize(
    ("metadata", "accepted"),
    [
        ({"strata/rows_in": 1000, "strata/rows_quarantined": 7}, 993),
        ({"strata/rows_in": 1000, "strata/rows_quarantined": 0}, 1000),
        ({"strata/rows_in": 1000}, 1000),
        ({"strata/rows_quarantined": 7}, None),
    ],
)
def test_rows_accepted_are_the_rows_in_minus_those_quarantined(metadata, accepted):
    params = reported_parameters({**metadata, "strata/checksum": "abc", "dagster/row_count": 5})
    assert params.get("rows_accepted") == accepted
    assert {k: v for k, v in params.items() if k != "rows_accepted"} == {
        key.removeprefix("strata/"): value for key, value in metadata.items()
    }


def check_outcomes(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def materialized_in(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_a_failing_critical_check_blocks_downstream_and_a_warning_does_not(settings):
    generate_demo(settings, TEST_START, 1)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    dbt_models = {key.to_user_string() for key in defs.resolve_assets_def(dg.AssetKey(["silver", "stg_bookings"])).keys}
    # stg_telemetry reads bronze.telemetry: load one hour so the Silver views can be built.
    defs.resolve_job_def("load_hourly").execute_in_process(instance=instance, partition_key="2026-10-01-00:00")

    # A warning-level failure: an implausible trip distance in the source.
    with connect_adbc(settings.source_database_url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE bookings SET distance_km = 900 WHERE booking_id = (SELECT min(booking_id) FROM bookings)")
        conn.commit()
    warned = refresh_unpartitioned(defs, instance, raise_on_error=False)
    assert warned.success
    failed = {key for key, ok in check_outcomes(warned).items() if not ok}
    assert failed == {("bronze/bookings", "distance_plausible"), ("silver/bookings", "distance_plausible")}
    assert dbt_models <= materialized_in(warned)

    # A critical failure: a second copy of a booking written into Bronze behind the loader's back.
    catalog = IcebergCatalog(uri=settings.iceberg_catalog_uri, warehouse=settings.iceberg_warehouse)
    bookings = catalog.load().load_table("bronze.bookings")
    copy = bookings.scan(limit=1).to_arrow()
    bookings.append(copy)
    blocked = refresh_unpartitioned(defs, instance, raise_on_error=False)
    failed = {key for key, ok in check_outcomes(blocked).items() if not ok}
    assert failed == {("bronze/bookings", "booking_id_unique"), ("bronze/bookings", "distance_plausible")}
    assert "bronze/bookings" in materialized_in(blocked)
    assert not dbt_models & materialized_in(blocked)  # nothing downstream was published


READINGS_SUITE = [
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "speed_kmh", "min_value": 0, "max_value": 250},
     "severity": "critical", "meta": {"check": "speed_in_range"}},
    {"type": "expect_table_row_count_to_equal", "kwargs": {"value": {"$PARAMETER": "rows_in"}},
     "severity": "critical", "meta": {"check": "row_count_matches_manifest"}},
]  # fmt: skip


RUN_WINDOW = "[2026-10-01T00:00:00, 2026-10-01T03:00:00)"


def readings_of_hour(hour: datetime, rows: int, speed: float = 30.0):
    import pyarrow as pa

    return pa.table(
        {
            "ts": pa.array([hour + timedelta(minutes=minute) for minute in range(rows)], pa.timestamp("us")),
            "speed_kmh": pa.array([speed] * rows, pa.float64()),
        }
    )


@pytest.mark.parametrize("reported", ["per_partition", "run_totals"])
def test_a_range_run_records_each_partitions_own_check_result(tmp_path, reported):
    """Three hours in one run, each with its own row count and one with a bad reading: each hour is judged on
    its own rows, and its result is recorded for that hour (not once for the run, which the UI would show as
    three partitions never evaluated). The row count is judged against what was reported: each hour's own
    count, or, where the asset reported only run totals, the run's window as a whole."""
    import pyarrow as pa

    hourly = dg.HourlyPartitionsDefinition(start_date="2026-10-01-00:00", timezone="UTC")
    rows_per_hour = {"2026-10-01-00:00": 3, "2026-10-01-01:00": 5, "2026-10-01-02:00": 4}
    catalog = IcebergCatalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=f"file://{tmp_path / 'wh'}")

    @dg.asset(key=["bronze", "readings"], partitions_def=hourly, backfill_policy=dg.BackfillPolicy.single_run())
    def readings(context, iceberg: IcebergCatalog) -> dg.MaterializeResult:
        hours = []
        for key in context.partition_keys:
            start = hourly.time_window_for_partition_key(key).start.replace(tzinfo=None)
            speed = 400.0 if key == "2026-10-01-01:00" else 30.0  # one implausible hour
            hours.append(readings_of_hour(start, rows_per_hour[key], speed))
            if reported == "per_partition":
                window = f"[{start.isoformat()}, {(start + timedelta(hours=1)).isoformat()})"
                metadata = {"strata/rows_in": rows_per_hour[key], "strata/data_window": window}
                context.add_asset_metadata(metadata, partition_key=key)
        table = iceberg.load_or_create_table("bronze.readings", hours[0].schema)
        table.append(pa.concat_tables(hours))
        if reported == "per_partition":
            return dg.MaterializeResult()
        return dg.MaterializeResult(metadata={"strata/rows_in": 12, "strata/data_window": RUN_WINDOW})

    write_suite(tmp_path, "bronze.readings", READINGS_SUITE)
    suite = json.loads((tmp_path / "bronze.readings.json").read_text())
    suite["meta"] = {"strata": {"time_column": "ts"}}
    (tmp_path / "bronze.readings.json").write_text(json.dumps(suite))
    checks = build_quality_checks({readings.key: hourly}, load_suite_files(tmp_path))
    tags = {
        "dagster/asset_partition_range_start": "2026-10-01-00:00",
        "dagster/asset_partition_range_end": "2026-10-01-02:00",
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [readings, *checks],
            instance=instance,
            resources={"iceberg": catalog, "warehouse": Warehouse(duckdb_path=str(tmp_path / "unused.duckdb"))},
            tags=tags,
            raise_on_error=False,
        )
        evaluations = {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}
        assert {key: e.passed for key, e in evaluations.items()} == {
            ("speed_in_range", "2026-10-01-00:00"): True,
            ("speed_in_range", "2026-10-01-01:00"): False,
            ("speed_in_range", "2026-10-01-02:00"): True,
            ("row_count_matches_manifest", "2026-10-01-00:00"): True,
            ("row_count_matches_manifest", "2026-10-01-01:00"): True,
            ("row_count_matches_manifest", "2026-10-01-02:00"): True,
        }

        def of_check(name: str, entry: str) -> list:
            return [evaluations[(name, key)].metadata[entry].value for key in rows_per_hour]

        assert of_check("speed_in_range", "rows_validated") == [3, 5, 4]
        counted = of_check("row_count_matches_manifest", "rows_validated")
        judged = of_check("row_count_matches_manifest", "strata/evaluated_window")
        if reported == "run_totals":  # judged over the window the total was reported for, for each hour
            assert (counted, judged) == ([12, 12, 12], [RUN_WINDOW] * 3)
        else:
            assert (counted, len(set(judged))) == ([3, 5, 4], 3)
        assert not result.success  # the failed hour's check is critical: blocking, and it fails the step
        # What the UI reads: each hour's latest evaluation of the check, for that hour, and no unpartitioned one,
        # current (naming that hour's latest materialization, which the Checks tab requires).
        key = dg.AssetCheckKey(readings.key, "row_count_matches_manifest")
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
        statuses = {record.partition: record.status.value for record in history}
        assert statuses == dict.fromkeys(rows_per_hour, "SUCCEEDED")
        infos = instance.event_log_storage.get_asset_check_partition_info([key])
        assert {info.partition_key: info.is_current for info in infos} == dict.fromkeys(rows_per_hour, True)
