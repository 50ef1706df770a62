"""Column-schema-change checks on published tables: a table that gains, loses or retypes a column since
the previous run fails its check, naming the column and both types, also when each run is a range of
days (Dagster's own builder compares the two newest materializations, which a range run writes both).

The table is a real DuckDB table, and its schema reaches the materialization through the same code
the dbt models use (`information_schema` -> `table_metadata`)."""

from pathlib import Path

import dagster as dg
import duckdb

from assets.quality.schema_change import CHECK_NAME, build_schema_change_checks
from assets.transform.dbt_metadata import ModelTable, TableFacts, table_metadata
from definitions import build_definitions
from resources.settings import StrataSettings

DAYS = dg.DailyPartitionsDefinition(start_date="2026-10-01", end_date="2026-10-03")
KEY = dg.AssetKey(["gold", "rides"])
V1 = "SELECT 1::INTEGER AS ride_id, 'a'::VARCHAR AS customer, 2.5::DOUBLE AS fare"
# customer removed, fare retyped, seats added
V2 = "SELECT 1::INTEGER AS ride_id, 2.5::DECIMAL(10, 2) AS fare, 4::INTEGER AS seats"


def rides_asset(database: Path, select: list[str]) -> dg.AssetsDefinition:
    @dg.asset(key=KEY, partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
    def rides(context: dg.AssetExecutionContext) -> None:
        with duckdb.connect(str(database)) as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS gold")
            con.execute(f"CREATE OR REPLACE TABLE gold.rides AS {select[0]}")
            columns = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'gold' AND table_name = 'rides' ORDER BY ordinal_position"
            ).fetchall()
        metadata = table_metadata(ModelTable("gold", "rides"), TableFacts(columns=[(n, str(t)) for n, t in columns]))
        for partition in context.partition_keys:
            context.add_asset_metadata(metadata, partition_key=partition)

    return rides


def run_range(asset, checks, instance) -> dg.AssetCheckEvaluation:
    result = dg.materialize(
        [asset, *checks],
        instance=instance,
        tags={"dagster/asset_partition_range_start": "2026-10-01", "dagster/asset_partition_range_end": "2026-10-02"},
    )
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK_NAME and evaluation.asset_key == KEY
    return evaluation


def test_a_column_added_removed_or_retyped_fails_the_check_with_the_exact_columns(tmp_path: Path):
    select = [V1]
    asset = rides_asset(tmp_path / "w.duckdb", select)
    checks = build_schema_change_checks({KEY: dg.AssetCheckSeverity.WARN})
    with dg.instance_for_test() as instance:
        first = run_range(asset, checks, instance)
        assert first.passed and first.description == "No earlier run materialized the asset"
        same = run_range(asset, checks, instance)
        assert same.passed, same.description
        select[0] = V2
        changed = run_range(asset, checks, instance)
        assert not changed.passed
        assert changed.severity == dg.AssetCheckSeverity.WARN
        assert changed.description == (
            "Column schema changed since the previous run.\n"
            "Added columns: seats (INTEGER)\n"
            "Removed columns: customer (VARCHAR)\n"
            "Column type changes: fare: DOUBLE -> DECIMAL(10,2)"
        )
        assert changed.metadata["strata/schema_changes"].value == {
            "added": {"seats": "INTEGER"},
            "removed": {"customer": "VARCHAR"},
            "retyped": {"fare": "DOUBLE -> DECIMAL(10,2)"},
        }
        # The next run with the new schema compares with the changed run: nothing changed since.
        assert run_range(asset, checks, instance).passed


def test_dagsters_own_builder_misses_a_change_made_by_a_range_run(tmp_path: Path):
    """Why Strata has its own check: the builder's two newest materializations are the same run's."""
    select = [V1]
    asset = rides_asset(tmp_path / "w.duckdb", select)
    builder_checks = dg.build_column_schema_change_checks(assets=[KEY])
    with dg.instance_for_test() as instance:
        run_range(asset, builder_checks, instance)
        select[0] = V2
        assert run_range(asset, builder_checks, instance).passed  # the change went unseen


def test_every_dbt_model_and_gold_table_has_the_check(settings: StrataSettings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    checked = {k.asset_key for k in graph.asset_check_keys if k.name == CHECK_NAME}
    dbt_and_gold = {k for k in graph.get_all_asset_keys() if k.path[0] in ("silver", "gold", "gold_restricted")}
    assert checked == dbt_and_gold and dg.AssetKey(["gold", "kpi_daily"]) in checked
    # The daily build runs the checks of the models it builds.
    build_daily = defs.resolve_job_def("build_daily").asset_layer.asset_graph.asset_check_keys
    assert dg.AssetCheckKey(dg.AssetKey(["gold", "kpi_daily"]), CHECK_NAME) in build_daily
