"""Volume anomaly checks: a day with a tenth of the usual rows fails its check, a normal day passes, both
judged against the table's own trailing history as recorded by real materializations in the event log."""

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from assets.quality.volume_anomaly import (
    CHECK_NAME,
    VolumePolicy,
    build_volume_anomaly_checks,
    earlier_partitions,
    judge,
    robust_z,
)
from definitions import build_definitions
from jobs.policies import volume_policies
from resources.settings import StrataSettings

DAYS = dg.DailyPartitionsDefinition(start_date="2026-10-01", end_date="2026-11-01")
HOURS = dg.HourlyPartitionsDefinition(start_date="2026-10-01-00:00")
KEY = dg.AssetKey(["gold", "rides"])
DIM = dg.AssetKey(["bronze", "stations"])
# Fourteen ordinary days: about 1000 rows, a few dozen either way.
USUAL = [1000, 1040, 980, 1010, 995, 1060, 970, 1020, 1005, 990, 1030, 985, 1015, 1000]


def rides_asset(rows_by_day: dict[str, int]) -> dg.AssetsDefinition:
    """Reports each day's rows as the dbt models and Bronze loads do (`dagster/partition_row_count`)."""

    @dg.asset(key=KEY, partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
    def rides(context: dg.AssetExecutionContext) -> None:
        for day in context.partition_keys:
            context.add_asset_metadata(
                {"dagster/row_count": sum(rows_by_day.values()), "dagster/partition_row_count": rows_by_day[day]},
                partition_key=day,
            )

    return rides


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str | None, dg.AssetCheckEvaluation]:
    return {e.partition: e for e in result.get_asset_check_evaluations() if e.check_name == CHECK_NAME}


def run(asset, checks, instance, first: str, last: str) -> dict[str | None, dg.AssetCheckEvaluation]:
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    if first == last:
        tags = {"dagster/partition": first}
    result = dg.materialize([asset, *checks], instance=instance, tags=tags)
    assert result.success
    return evaluations(result)


def test_a_tenth_of_the_usual_volume_fails_and_a_normal_day_passes():
    rows = {f"2026-10-{day:02d}": n for day, n in enumerate(USUAL, start=1)}
    asset = rides_asset(rows)
    checks = build_volume_anomaly_checks({KEY: VolumePolicy()}, {KEY: DAYS})
    with dg.instance_for_test() as instance:
        # Fourteen days in one range run: one evaluation per day, judged once seven earlier days exist.
        history = run(asset, checks, instance, "2026-10-01", "2026-10-14")
        assert sorted(history) == sorted(rows)
        assert all(e.passed for e in history.values())
        assert history["2026-10-07"].description == (
            "gold/rides partition 2026-10-07: 970 rows; 6 earlier partition(s) with a row count, "
            "7 needed before volume is judged"
        )
        assert history["2026-10-08"].metadata["strata/history_size"].value == 7

        rows["2026-10-15"] = 100  # a tenth of the usual volume
        low = run(asset, checks, instance, "2026-10-15", "2026-10-15")["2026-10-15"]
        assert not low.passed and low.severity == dg.AssetCheckSeverity.WARN and not low.blocking
        # median 1002.5, MAD 15 -> spread max(1.4826 * 15, 2% of 1002.5) = 22.239 -> z = -902.5 / 22.239
        assert low.description == (
            "gold/rides partition 2026-10-15: 100 rows, robust z -40.6 against the median 1002.5 (MAD 15) "
            "of the 14 earlier partition(s): outside +/-3.5"
        )
        assert low.metadata["strata/robust_z"].value == pytest.approx(-40.58)
        assert low.metadata["strata/history"].value == {d: rows[d] for d in sorted(rows)[:14]}
        # The evaluation names the partition's own materialization (the UI's partition view uses it).
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=KEY, asset_partitions=["2026-10-15"]), limit=1
        ).records[0]
        assert low.target_materialization_data.storage_id == latest.storage_id

        # The next, normal day is judged against the last 14 days, the odd one included: it passes.
        rows["2026-10-16"] = 1025
        normal = run(asset, checks, instance, "2026-10-16", "2026-10-16")["2026-10-16"]
        assert normal.passed, normal.description
        # days 2..15 (the odd day in): median 1002.5, MAD 17.5 -> z = 22.5 / 25.9455 = +0.87
        assert normal.metadata["strata/history_median"].value == 1002.5
        assert normal.metadata["strata/robust_z"].value == pytest.approx(0.87)
        assert "2026-10-01" not in normal.metadata["strata/history"].value  # 14 back, not more

        # The odd day redelivered with its usual volume: its latest materialization is judged, and passes.
        rows["2026-10-15"] = 1012
        assert run(asset, checks, instance, "2026-10-15", "2026-10-15")["2026-10-15"].passed


def test_an_unpartitioned_table_is_judged_against_its_previous_materializations():
    counts = iter([*USUAL[:8], 95, 1003])

    @dg.asset(key=DIM)
    def stations() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"dagster/row_count": next(counts)})

    checks = build_volume_anomaly_checks({DIM: VolumePolicy(severity=dg.AssetCheckSeverity.ERROR)}, {DIM: None})
    with dg.instance_for_test() as instance:
        outcomes = []
        for _ in range(10):
            result = dg.materialize([stations, *checks], instance=instance)
            outcomes.append(evaluations(result)[None])
    assert [o.passed for o in outcomes] == [True] * 8 + [False, True]
    assert outcomes[8].severity == dg.AssetCheckSeverity.ERROR
    assert outcomes[8].description.startswith("bronze/stations (run ")
    assert (
        "95 rows, robust z -" in outcomes[8].description
        and "of the 8 earlier materialization(s)" in outcomes[8].description
    )


def test_hourly_step_compares_the_same_hour_of_earlier_days():
    policy = VolumePolicy(step=24, history=3)
    assert earlier_partitions(HOURS, "2026-10-05-07:00", policy) == [
        "2026-10-04-07:00",
        "2026-10-03-07:00",
        "2026-10-02-07:00",
    ]
    assert earlier_partitions(HOURS, "2026-10-02-07:00", policy) == ["2026-10-01-07:00"]  # clipped at the start
    assert earlier_partitions(DAYS, "2026-10-03", VolumePolicy()) == ["2026-10-02", "2026-10-01"]


@given(
    history=st.lists(st.integers(min_value=0, max_value=10**9), min_size=7, max_size=14),
    scale=st.integers(min_value=2, max_value=1000),
)
def test_the_median_itself_always_passes_and_the_score_scales_with_the_data(history: list[int], scale: int):
    policy = VolumePolicy()
    z, median, _ = robust_z(sorted(history)[len(history) // 2], history, policy.min_relative_spread)
    assert abs(z) <= policy.max_abs_z
    as_dict = {str(i): n for i, n in enumerate(history)}
    assert judge(int(median), as_dict, policy, "t").passed
    # Counting in other units (x scale) changes no verdict when the spread is above the one-row floor.
    value = max(history) * 3 + 10
    scaled = judge(value * scale, {k: v * scale for k, v in as_dict.items()}, policy, "t").passed
    unscaled_z, m, mad = robust_z(value, history, policy.min_relative_spread)
    if max(1.4826 * mad, policy.min_relative_spread * abs(m)) >= 1.0:
        assert scaled == (abs(unscaled_z) <= policy.max_abs_z)


def test_every_bronze_and_gold_table_has_the_check(settings: StrataSettings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    checked = {k.asset_key for k in graph.asset_check_keys if k.name == CHECK_NAME}
    bronze_and_gold = {k for k in graph.get_all_asset_keys() if graph.get(k).group_name in ("bronze", "gold")}
    assert checked == bronze_and_gold
    assert {dg.AssetKey(["bronze", "telemetry"]), dg.AssetKey(["gold", "kpi_daily"])} <= checked
    policies = volume_policies(list(defs.assets))
    assert policies[dg.AssetKey(["bronze", "telemetry"])].step == 24
    assert policies[dg.AssetKey(["gold", "kpi_daily"])] == VolumePolicy()
    # The jobs that build the tables run their checks: the daily build judges every day it builds.
    build_daily = defs.resolve_job_def("build_daily").asset_layer.asset_graph.asset_check_keys
    assert dg.AssetCheckKey(dg.AssetKey(["gold", "kpi_daily"]), CHECK_NAME) in build_daily
    load_hourly = defs.resolve_job_def("load_hourly").asset_layer.asset_graph.asset_check_keys
    assert dg.AssetCheckKey(dg.AssetKey(["bronze", "telemetry"]), CHECK_NAME) in load_hourly
