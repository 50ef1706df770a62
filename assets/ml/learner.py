"""The demand learner: LightGBM gradient-boosted trees with a Poisson objective, deterministic for a seed.

Bookings per station and hour are small counts, hence the Poisson objective. Determinism (fixed
seed, `deterministic`, row-wise histograms, a fixed thread count) makes a retrain on the same rows
give the same model, so a test can prove which rows reached training by comparing model texts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from assets.ml.features import FEATURE_COLUMNS, TARGET


@dataclass(frozen=True)
class LearnerParams:
    num_boost_round: int = 150
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    seed: int = 42
    num_threads: int = 2

    def lightgbm_params(self) -> dict[str, Any]:
        return {
            "objective": "poisson",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbose": -1,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_matrix(rows: pa.Table, names: list[str] = FEATURE_COLUMNS) -> np.ndarray:
    """The model's input matrix, columns in `names` order; nulls become NaN (LightGBM's missing)."""
    return np.column_stack(
        [np.asarray(rows.column(name).to_numpy(zero_copy_only=False), dtype=np.float64) for name in names]
    )


def targets(rows: pa.Table) -> np.ndarray:
    return np.asarray(rows.column(TARGET).to_numpy(zero_copy_only=False), dtype=np.float64)


def train(rows: pa.Table, params: LearnerParams):
    """A LightGBM booster fitted to the rows' targets."""
    import lightgbm as lgb

    dataset = lgb.Dataset(feature_matrix(rows), label=targets(rows), feature_name=FEATURE_COLUMNS, free_raw_data=True)
    return lgb.train(params.lightgbm_params(), dataset, num_boost_round=params.num_boost_round)


def predict(booster, rows: pa.Table) -> np.ndarray:
    """The booster's predictions, fed the features it was trained on by name: a champion registered before
    a feature was added (the weather) keeps predicting from its own columns."""
    names = booster.feature_name()
    return np.asarray(booster.predict(feature_matrix(rows, names), num_threads=2), dtype=np.float64)


def seasonal_naive(rows: pa.Table) -> np.ndarray:
    """The baseline: the same station and hour the day before (0 where that day is unknown)."""
    return np.nan_to_num(np.asarray(rows.column("bookings_lag_1d").to_numpy(zero_copy_only=False), dtype=np.float64))


@dataclass(frozen=True)
class Scores:
    mae: float
    wape: float  # sum |error| / sum actual: MAPE is undefined for the many hours with no booking
    rows: int

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_mae": self.mae, f"{prefix}_wape": self.wape}


def score(actual: np.ndarray, predicted: np.ndarray) -> Scores:
    error = np.abs(actual - predicted)
    total = float(actual.sum())
    return Scores(
        mae=float(error.mean()) if len(error) else float("nan"),
        wape=float(error.sum() / total) if total else float("nan"),
        rows=len(error),
    )


def improvement_pct(candidate_mae: float, champion_mae: float | None) -> float | None:
    """How much lower the candidate's MAE is than the champion's, in percent of the champion's."""
    if champion_mae is None or champion_mae <= 0:
        return None
    return 100.0 * (champion_mae - candidate_mae) / champion_mae
