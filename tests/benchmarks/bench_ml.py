"""Training the demand model on 90 days of hourly features at scale 1 (target: training + evaluation
under 60 s, peak memory under 2 GiB, on 2 cores).

Gold at scale 1 for 97 days through dbt would take far longer than the training it feeds, so the two
marts the model reads (`gold.demand_features_hourly`, `gold.dim_stations`) are computed straight from
the demo generator, the way dbt computes them (tests/ml_support.py; tests/test_ml_lifecycle.py runs
the real dbt path), and written to a DuckDB warehouse file.

Platform: what the retraining does between reading Gold and registering the model: read the window
from the warehouse, lay it out densely with lags (`assets.ml.features`), split at the holdout, train
LightGBM with the default parameters, score the candidate and the seasonal-naive baseline on the
holdout. Floor: the warehouse read of the same window alone.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

import duckdb

from tests.benchmarks.measure import measured, report

START = date(2026, 7, 1)
DAYS = 104  # 7 days of lag history + 90 training days + 7 holdout days


def write_gold(path: Path, scale: float) -> None:
    from tests.ml_support import world_gold

    demand, stations = world_gold(START, DAYS, scale)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA gold")
        con.register("demand", demand)
        con.register("stations", stations)
        con.execute("CREATE TABLE gold.demand_features_hourly AS SELECT * FROM demand")
        con.execute("CREATE TABLE gold.dim_stations AS SELECT station_id, capacity, lat, lon FROM stations")


def main(scale: float = 1.0) -> list[str]:
    from assets.ml.features import TrainingWindow, demand_cube, read_gold_demand, split_rows, training_rows
    from assets.ml.learner import LearnerParams, predict, score, seasonal_naive, targets, train
    from resources.warehouse import Warehouse

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "warehouse.duckdb"
        write_gold(path, scale)
        warehouse = Warehouse(engine="duckdb", duckdb_path=str(path), extension_dir=str(Path(tmp) / "ext"))
        window = TrainingWindow(as_of=START + timedelta(days=DAYS - 1))
        end = window.as_of + timedelta(days=1)

        with measured() as floor:
            demand, stations = read_gold_demand(warehouse, window.read_start, end)
        with measured() as platform:
            demand, stations = read_gold_demand(warehouse, window.read_start, end)
            cube = demand_cube(demand, stations, window.read_start, window.as_of)
            rows, training_days, _ = training_rows(cube, window)
            training, holdout = split_rows(rows, window.holdout_start)
            with measured() as fit:
                booster = train(training, LearnerParams())
            candidate = score(targets(holdout), predict(booster, holdout))
            baseline = score(targets(holdout), seasonal_naive(holdout))
    improvement = 100 * (baseline.mae - candidate.mae) / baseline.mae
    return [
        f"ml training (scale {scale:g}): {demand.num_rows:,} Gold feature rows read; {training.num_rows:,} "
        f"training rows ({len(training_days)} days x {len(stations)} stations x 24 h), {holdout.num_rows:,} "
        f"holdout rows; LightGBM fit {fit.seconds:.1f} s",
        f"ml holdout: candidate MAE {candidate.mae:.4f} (WAPE {candidate.wape:.3f}) vs seasonal-naive MAE "
        f"{baseline.mae:.4f} (WAPE {baseline.wape:.3f}): {improvement:.1f}% lower",
        report("ml features + training + evaluation", platform, floor, "read the features"),
    ]


if __name__ == "__main__":
    for line in main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0):
        print(line, flush=True)
    sys.exit(0)
