"""Each partition's truth, on a real two-day run of the whole graph (Bronze, dbt on DuckDB, the forecast):
every day of a daily range run gets its own materialization whose row count equals what the warehouse
(or Iceberg) holds for that day, the audit trail answers "how many rows did run X write to
gold/kpi_daily for day D", and the partitioned GX checks record a result for every partition that ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.ml.demand_forecast import FORECAST_TABLE
from audit.cli import main
from audit.record import AuditRecord, build_audit_record
from jobs.backfill import BackfillSummary
from resources.iceberg import IcebergCatalog
from resources.settings import StrataSettings
from resources.warehouse import Warehouse
from tests.conftest import TEST_START
from tests.support import backfilled_platform

pytestmark = pytest.mark.slow  # one whole-graph backfill for the module

DAYS = [TEST_START, TEST_START + timedelta(days=1)]
HOURS = [f"{day:%Y-%m-%d}-{hour:02d}:00" for day in DAYS for hour in range(24)]
# The daily dbt models and the column that says which day a row belongs to.
DAILY_MODELS = {
    "silver/telemetry_clean": ("silver.telemetry_clean", "reading_date"),
    "silver/telemetry_quarantine": ("silver.telemetry_quarantine", "reading_date"),
    "gold/fct_bookings": ("gold.fct_bookings", "booking_date"),
    "gold/fleet_health_daily": ("gold.fleet_health_daily", "health_date"),
    "gold/kpi_daily": ("gold.kpi_daily", "kpi_date"),
    "gold/demand_features_hourly": ("gold.demand_features_hourly", "feature_date"),
}


@dataclass
class Backfilled:
    settings: StrataSettings
    warehouse: Warehouse
    instance: dg.DagsterInstance
    summary: BackfillSummary

    def run_id(self, job: str) -> str:
        return next(run_id for name, run_id, _, _ in self.summary.runs if name == job)

    def materializations(self, asset: str, run_id: str) -> dict[str | None, dg.AssetMaterialization]:
        """This run's materializations of `asset`, by partition; fails if a partition has two."""
        records = self.instance.fetch_materializations(dg.AssetKey(asset.split("/")), limit=1000).records
        by_partition: dict[str | None, dg.AssetMaterialization] = {}
        for record in records:
            if record.run_id == run_id:
                event = record.asset_materialization
                assert event.partition not in by_partition, f"{asset}[{event.partition}] materialized twice"
                by_partition[event.partition] = event
        return by_partition


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backfilled]:
    with backfilled_platform(tmp_path_factory.mktemp("partition_metadata"), DAYS) as platform:
        settings, defs, instance, summary = platform
        yield Backfilled(settings, defs.resources["warehouse"], instance, summary)


def warehouse_rows_per_day(settings: StrataSettings, table: str, column: str) -> dict[str, int]:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        rows = con.execute(f"SELECT CAST({column} AS VARCHAR), count(*) FROM {table} GROUP BY 1").fetchall()
    return dict(rows)


def test_each_day_of_a_dbt_range_run_reports_its_own_rows(backfilled: Backfilled):
    run_id = backfilled.run_id("build_daily")
    for asset, (table, column) in DAILY_MODELS.items():
        events = backfilled.materializations(asset, run_id)
        assert sorted(events) == [f"{d:%Y-%m-%d}" for d in DAYS], asset  # one event per day, no copies
        in_warehouse = warehouse_rows_per_day(backfilled.settings, table, column)
        for day, event in events.items():
            meta = {key: value.value for key, value in event.metadata.items()}
            assert meta["dagster/partition_row_count"] == in_warehouse.get(day, 0), (asset, day)
            next_day = date.fromisoformat(day) + timedelta(days=1)
            assert meta["strata/data_window"] == f"[{day}, {next_day})"
            assert meta["dagster/row_count"] == sum(in_warehouse.values())
            assert meta["dagster/table_name"] == table
            assert column in [c.name for c in meta["dagster/column_schema"].columns]
    # The days really differ (the check above would pass on a copied value if they did not).
    fct = backfilled.materializations("gold/fct_bookings", run_id)
    counts = {day: event.metadata["dagster/partition_row_count"].value for day, event in fct.items()}
    assert len(set(counts.values())) == 2 and all(counts.values()), counts


def test_unpartitioned_models_report_table_and_view_rows_and_columns(backfilled: Backfilled):
    run_id = backfilled.run_id("refresh_unpartitioned")
    with backfilled.warehouse.connect(read_only=True) as con:  # the views read Bronze through iceberg_scan
        for asset in ("silver/stg_customers", "gold/dim_vehicles"):  # a view and a table
            table = asset.replace("/", ".")
            (event,) = backfilled.materializations(asset, run_id).values()
            rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            columns = [column[0] for column in con.execute(f"SELECT * FROM {table} LIMIT 0").description]
            assert event.metadata["dagster/row_count"].value == rows > 0
            assert event.metadata["dagster/table_name"].value == table
            schema = event.metadata["dagster/column_schema"].value
            assert [c.name for c in schema.columns] == columns
            assert "dagster/partition_row_count" not in event.metadata


def test_each_forecast_day_reports_its_own_rows_checksum_and_inputs(backfilled: Backfilled):
    run_id = backfilled.run_id("forecast_daily")
    events = backfilled.materializations("ml/demand_forecast", run_id)
    assert sorted(events) == [f"{d:%Y-%m-%d}" for d in DAYS]
    forecast = IcebergCatalog.from_settings(backfilled.settings).load().load_table(FORECAST_TABLE).scan().to_arrow()
    per_day = {}
    for row in forecast.select(["feature_date"]).to_pylist():
        per_day[str(row["feature_date"])] = per_day.get(str(row["feature_date"]), 0) + 1
    checksums = set()
    for day, event in events.items():
        meta = {key: value.value for key, value in event.metadata.items()}
        assert meta["dagster/partition_row_count"] == meta["strata/rows_out"] == per_day[day] > 0
        assert meta["strata/input_partitions"] == [f"gold/demand_features_hourly:{day}"]
        assert meta["strata/data_window"] == f"[{day}, {date.fromisoformat(day) + timedelta(days=1)})"
        assert meta["dagster/row_count"] == forecast.num_rows
        checksums.add(meta["strata/checksum"])
    assert len(checksums) == len(DAYS)


def test_audit_trail_answers_rows_written_to_a_table_for_a_day(backfilled: Backfilled, capsys):
    run_id = backfilled.run_id("build_daily")
    record: AuditRecord = build_audit_record(backfilled.instance, run_id, secrets=())
    kpi = warehouse_rows_per_day(backfilled.settings, "gold.kpi_daily", "kpi_date")
    fct = warehouse_rows_per_day(backfilled.settings, "gold.fct_bookings", "booking_date")
    for day in (f"{d:%Y-%m-%d}" for d in DAYS):
        assert record.partition_rows[f"gold/kpi_daily[{day}]"] == kpi[day] == 1
        assert record.partition_rows[f"gold/fct_bookings[{day}]"] == fct[day]
    # rows_out sums every partition's own rows (the forecast's days), not one copied value.
    forecast_run = backfilled.run_id("forecast_daily")
    forecast_days = backfilled.materializations("ml/demand_forecast", forecast_run).values()
    forecast_record = build_audit_record(backfilled.instance, forecast_run, secrets=())
    assert forecast_record.rows_out == sum(e.metadata["strata/rows_out"].value for e in forecast_days) > 0
    assert record.data_windows["gold/kpi_daily"] == f"[{DAYS[0]}, {DAYS[-1] + timedelta(days=1)})"

    # The CLI, from the event log: the run and that day's rows of the table asked for.
    day = f"{DAYS[1]:%Y-%m-%d}"
    assert main(["list", "--source", "instance", "--asset", "gold/kpi_daily", "--partition", day]) == 0
    listing = capsys.readouterr().out
    assert run_id in listing and "1 record(s)" in listing
    assert f"gold/kpi_daily[{day}]={kpi[day]}" in listing


def test_partitioned_checks_record_a_result_for_every_partition_that_ran(backfilled: Backfilled):
    instance = backfilled.instance
    for asset, check, partitions in (
        ("bronze/telemetry", "vehicle_id_not_null", HOURS),
        ("bronze/telemetry", "row_count_matches_manifest", HOURS),
        ("silver/telemetry_clean", "one_reading_per_vehicle_and_time", [f"{d:%Y-%m-%d}" for d in DAYS]),
    ):
        key = dg.AssetCheckKey(dg.AssetKey(asset.split("/")), check)
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=1000)
        by_partition = {record.partition: record.status.value for record in history}
        assert {p: by_partition.get(p) for p in partitions} == dict.fromkeys(partitions, "SUCCEEDED"), (asset, check)
        assert None not in by_partition  # no unpartitioned evaluation for a range run
        # Current: each names its partition's latest materialization (else the UI shows it as not evaluated).
        infos = instance.event_log_storage.get_asset_check_partition_info([key])
        current = {info.partition_key: info.is_current for info in infos}
        assert current == dict.fromkeys(partitions, True), (asset, check)


CHECK_EXECUTIONS = """
query($assetKey: AssetKeyInput!, $checkName: String!, $partition: String) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, partition: $partition, limit: 5) {
    status partition evaluation { success partition }
  }
}"""
CHECK_PARTITION_STATUSES = """
query($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) { ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks {
    name
    partitionStatuses { ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } } }
  } } } } }
}"""


def test_the_graphql_api_reports_each_partitions_check_as_passed(backfilled: Backfilled, tmp_path: Path):
    """What the UI's Checks tab reads, through the GraphQL API of a workspace loaded from definitions.py."""
    from dagster._core.test_utils import in_process_test_workspace
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster_graphql.test.utils import execute_dagster_graphql

    # definitions.py's module-level `defs` was built at import, before this module's environment was set
    # (its partitions would start elsewhere): the workspace loads definitions built from this environment.
    location = tmp_path / "location.py"
    location.write_text(
        "from definitions import build_definitions\n"
        "from resources.settings import load_settings\n"
        "defs = build_definitions(load_settings())\n"
    )
    origin = LoadableTargetOrigin(
        python_file=str(location), attribute="defs", working_directory=str(Path(__file__).parents[1])
    )
    with in_process_test_workspace(backfilled.instance, origin) as context:
        day = f"{DAYS[1]:%Y-%m-%d}"
        variables = {
            "assetKey": {"path": ["silver", "telemetry_clean"]},
            "checkName": "one_reading_per_vehicle_and_time",
            "partition": day,
        }
        result = execute_dagster_graphql(context, CHECK_EXECUTIONS, variables)
        assert not result.errors, result.errors
        latest = result.data["assetCheckExecutions"][0]
        assert latest == {"status": "SUCCEEDED", "partition": day, "evaluation": {"success": True, "partition": day}}

        bronze = {"assetKey": {"path": ["bronze", "telemetry"]}}
        result = execute_dagster_graphql(context, CHECK_PARTITION_STATUSES, bronze)
        assert not result.errors, result.errors
        checks = result.data["assetNodeOrError"]["assetChecksOrError"]["checks"]
        # partition_freshness judges the asset as a whole: it has no partition statuses.
        statuses = {
            check["name"]: check["partitionStatuses"]["ranges"] for check in checks if check["partitionStatuses"]
        }
        assert statuses["vehicle_id_not_null"] == [{"startKey": HOURS[0], "endKey": HOURS[-1], "status": "SUCCEEDED"}]
