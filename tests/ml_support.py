"""Gold demand for the ML tests: a demo world built through the real pipeline once per module, and the
same Gold shape computed straight from the generator (for pure tests and the benchmark)."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from demo.simulator import DemoConfig, generate
from demo.weather_api import serve_weather_api
from demo.world import World
from demo.world_builder import build_world
from jobs.backfill import range_tags
from resources.settings import load_settings
from tests.conftest import ENVIRONMENT_OVERRIDES, TEST_START
from tests.support import refresh_unpartitioned

ML_DAYS = 28  # 7 holdout days + 21 training days (the first week with partial lags)
ML_SCALE = 0.05  # 10 stations, 50 vehicles: ~250 bookings a day, enough signal to learn
AS_OF = TEST_START + timedelta(days=ML_DAYS - 1)
GOLD_FOR_ML = [dg.AssetKey(["gold", "fct_bookings"]), dg.AssetKey(["gold", "demand_features_hourly"])]
WEATHER_SEED = 7  # the demo weather API's seed (the demo world's)
# The weather is fetched as of the first hour after AS_OF: its forecast covers the forecast day too.
WEATHER_AS_OF = f"{AS_OF + timedelta(days=1)}T00:10:00"


def fetch_weather(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The weather job as the schedule runs it, as of WEATHER_AS_OF: a new table is caught up from TEST_START."""
    result = defs.resolve_job_def("fetch_weather").execute_in_process(
        instance=instance, run_config={"ops": {"bronze__weather_forecasts": {"config": {"as_of": WEATHER_AS_OF}}}}
    )
    assert result.success
    return result


def build_gold_for_ml(root: Path, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    """Demo data for ML_DAYS, its weather from the demo weather API, then Bronze OLTP, the dimensions and
    the daily demand marts by real dbt runs. Returns the instance that holds those runs."""
    from definitions import build_definitions

    for name in ENVIRONMENT_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STRATA_ROOT", str(root))
    monkeypatch.setenv("STRATA_START_DATE", TEST_START.isoformat())
    settings = load_settings()
    cfg = DemoConfig(start=TEST_START, days=ML_DAYS, scale=ML_SCALE, seed=WEATHER_SEED)
    generate(
        cfg,
        source_url=settings.source_database_url,
        landing_root=Path(settings.landing_root),
        truth_dir=settings.demo_dir,
    )
    instance = dg.DagsterInstance.ephemeral()
    with serve_weather_api(seed=WEATHER_SEED, scale=ML_SCALE) as weather_api:
        monkeypatch.setenv("STRATA_WEATHER_URL", weather_api.url)
        defs = build_definitions(load_settings())
        fetch_weather(defs, instance)  # before the dbt models, as `python -m jobs.backfill` does
    first_hour = f"{TEST_START:%Y-%m-%d}-00:00"  # the Silver telemetry views need bronze.telemetry to exist
    assert defs.resolve_job_def("load_hourly").execute_in_process(instance=instance, partition_key=first_hour).success
    assert refresh_unpartitioned(defs, instance).success
    daily = defs.resolve_job_def("build_daily").execute_in_process(
        instance=instance, tags=range_tags(f"{TEST_START}", f"{AS_OF}"), asset_selection=GOLD_FOR_ML
    )
    assert daily.success
    return instance


def copy_gold(gold_root: Path, root: Path) -> None:
    """A fresh Strata root holding only the built warehouse: its own Iceberg catalog and model registry."""
    root.mkdir(parents=True)
    shutil.copy2(gold_root / "warehouse.duckdb", root / "warehouse.duckdb")


def gold_from_world(world: World) -> tuple[pa.Table, pa.Table]:
    """(gold.demand_features_hourly, gold.dim_stations) as dbt computes them, straight from the generator:
    bookings per start station and hour of `booked_at`, every status counted."""
    import polars as pl

    bookings = world.bookings
    hours = pl.from_epoch(pl.Series(bookings.booked_at), time_unit="us")
    frame = (
        pl.DataFrame(
            {
                "feature_date": hours.dt.date(),
                "start_station_id": bookings.start_station.astype(np.int64) + 1,
                "hour_of_day": hours.dt.hour().cast(pl.Int64),
            }
        )
        .group_by("feature_date", "start_station_id", "hour_of_day")
        .agg(pl.len().cast(pl.Int64).alias("bookings_started"))
        .sort("feature_date", "start_station_id", "hour_of_day")
    )
    stations = world.stations
    dim_stations = pa.table(
        {
            "station_id": np.arange(1, stations.size + 1, dtype=np.int64),
            "capacity": stations.capacity.astype(np.int64),
            "lat": stations.lat,
            "lon": stations.lon,
        }
    )
    return frame.to_arrow(), dim_stations


def world_gold(start: date, days: int, scale: float, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    return gold_from_world(build_world(DemoConfig(start=start, days=days, scale=scale, seed=seed)))
