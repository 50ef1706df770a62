"""Daily retraining of the demand model: features -> candidate -> promotion gate -> production model.

Each asset is partitioned by the last feature day it uses (the 02:00 schedule builds the day before):
- `ml/demand_training_features`: the training and holdout rows from Gold, written to Iceberg, so the
  candidate's metadata can name the exact snapshot it was trained on;
- `ml/demand_model_candidate`: a LightGBM model trained on up to 90 days before the holdout (the most
  recent 7 days), scored on the holdout next to the champion and the seasonal-naive baseline, and
  registered in MLflow as a new version with no alias;
- the blocking check `promotion_gate` on the candidate: passes only when there is no champion yet or
  the candidate improves the champion's holdout MAE by more than the configured threshold (5%). A
  failed gate is a decision: the check fails (never retried) and the promotion below does not run.
  Either way it notifies the team (candidate vs champion MAE, decision, run link);
- `ml/demand_model`: the promotion, moving the `champion` alias to the candidate's version.
"""

import time
from datetime import date, timedelta
from importlib.metadata import version as package_version

import dagster as dg
import pyarrow as pa

from assets.ml.features import (
    FEATURE_COLUMNS,
    KEY_COLUMNS,
    MissingFeatureDays,
    TrainingWindow,
    demand_cube,
    read_gold_demand,
    read_weather,
    split_rows,
    training_rows,
)
from assets.ml.learner import LearnerParams, improvement_pct, predict, score, seasonal_naive, targets, train
from audit.metadata import audit_metadata, code_identity, table_checksum
from resources.alerting import Alert, AlertingResource
from resources.iceberg import IcebergCatalog, commit_with_retry
from resources.model_registry import ModelRegistry
from resources.warehouse import Warehouse

FEATURES = dg.AssetKey(["gold", "demand_features_hourly"])
STATIONS = dg.AssetKey(["gold", "dim_stations"])
WEATHER = dg.AssetKey(["silver", "weather_conditions"])
TRAINING_FEATURES = dg.AssetKey(["ml", "demand_training_features"])
CANDIDATE = dg.AssetKey(["ml", "demand_model_candidate"])
PRODUCTION_MODEL = dg.AssetKey(["ml", "demand_model"])
RETRAINING_ASSETS = (TRAINING_FEATURES, CANDIDATE, PRODUCTION_MODEL)
GATE_CHECK = "promotion_gate"
TRAINING_TABLE = "ml.demand_training_features"
GATE_TAG = "strata.promotion_gate"  # on the registered version: passed / failed, so promotion can verify it
# A backfill retrains day by day, one run each: every day's candidate meets the champion the day before left.
ONE_DAY_PER_RUN = dg.BackfillPolicy.multi_run(1)
LIBRARIES = ("lightgbm", "mlflow", "numpy", "pyarrow", "dagster")


class TrainingWindowConfig(dg.Config):
    training_days: int = 90  # trailing days before the holdout (fewer while history is shorter)
    holdout_days: int = 7  # the most recent days, never trained on
    min_training_days: int = 7  # below this, no model is trained (a decision, not retried)


class CandidateConfig(dg.Config):
    num_boost_round: int = LearnerParams.num_boost_round
    learning_rate: float = LearnerParams.learning_rate
    num_leaves: int = LearnerParams.num_leaves
    min_data_in_leaf: int = LearnerParams.min_data_in_leaf
    seed: int = LearnerParams.seed

    def learner(self) -> LearnerParams:
        return LearnerParams(
            num_boost_round=self.num_boost_round,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_data_in_leaf=self.min_data_in_leaf,
            seed=self.seed,
        )


class PromotionGateConfig(dg.Config):
    min_improvement_pct: float = 5.0  # the candidate's holdout MAE must beat the champion's by more than this


TRAINING_SCHEMA_EXTRA = [
    pa.field("as_of_date", pa.date32(), nullable=False),
    pa.field("split", pa.string(), nullable=False),  # "train" or "holdout"
]


def decide(candidate_mae: float, champion_mae: float | None, min_improvement_pct: float) -> tuple[bool, str]:
    """(promote, reason): the promotion gate as a pure function."""
    if champion_mae is None:
        return True, "no champion yet: the first model is promoted"
    improvement = improvement_pct(candidate_mae, champion_mae)
    # rounded: 0.95 against 1.0 is 5%, not 5.000000000000004% (which would pass a 5% gate)
    if improvement is not None and round(improvement, 9) > min_improvement_pct:
        return True, f"MAE improves by {improvement:.1f}% > {min_improvement_pct:g}%"
    shown = "n/a" if improvement is None else f"{improvement:.1f}%"
    return False, f"MAE improves by {shown}, not more than {min_improvement_pct:g}%: the champion stays"


def _no_retry(message: str, **metadata) -> dg.Failure:
    return dg.Failure(description=message, metadata=metadata, allow_retries=False)


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None) -> dict[str, object]:
    """The metadata values of an asset's latest materialization (of `partition`, when given)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    if not records:
        return {}
    materialization = records[0].asset_materialization
    return {name: value.value for name, value in materialization.metadata.items()}


def markdown_table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def build_retraining_assets(
    partitions_def: dg.DailyPartitionsDefinition,
) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """(the three retraining assets, the promotion gate check)."""

    @dg.asset(
        key=TRAINING_FEATURES,
        group_name="ml",
        kinds={"python", "iceberg"},
        deps=[FEATURES, STATIONS, WEATHER],
        partitions_def=partitions_def,
        backfill_policy=ONE_DAY_PER_RUN,
        description=(
            "Training and holdout rows of the demand model as of the partition day: per station, hour and "
            "target day, features from the days before only. Replaces ml.demand_training_features."
        ),
    )
    def demand_training_features(
        context: dg.AssetExecutionContext, config: TrainingWindowConfig, warehouse: Warehouse, iceberg: IcebergCatalog
    ) -> dg.MaterializeResult:
        as_of = context.partition_time_window.start.date()
        window = TrainingWindow(as_of, config.training_days, config.holdout_days)
        demand, stations = read_gold_demand(warehouse, window.read_start, as_of + timedelta(days=1))
        weather = read_weather(warehouse, window.read_start, as_of + timedelta(days=1))
        cube = demand_cube(demand, stations, window.read_start, as_of, weather)
        try:
            rows, training, _holdout = training_rows(cube, window)
        except MissingFeatureDays as error:
            raise _no_retry(f"{error}; build them first (as of {as_of})") from error
        if len(training) < config.min_training_days:
            raise _no_retry(
                f"gold.demand_features_hourly holds {len(training)} training day(s) before the holdout "
                f"[{window.holdout_start}, {as_of}], fewer than min_training_days={config.min_training_days}"
            )
        _, holdout_rows = split_rows(rows, window.holdout_start)
        rows = rows.sort_by([(c, "ascending") for c in KEY_COLUMNS])
        split = pa.array(
            ["holdout" if d >= window.holdout_start else "train" for d in rows.column("target_date").to_pylist()]
        )
        table_rows = rows.append_column(TRAINING_SCHEMA_EXTRA[1], split).append_column(
            TRAINING_SCHEMA_EXTRA[0], pa.array([as_of] * rows.num_rows, pa.date32())
        )
        schema = table_rows.schema
        table = iceberg.load_or_create_table(TRAINING_TABLE, schema)
        commit_with_retry(table, lambda t: t.overwrite(table_rows))
        table = table.refresh()
        snapshot = table.current_snapshot()
        first_training = training[0].isoformat() if training else "none"
        # Rows whose target hour had a forecast: below 1.0 when the weather history is incomplete.
        with_weather = table_rows.num_rows - table_rows.column("temperature_c").null_count
        context.log.info(
            f"{TRAINING_TABLE}: {table_rows.num_rows} row(s), {len(training)} training day(s) from "
            f"{first_training}, holdout [{window.holdout_start}, {as_of}]"
        )
        return dg.MaterializeResult(
            metadata=audit_metadata(
                table_name=TRAINING_TABLE,
                uri=table.metadata_location,
                rows_in=demand.num_rows,
                rows_out=table_rows.num_rows,
                table_row_count=table_rows.num_rows,
                partition_row_count=table_rows.num_rows,
                checksum=table_checksum(table_rows, KEY_COLUMNS),
                data_window=(window.read_start.isoformat(), (as_of + timedelta(days=1)).isoformat()),
                input_partitions=[
                    f"{FEATURES.to_user_string()}:[{window.read_start}, {as_of}]",
                    WEATHER.to_user_string(),
                ],
                snapshot_id=snapshot.snapshot_id,
                schema=schema,
                extra={
                    "training_days": len(training),
                    "training_window": f"[{first_training}, {window.holdout_start})",
                    "holdout_window": f"[{window.holdout_start}, {as_of + timedelta(days=1)})",
                    "training_rows": rows.num_rows - holdout_rows.num_rows,
                    "holdout_rows": holdout_rows.num_rows,
                    "features": dg.MetadataValue.json(FEATURE_COLUMNS),
                    "weather_coverage": round(with_weather / table_rows.num_rows, 4) if table_rows.num_rows else 0.0,
                },
            )
        )

    @dg.asset(
        key=CANDIDATE,
        group_name="ml",
        kinds={"python", "lightgbm", "mlflow"},
        deps=[TRAINING_FEATURES],
        partitions_def=partitions_def,
        backfill_policy=ONE_DAY_PER_RUN,
        description=(
            "A LightGBM demand model trained on the training rows, scored on the holdout next to the "
            "champion and the seasonal-naive baseline, registered in MLflow (no alias until the gate passes)."
        ),
    )
    def demand_model_candidate(
        context: dg.AssetExecutionContext, config: CandidateConfig, iceberg: IcebergCatalog, registry: ModelRegistry
    ) -> dg.MaterializeResult:
        import pyarrow.compute as pc

        as_of = context.partition_time_window.start.date()
        table = iceberg.table_or_none(TRAINING_TABLE)
        snapshot = table.current_snapshot() if table is not None else None
        rows = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow() if snapshot is not None else None
        held_as_of = rows.column("as_of_date")[0].as_py() if rows is not None and rows.num_rows else None
        if held_as_of != as_of:
            raise _no_retry(
                f"{TRAINING_TABLE} holds the rows as of {held_as_of}, not {as_of}: materialize "
                f"{TRAINING_FEATURES.to_user_string()} for {as_of} first"
            )
        is_holdout = pc.equal(rows.column("split"), "holdout")
        training_set, holdout = rows.filter(pc.invert(is_holdout)), rows.filter(is_holdout)
        return train_and_register(
            context, config.learner(), training_set, holdout, as_of, snapshot.snapshot_id, registry
        )

    @dg.asset_check(
        asset=CANDIDATE,
        name=GATE_CHECK,
        blocking=True,
        description=(
            "The promotion gate: the candidate replaces the champion only if its holdout MAE is lower by more "
            "than min_improvement_pct (default 5%), or if there is no champion. A failure is a decision."
        ),
    )
    def promotion_gate(
        context: dg.AssetCheckExecutionContext,
        config: PromotionGateConfig,
        registry: ModelRegistry,
        alerting: AlertingResource,
    ) -> dg.AssetCheckResult:
        meta = latest_metadata(context.instance, CANDIDATE, None)
        if "strata/model_version" not in meta:
            raise _no_retry(f"{CANDIDATE.to_user_string()} has no registered candidate to judge")
        candidate_version = int(meta["strata/model_version"])
        candidate_mae = float(meta["strata/holdout_mae"])
        champion_mae = meta.get("strata/champion_mae")
        champion_mae = None if champion_mae in (None, "none") else float(champion_mae)
        promote, reason = decide(candidate_mae, champion_mae, config.min_improvement_pct)
        registry.tag_version(candidate_version, GATE_TAG, "passed" if promote else "failed")
        decision = "promoted" if promote else "kept the champion"
        facts = {
            "Candidate": f"v{candidate_version}, holdout MAE {fmt(candidate_mae)}",
            "Champion": "none"
            if champion_mae is None
            else f"v{meta['strata/champion_version']}, MAE {fmt(champion_mae)}",
            "Improvement": "n/a" if champion_mae is None else f"{meta['strata/improvement_pct']:.1f}%",
            "Threshold": f"> {config.min_improvement_pct:g}%",
            "Decision": decision,
            "Baseline MAE": fmt(float(meta["strata/baseline_mae"])),
        }
        alerting.send(
            Alert(
                kind="model_retrained",
                title=f"candidate v{candidate_version} {decision}",
                details=reason,
                asset=CANDIDATE.to_user_string(),
                check=GATE_CHECK,
                run_id=context.run.run_id,
                job=context.run.job_name,
                partition=str(meta.get("strata/as_of", "")) or None,
                url=alerting.link(f"/runs/{context.run.run_id}"),
                facts=facts,
            )
        )
        return dg.AssetCheckResult(
            passed=promote,
            severity=dg.AssetCheckSeverity.ERROR,
            description=reason,
            metadata={
                "decision": decision,
                "candidate_version": candidate_version,
                "candidate_mae": candidate_mae,
                "champion_mae": champion_mae if champion_mae is not None else "none",
                "min_improvement_pct": config.min_improvement_pct,
            },
        )

    @dg.asset(
        key=PRODUCTION_MODEL,
        group_name="ml",
        kinds={"python", "mlflow"},
        deps=[CANDIDATE],
        partitions_def=partitions_def,
        backfill_policy=ONE_DAY_PER_RUN,
        description=(
            "The production demand model: moves the registry's champion alias to the candidate that passed "
            "the promotion gate (runs only when the blocking gate passed)."
        ),
    )
    def demand_model(context: dg.AssetExecutionContext, registry: ModelRegistry) -> dg.MaterializeResult:
        meta = latest_metadata(context.instance, CANDIDATE, context.partition_key)
        if "strata/model_version" not in meta:
            raise _no_retry(f"{CANDIDATE.to_user_string()} has no candidate for {context.partition_key}")
        version = int(meta["strata/model_version"])
        gate = registry.version_tags(version).get(GATE_TAG)
        if gate != "passed":  # materialized on its own, past the gate: refuse, the gate decides
            raise _no_retry(f"{registry.model_name} v{version}: promotion gate is {gate or 'not run'}, not passed")
        previous = registry.champion()
        registry.set_champion(version)
        context.log.info(f"{registry.model_name}: alias {registry.champion_alias} -> v{version}")
        git_sha, image = code_identity()
        return dg.MaterializeResult(
            metadata={
                "strata/model_version": version,
                "strata/previous_version": previous.version if previous else "none",
                "strata/model_uri": f"models:/{registry.model_name}@{registry.champion_alias}",
                "strata/holdout_mae": float(meta["strata/holdout_mae"]),
                "strata/git_sha": git_sha,
                "strata/image": image,
            }
        )

    return [demand_training_features, demand_model_candidate, demand_model], [promotion_gate]


def train_and_register(
    context: dg.AssetExecutionContext,
    params: LearnerParams,
    training_set: pa.Table,
    holdout: pa.Table,
    as_of: date,
    snapshot_id: int,
    registry: ModelRegistry,
) -> dg.MaterializeResult:
    """Train, score against the champion and the baseline on the same holdout, register; the metadata."""
    began = time.monotonic()
    booster = train(training_set, params)
    training_seconds = time.monotonic() - began
    actual = targets(holdout)
    candidate = score(actual, predict(booster, holdout))
    baseline = score(actual, seasonal_naive(holdout))
    champion = registry.champion()
    champion_scores = score(actual, predict(registry.load_booster(champion.version), holdout)) if champion else None
    improvement = improvement_pct(candidate.mae, champion_scores.mae if champion_scores else None)
    training_days = sorted(set(training_set.column("target_date").to_pylist()))
    holdout_days = sorted(set(holdout.column("target_date").to_pylist()))
    training_window = f"[{training_days[0]}, {training_days[-1] + timedelta(days=1)})"
    holdout_window = f"[{holdout_days[0]}, {holdout_days[-1] + timedelta(days=1)})"
    checksum = table_checksum(training_set.drop_columns(["split", "as_of_date"]), KEY_COLUMNS)
    libraries = {name: package_version(name) for name in LIBRARIES}
    metrics = {
        **candidate.as_dict("holdout"),
        **baseline.as_dict("baseline"),
        **(champion_scores.as_dict("champion") if champion_scores else {}),
        "training_seconds": training_seconds,
    }
    tags = {
        "strata.as_of": as_of.isoformat(),
        "strata.training_window": training_window,
        "strata.holdout_window": holdout_window,
        "strata.feature_table": TRAINING_TABLE,
        "strata.feature_snapshot_id": str(snapshot_id),
        "strata.feature_checksum": checksum,
        "strata.features": ",".join(booster.feature_name()),
        "strata.dagster_run_id": context.run.run_id,
    }
    registered = registry.register_candidate(booster, params=params.as_dict(), metrics=metrics, tags=tags)
    context.log.info(
        f"{registry.model_name} v{registered.version}: holdout MAE {candidate.mae:.4f} (champion "
        f"{fmt(champion_scores.mae if champion_scores else None)}, baseline {baseline.mae:.4f})"
    )
    git_sha, image = code_identity()
    summary = markdown_table(
        [
            ("candidate", f"v{registered.version}"),
            ("holdout MAE / WAPE", f"{candidate.mae:.4f} / {candidate.wape:.3f}"),
            ("champion", f"v{champion.version}" if champion else "none"),
            ("champion MAE / WAPE (same holdout)",
             f"{champion_scores.mae:.4f} / {champion_scores.wape:.3f}" if champion_scores else "n/a"),
            ("seasonal-naive MAE / WAPE", f"{baseline.mae:.4f} / {baseline.wape:.3f}"),
            ("improvement over champion", "n/a" if improvement is None else f"{improvement:.1f}%"),
            ("training window", f"{training_window}, {len(training_days)} day(s), {training_set.num_rows} rows"),
            ("holdout window", f"{holdout_window}, {holdout.num_rows} rows"),
            ("training time", f"{training_seconds:.1f} s"),
        ]
    )  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "strata/model_version": registered.version,
            "strata/model_uri": registered.uri,
            "strata/mlflow_run_id": registered.run_id,
            "strata/as_of": as_of.isoformat(),
            "strata/holdout_mae": candidate.mae,
            "strata/holdout_wape": candidate.wape,
            "strata/champion_version": champion.version if champion else "none",
            "strata/champion_mae": champion_scores.mae if champion_scores else "none",
            "strata/champion_wape": champion_scores.wape if champion_scores else "none",
            "strata/baseline_mae": baseline.mae,
            "strata/baseline_wape": baseline.wape,
            "strata/improvement_pct": improvement if improvement is not None else "none",
            "strata/training_window": training_window,
            "strata/training_days": len(training_days),
            "strata/training_rows": training_set.num_rows,
            "strata/holdout_window": holdout_window,
            "strata/holdout_rows": holdout.num_rows,
            "strata/feature_snapshot_id": str(snapshot_id),
            "strata/feature_checksum": checksum,
            "strata/features": dg.MetadataValue.json(booster.feature_name()),
            "strata/training_seconds": round(training_seconds, 3),
            "strata/params": dg.MetadataValue.json(params.as_dict()),
            "strata/library_versions": dg.MetadataValue.json(libraries),
            "strata/summary": dg.MetadataValue.md(summary),
            "strata/git_sha": git_sha,
            "strata/image": image,
        }
    )
