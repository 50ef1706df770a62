"""The demand model's lifecycle on demo Gold built by real dbt runs: retraining, the promotion gate,
the MLflow registry's champion alias, the forecast that follows it, rollback and the notification."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from assets.ml.features import (
    FEATURE_COLUMNS,
    WEATHER_COLUMNS,
    TrainingWindow,
    demand_cube,
    feature_rows,
    read_gold_demand,
    read_weather,
    split_rows,
    training_rows,
)
from assets.ml.learner import LearnerParams, train
from assets.ml.training import (
    CANDIDATE,
    GATE_CHECK,
    GATE_TAG,
    PRODUCTION_MODEL,
    TRAINING_FEATURES,
    build_retraining_assets,
    decide,
)
from assets.partitions import daily_partitions
from audit.metadata import table_checksum
from demo.weather_api import hourly_weather, serve_weather_api
from jobs.policies import apply_global_policies
from resources.iceberg import IcebergCatalog
from resources.model_registry import ModelRegistry
from resources.settings import load_settings
from resources.warehouse import Warehouse
from tests.conftest import ENVIRONMENT_OVERRIDES, TEST_START
from tests.ml_support import AS_OF, WEATHER_SEED, build_gold_for_ml, copy_gold, fetch_weather, world_gold
from tests.test_alerting import WEBHOOK_SECRET_VAR, webhook_server  # noqa: F401  (the local webhook fixture)

FORECAST = dg.AssetKey(["ml", "demand_forecast"])
PARTITION = AS_OF.isoformat()
WEAK, WORSE = 5, 3  # boosting rounds: a weak first model, then one worse than it; the default (150) is better


# --- pure: the gate and the holdout --------------------------------------------------------------------


def test_the_gate_promotes_the_first_model_and_only_improvements_above_the_threshold():
    assert decide(1.0, None, 5.0) == (True, "no champion yet: the first model is promoted")
    assert decide(0.94, 1.0, 5.0)[0] is True  # 6% better
    promote, reason = decide(0.95, 1.0, 5.0)  # exactly 5%: not more than the threshold
    assert (promote, reason) == (False, "MAE improves by 5.0%, not more than 5%: the champion stays")
    assert decide(1.2, 1.0, 5.0)[0] is False
    assert decide(0.97, 1.0, 2.0)[0] is True  # the threshold is configuration


def test_holdout_rows_never_reach_training():
    """Training rows end before the holdout, and changing every holdout actual changes neither the
    training rows nor the trained model, byte for byte: nothing of the holdout reaches training."""
    demand, stations = world_gold(TEST_START, 30, 0.05)
    window = TrainingWindow(TEST_START + timedelta(days=29), training_days=20, holdout_days=7)

    def fit(gold: pa.Table) -> tuple[pa.Table, pa.Table, str]:
        cube = demand_cube(gold, stations, window.read_start, window.as_of)
        rows, _, holdout_days = training_rows(cube, window)
        training, holdout = split_rows(rows, window.holdout_start)
        assert holdout_days == [window.holdout_start + timedelta(days=i) for i in range(7)]
        booster = train(training, LearnerParams(num_boost_round=20))
        return training, holdout, booster.model_to_string()

    training, holdout, model = fit(demand)
    assert max(training.column("target_date").to_pylist()) == window.holdout_start - timedelta(days=1)
    assert min(holdout.column("target_date").to_pylist()) == window.holdout_start

    in_holdout = pc.greater_equal(demand.column("feature_date"), pa.scalar(window.holdout_start, pa.date32()))
    bookings = demand.column("bookings_started")
    tripled = pc.if_else(in_holdout, pc.multiply(bookings, 3), bookings)
    scrambled = demand.set_column(demand.schema.get_field_index("bookings_started"), "bookings_started", tripled)
    training_2, holdout_2, model_2 = fit(scrambled)
    assert holdout_2.column("bookings").to_pylist() != holdout.column("bookings").to_pylist()  # the change took
    assert table_checksum(training_2, ["target_date", "start_station_id", "hour_of_day"]) == table_checksum(
        training, ["target_date", "start_station_id", "hour_of_day"]
    )
    assert model_2 == model


# --- the lifecycle on Gold built by dbt ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gold_build(tmp_path_factory) -> tuple[Path, dg.DagsterInstance]:
    root = tmp_path_factory.mktemp("ml_gold") / "strata"
    with pytest.MonkeyPatch.context() as monkeypatch:
        instance = build_gold_for_ml(root, monkeypatch)
    return root, instance


@pytest.fixture(scope="module")
def gold_root(gold_build) -> Path:
    return gold_build[0]


# --- the weather in the features ------------------------------------------------------------------------


def gold_weather(warehouse: Warehouse) -> dict[tuple, tuple]:
    """(feature_date, station, hour) -> the weather columns of gold.demand_features_hourly (is_wet as 0/1)."""
    rows = warehouse.query_arrow(
        'SELECT "feature_date", "start_station_id", CAST("hour_of_day" AS BIGINT) AS "hour_of_day", "temperature_c", '
        '"precipitation_mm", "wind_kmh", CAST("is_wet" AS DOUBLE) AS "is_wet" FROM "gold"."demand_features_hourly"',
        [],
    ).to_pylist()
    return {
        (r["feature_date"], r["start_station_id"], r["hour_of_day"]): tuple(r[c] for c in WEATHER_COLUMNS) for r in rows
    }


def test_the_features_carry_the_weather_of_every_target_hour_as_gold_does(gold_root, tmp_path):
    """Every training, holdout and forecast row has the weather of its target hour at the station's
    location: equal to Gold's where Gold has a row (an hour with bookings), and to the weather API's
    where it has none (an hour without bookings, which Gold leaves out)."""
    root = tmp_path / "strata"
    copy_gold(gold_root, root)
    warehouse = Warehouse(engine="duckdb", duckdb_path=str(root / "warehouse.duckdb"), extension_dir=str(tmp_path))
    assert FEATURE_COLUMNS[-4:] == WEATHER_COLUMNS == ["temperature_c", "precipitation_mm", "wind_kmh", "is_wet"]
    window = TrainingWindow(AS_OF)
    demand, stations = read_gold_demand(warehouse, window.read_start, AS_OF + timedelta(days=1))
    weather = read_weather(warehouse, window.read_start, AS_OF + timedelta(days=2))  # and the forecast day
    cube = demand_cube(demand, stations, window.read_start, AS_OF, weather)
    rows, _, _ = training_rows(cube, window)
    rows = pa.concat_tables([rows, feature_rows(cube, [AS_OF + timedelta(days=1)])])  # the forecast's rows
    assert rows.num_rows == (28 + 1) * 10 * 24  # 21 training, 7 holdout days and the forecast day
    assert [rows.column(c).null_count for c in WEATHER_COLUMNS] == [0, 0, 0, 0]  # every hour has its weather

    gold = gold_weather(warehouse)
    features = {
        (r["target_date"], r["start_station_id"], r["hour_of_day"]): (
            tuple(r[c] for c in WEATHER_COLUMNS),
            r["bookings"],
        )
        for r in rows.to_pylist()
    }
    assert len(gold) > 1000 and gold.keys() <= features.keys()
    assert {key: features[key][0] for key in gold} == gold
    without_bookings = [key for key, (_, bookings) in features.items() if not bookings]
    assert len(without_bookings) > 1000  # the hours Gold has no row for: their weather comes from the API too
    for day, station, hour in without_bookings[:: len(without_bookings) // 50]:
        api = hourly_weather(WEATHER_SEED, (station - 1) // 4 + 1, datetime.combine(day, time(hour)))
        wet = 1.0 if api["precipitation_mm"] >= 0.1 else 0.0
        expected = (api["temperature_c"], api["precipitation_mm"], api["wind_kmh"], wet)
        assert features[(day, station, hour)][0] == expected


def explain(evaluation) -> str:
    """Where each part of the forecast's condition holds, for a failed assertion on the requests."""
    lines = []

    def walk(result, depth):
        keys = sorted(result.true_subset.expensively_compute_partition_keys() or ())
        lines.append(f"{'  ' * depth}{result.condition.get_label() or type(result.condition).__name__}: {keys}")
        for child in result.child_results:
            walk(child, depth + 1)

    walk(next(r for r in evaluation.results if r.key == FORECAST), 0)
    return "\n".join(lines)


@pytest.mark.slow
def test_a_new_weather_batch_makes_automation_rerun_the_newest_forecast(gold_build, monkeypatch):
    """The forecast reads the weather of the forecast day: once a weather fetch has changed
    silver/weather_conditions, automation requests the newest forecast day again, and nothing before.
    A fetch that brings the same forecasts again changes no data version, so it requests nothing."""
    from definitions import build_definitions
    from jobs.policies import FOLLOW_INPUTS_LABEL

    root, instance = gold_build
    for name in ENVIRONMENT_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STRATA_ROOT", str(root))
    monkeypatch.setenv("STRATA_START_DATE", TEST_START.isoformat())
    morning_after = datetime.combine(AS_OF + timedelta(days=1), time(3))
    weather = dg.AssetKey(["silver", "weather_conditions"])
    silver_weather = [dg.AssetKey(["silver", "stg_weather_forecasts"]), weather]

    def fetch_and_refresh(seed: int) -> dg.Definitions:
        """Fetch from an API answering for `seed`, then rebuild the Silver weather, as automation would."""
        with serve_weather_api(seed=seed, scale=0.05) as weather_api:
            monkeypatch.setenv("STRATA_WEATHER_URL", weather_api.url)
            defs = build_definitions(load_settings())
            fetch_weather(defs, instance)
            refreshed = defs.resolve_job_def("refresh_unpartitioned").execute_in_process(
                instance=instance, asset_selection=silver_weather
            )
            assert refreshed.success
        return defs

    def evaluate(defs: dg.Definitions, cursor=None):
        return dg.evaluate_automation_conditions(
            defs=defs,
            instance=instance,
            asset_selection=dg.AssetSelection.assets(FORECAST),
            evaluation_time=morning_after,
            cursor=cursor,
        )

    defs = build_definitions(load_settings())
    graph = defs.resolve_asset_graph()
    assert weather in graph.get(FORECAST).parent_keys and weather in graph.get(TRAINING_FEATURES).parent_keys
    first = evaluate(defs)  # Dagster's first evaluation counts every partition as handled: nothing requested
    assert first.total_requested == 0, explain(first)
    quiet = evaluate(defs, first.cursor)
    assert quiet.total_requested == 0, explain(quiet)  # nothing has changed since

    same = evaluate(fetch_and_refresh(WEATHER_SEED), quiet.cursor)  # the forecasts Gold was built with
    assert same.total_requested == 0, explain(same)

    revised = evaluate(fetch_and_refresh(WEATHER_SEED + 1), same.cursor)  # the API revised its forecasts
    assert revised.total_requested == 1, explain(revised)
    [forecast] = [r for r in revised.results if r.key == FORECAST]
    assert set(forecast.true_subset.expensively_compute_partition_keys()) == {AS_OF.isoformat()}
    assert FOLLOW_INPUTS_LABEL in {c.condition.get_label() for c in forecast.child_results}


@dataclass
class Platform:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    registry: ModelRegistry
    iceberg: IcebergCatalog
    webhook: object
    results: list = field(default_factory=list)

    def retrain(self, rounds: int | None = None) -> dg.ExecuteInProcessResult:
        config = {} if rounds is None else {"num_boost_round": rounds}
        result = self.defs.resolve_job_def("retrain_demand_model").execute_in_process(
            instance=self.instance,
            partition_key=PARTITION,
            run_config={"ops": {"ml__demand_model_candidate": {"config": config}}},
            raise_on_error=False,
        )
        self.results.append(result)
        return result

    def forecast(self, first: str = PARTITION, last: str = PARTITION) -> dg.ExecuteInProcessResult:
        from jobs.backfill import range_tags

        return self.defs.resolve_job_def("build_daily").execute_in_process(
            instance=self.instance, tags=range_tags(first, last), asset_selection=[FORECAST]
        )

    def forecast_rows(self) -> pa.Table:
        return self.iceberg.load().load_table("ml.demand_forecast").scan().to_arrow()


@pytest.fixture
def platform(gold_root, tmp_path, monkeypatch, webhook_server) -> Platform:  # noqa: F811
    """A fresh root over the built Gold: its own Iceberg catalog, MLflow registry and alerts to a webhook."""
    from definitions import build_definitions

    root = tmp_path / "strata"
    copy_gold(gold_root, root)
    monkeypatch.setenv("STRATA_ROOT", str(root))
    monkeypatch.setenv("STRATA_START_DATE", TEST_START.isoformat())
    monkeypatch.setenv("STRATA_ALERT_CHANNELS", "webhook")
    monkeypatch.setenv(WEBHOOK_SECRET_VAR, webhook_server.url)
    monkeypatch.setenv("STRATA_DAGSTER_UI_URL", "http://dagster.example:3000")
    settings = load_settings()
    defs = build_definitions(settings)
    return Platform(
        defs=defs,
        instance=dg.DagsterInstance.ephemeral(),
        registry=defs.resources["registry"],
        iceberg=defs.resources["iceberg"],
        webhook=webhook_server,
    )


def candidate_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == CANDIDATE]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def gate(result: dg.ExecuteInProcessResult):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == GATE_CHECK]
    return evaluation


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def restarts(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]


@pytest.mark.slow
def test_retraining_promotes_only_through_the_gate_and_the_forecast_follows_the_alias(platform: Platform):
    registry = platform.registry
    assert registry.champion() is None

    # 1. The first model is promoted: there is no champion to beat.
    first = platform.retrain(WEAK)
    assert first.success
    assert gate(first).passed and gate(first).description == "no champion yet: the first model is promoted"
    meta = candidate_metadata(first)
    assert meta["strata/model_version"] == 1 and meta["strata/champion_version"] == "none"
    assert meta["strata/training_window"] == f"[{TEST_START}, {AS_OF - timedelta(days=6)})"
    assert meta["strata/holdout_window"] == f"[{AS_OF - timedelta(days=6)}, {AS_OF + timedelta(days=1)})"
    assert meta["strata/training_days"] == 21 and meta["strata/holdout_rows"] == 7 * 10 * 24
    assert set(meta["strata/library_versions"]) >= {"lightgbm", "mlflow"}
    assert meta["strata/features"] == FEATURE_COLUMNS  # the weather among them
    [features_event] = [e for e in first.get_asset_materialization_events() if e.asset_key == TRAINING_FEATURES]
    assert features_event.materialization.metadata["strata/weather_coverage"].value == 1.0
    table = platform.iceberg.load().load_table("ml.demand_training_features")
    assert meta["strata/feature_snapshot_id"] == str(table.current_snapshot().snapshot_id)
    assert materialized(first) == {TRAINING_FEATURES.to_user_string(), CANDIDATE.to_user_string(),
                                   PRODUCTION_MODEL.to_user_string()}  # fmt: skip
    assert registry.champion().version == 1
    assert registry.run_metrics(1)["holdout_mae"] == pytest.approx(meta["strata/holdout_mae"])

    # 2. A worse configuration on the same data: the gate fails, the promotion does not run, v1 stays.
    worse = platform.retrain(WORSE)
    assert not worse.success
    evaluation = gate(worse)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.description.endswith("not more than 5%: the champion stays")
    worse_meta = candidate_metadata(worse)
    assert worse_meta["strata/model_version"] == 2 and worse_meta["strata/champion_version"] == 1
    assert worse_meta["strata/champion_mae"] == pytest.approx(meta["strata/holdout_mae"])  # same holdout
    assert worse_meta["strata/improvement_pct"] < 5
    assert PRODUCTION_MODEL.to_user_string() not in materialized(worse)
    assert restarts(worse) == []  # a gate failure is a decision: nothing was retried
    assert registry.champion().version == 1
    assert registry.version_tags(2)[GATE_TAG] == "failed"

    # 3. The default configuration improves on v1 by more than 5%: promoted, the alias moves to v3.
    better = platform.retrain()
    assert better.success and gate(better).passed
    better_meta = candidate_metadata(better)
    assert better_meta["strata/improvement_pct"] > 5
    assert better_meta["strata/holdout_mae"] < better_meta["strata/baseline_mae"]  # beats seasonal-naive too
    assert registry.champion().version == 3
    assert registry.versions() == [1, 2, 3]

    # The forecast uses the champion: every station and hour of the next day carries version 3.
    forecast = platform.forecast()
    rows = platform.forecast_rows()
    assert rows.num_rows == 10 * 24
    assert set(rows.column("model_version").to_pylist()) == {3}
    assert set(rows.column("forecast_date").to_pylist()) == {AS_OF + timedelta(days=1)}
    [event] = [e for e in forecast.get_asset_materialization_events() if e.asset_key == FORECAST]
    assert event.materialization.metadata["strata/model_version"].value == 3
    by_key = [("start_station_id", "ascending"), ("hour_of_day", "ascending")]
    v3_predictions = rows.sort_by(by_key).column("predicted_bookings").to_numpy()

    # Rollback: the alias moves back to v1; the next forecast uses v1, and the baseline check flags it.
    registry.set_champion(1)
    rolled_back = platform.forecast(f"{AS_OF - timedelta(days=3)}", PARTITION)
    rows = platform.forecast_rows()
    assert set(rows.column("model_version").to_pylist()) == {1}
    latest = rows.filter(pc.equal(rows.column("feature_date"), pa.scalar(AS_OF, pa.date32())))
    assert not np.allclose(latest.sort_by(by_key).column("predicted_bookings").to_numpy(), v3_predictions)
    [check] = [e for e in rolled_back.get_asset_check_evaluations() if e.check_name == "beats_seasonal_naive"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # v1 is worse than the baseline
    assert check.metadata["compared_days"].value == 3

    # After each retraining, a notification with candidate vs champion MAE, the decision and the run link.
    alerts = [r["json"]["alert"] for r in platform.webhook.received]
    assert [a["kind"] for a in alerts] == ["model_retrained"] * 3
    assert [a["facts"]["Decision"] for a in alerts] == ["promoted", "kept the champion", "promoted"]
    assert alerts[1]["facts"]["Candidate"] == f"v2, holdout MAE {worse_meta['strata/holdout_mae']:.4f}"
    assert alerts[1]["facts"]["Champion"] == f"v1, MAE {meta['strata/holdout_mae']:.4f}"
    assert alerts[1]["url"] == f"http://dagster.example:3000/runs/{worse.run_id}"
    assert alerts[0]["facts"]["Champion"] == "none"


FLAKY_CALLS: list[str] = []


class FlakyRegistry(ModelRegistry):
    """The registry as a tracking server that drops the first connection (a transient failure)."""

    def register_candidate(self, booster, **kwargs):
        FLAKY_CALLS.append("register_candidate")
        if len(FLAKY_CALLS) == 1:
            raise ConnectionError("tracking server closed the connection")
        return super().register_candidate(booster, **kwargs)


@pytest.mark.slow
def test_a_transient_registry_failure_is_retried_and_the_gate_is_blocking_and_never_retried(platform):
    FLAKY_CALLS.clear()
    defs = platform.defs
    candidate = defs.resolve_assets_def(CANDIDATE)
    assert candidate.op.retry_policy is not None and candidate.op.retry_policy.max_retries == 3
    [gate_check] = [c for c in defs.asset_checks if dg.AssetCheckKey(CANDIDATE, GATE_CHECK) in c.check_keys]
    assert [spec.blocking for spec in gate_check.check_specs] == [True]
    assert gate_check.node_def.retry_policy is None  # a failed gate is a decision: no retry policy reaches it

    registry = platform.registry
    flaky = FlakyRegistry(tracking_uri=registry.tracking_uri, artifact_location=registry.artifact_location)
    # The same assets with the same global policies, unbound, so the flaky registry can stand in.
    features_asset, candidate_asset, _ = apply_global_policies(build_retraining_assets(daily_partitions(TEST_START))[0])
    assert candidate_asset.op.retry_policy == candidate.op.retry_policy
    result = dg.materialize(
        [features_asset, candidate_asset],
        partition_key=PARTITION,
        instance=platform.instance,
        resources={**defs.resources, "registry": flaky},
    )
    assert result.success
    assert restarts(result) == ["ml__demand_model_candidate"]
    assert FLAKY_CALLS == ["register_candidate", "register_candidate"]
    assert platform.registry.versions() == [1]  # registered once, by the retry
