"""ML: next-day booking demand per station and hour, from the production model in the registry.

The forecast for the day after a feature day uses the model the registry's `champion` alias points to
(`ml/demand_model` moves it; a rollback moves it back), for every station and hour, and records that
model's version in each row and in the metadata. Before the first model is promoted it is the
seasonal-naive baseline every model is compared against: tomorrow's bookings in an hour at a station
are today's bookings in that hour (`gold/demand_features_hourly`), for the station-hours that had
bookings. The expected utilisation divides by the station's capacity (`gold/dim_stations`). A failing
blocking dbt test on either input keeps it from being published, in the same run and, through its
automation condition, in later ones. The check `beats_seasonal_naive` flags a model worse than that
baseline on the days whose actuals have arrived since.
"""

from datetime import date, timedelta

import dagster as dg
import numpy as np
import pyarrow as pa

from assets.ml.features import LOOKBACK_DAYS, demand_cube, feature_rows, read_gold_demand, read_weather
from assets.ml.learner import predict
from assets.ml.training import PRODUCTION_MODEL, WEATHER
from audit.metadata import audit_metadata, table_checksum
from resources.iceberg import IcebergCatalog, commit_with_retry
from resources.model_registry import ModelRegistry, ModelVersionRef
from resources.warehouse import Warehouse

FORECAST_TABLE = "ml.demand_forecast"
MODEL_NAME = "seasonal_naive_v1"
FEATURES = dg.AssetKey(["gold", "demand_features_hourly"])
STATIONS = dg.AssetKey(["gold", "dim_stations"])
FORECAST_KEY_COLUMNS = ["forecast_date", "start_station_id", "hour_of_day"]
FORECAST_SCHEMA = pa.schema(
    [
        pa.field("feature_date", pa.date32(), nullable=False),
        pa.field("forecast_date", pa.date32(), nullable=False),
        pa.field("start_station_id", pa.int64(), nullable=False),
        pa.field("hour_of_day", pa.int64(), nullable=False),
        pa.field("expected_bookings", pa.int64(), nullable=False),
        pa.field("expected_utilisation", pa.float64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("dagster_run_id", pa.string(), nullable=False),
        # Added with the model registry (issue 14): nullable, so tables written before evolve in place.
        pa.field("model_version", pa.int64()),  # the registered version; null for the baseline
        pa.field("predicted_bookings", pa.float64()),  # the model's unrounded output
    ]
)
BASELINE_CHECK = "beats_seasonal_naive"
CHECK_DAYS = 7  # the check judges the latest forecast days whose actuals have arrived

# Joined in the warehouse so only the window's feature rows travel to Python. Portable SQL (quoted
# identifiers, `?` parameters): the same text runs on DuckDB locally and on Trino in prod.
FEATURES_SQL = """
SELECT f."feature_date", f."start_station_id", CAST(f."hour_of_day" AS BIGINT) AS "hour_of_day",
       f."bookings_started", s."capacity"
FROM "gold"."demand_features_hourly" AS f
JOIN "gold"."dim_stations" AS s ON s."station_id" = f."start_station_id"
WHERE f."feature_date" >= ? AND f."feature_date" < ?
"""


def read_features(warehouse: Warehouse, start: date, end: date) -> pa.Table:
    """The feature days [start, end) joined to station capacity, on either warehouse engine."""
    return warehouse.query_arrow(FEATURES_SQL, [start, end])


def seasonal_naive_forecast(features: pa.Table, run_id: str) -> pa.Table:
    """One row per station and hour of the next day: the same hour's bookings of the feature day."""
    import polars as pl

    frame = pl.from_arrow(features)
    without_capacity = frame.filter(pl.col("capacity") <= 0)
    if without_capacity.height:
        stations = without_capacity["start_station_id"].unique().sort().to_list()
        raise ValueError(f"gold.dim_stations: capacity must be positive for station(s) {stations}")
    forecast = frame.select(
        pl.col("feature_date"),
        (pl.col("feature_date") + pl.duration(days=1)).alias("forecast_date"),
        pl.col("start_station_id"),
        pl.col("hour_of_day"),
        pl.col("bookings_started").cast(pl.Int64).alias("expected_bookings"),
        (pl.col("bookings_started") / pl.col("capacity")).alias("expected_utilisation"),
        pl.lit(MODEL_NAME).alias("model"),
        pl.lit(run_id).alias("dagster_run_id"),
        pl.lit(None, dtype=pl.Int64).alias("model_version"),
        pl.col("bookings_started").cast(pl.Float64).alias("predicted_bookings"),
    ).sort(FORECAST_KEY_COLUMNS)
    return forecast.to_arrow().cast(FORECAST_SCHEMA)


def model_forecast(
    warehouse: Warehouse, booster, model: ModelVersionRef, start: date, end: date, run_id: str
) -> tuple[pa.Table, int]:
    """(forecast rows, Gold rows read): every station and hour of the day after each feature day in
    [start, end) that Gold holds, predicted by `booster` from that day, the six before it and the
    weather forecast of the day predicted."""
    demand, stations = read_gold_demand(warehouse, start - timedelta(days=LOOKBACK_DAYS), end)
    weather = read_weather(warehouse, start - timedelta(days=LOOKBACK_DAYS), end + timedelta(days=1))
    last = end - timedelta(days=1)
    cube = demand_cube(demand, stations, start - timedelta(days=LOOKBACK_DAYS), last, weather)
    feature_days = [d for d in cube.days_present() if d >= start]
    rows = feature_rows(cube, [d + timedelta(days=1) for d in feature_days])
    predicted = np.maximum(predict(booster, rows), 0.0) if rows.num_rows else np.zeros(0)
    capacity = np.asarray(rows.column("capacity").to_numpy(), dtype=np.float64)
    if (capacity <= 0).any():
        bad = sorted(set(np.asarray(rows.column("start_station_id"))[capacity <= 0].tolist()))
        raise ValueError(f"gold.dim_stations: capacity must be positive for station(s) {bad}")
    forecast_date = rows.column("target_date")
    forecast = pa.table(
        {
            "feature_date": pa.array([d - timedelta(days=1) for d in forecast_date.to_pylist()], pa.date32()),
            "forecast_date": forecast_date,
            "start_station_id": rows.column("start_station_id"),
            "hour_of_day": rows.column("hour_of_day"),
            "expected_bookings": pa.array(np.rint(predicted).astype(np.int64)),
            "expected_utilisation": pa.array(predicted / np.where(capacity > 0, capacity, 1.0)),
            "model": pa.array([model.name] * rows.num_rows, pa.string()),
            "dagster_run_id": pa.array([run_id] * rows.num_rows, pa.string()),
            "model_version": pa.array([model.version] * rows.num_rows, pa.int64()),
            "predicted_bookings": pa.array(predicted),
        }
    )
    return forecast.cast(FORECAST_SCHEMA).sort_by([(c, "ascending") for c in FORECAST_KEY_COLUMNS]), demand.num_rows


def forecast_table(iceberg: IcebergCatalog):
    """The forecast table, its schema evolved to FORECAST_SCHEMA when it was created before a column existed."""
    table = iceberg.load_or_create_table(FORECAST_TABLE, FORECAST_SCHEMA)
    missing = [f.name for f in FORECAST_SCHEMA if f.name not in table.schema().column_names]
    if missing:
        with table.update_schema() as update:
            update.union_by_name(FORECAST_SCHEMA)
        table = table.refresh()
    return table


def rows_of_day(rows: pa.Table, day: date) -> pa.Table:
    """The rows of one feature day."""
    import pyarrow.compute as pc

    return rows.filter(pc.equal(rows.column("feature_date"), pa.scalar(day, pa.date32())))


def feature_date_filter(start: date, end: date):
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    return And(GreaterThanOrEqual("feature_date", start.isoformat()), LessThan("feature_date", end.isoformat()))


def build_demand_forecast_asset(partitions_def: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=["ml", "demand_forecast"],
        group_name="ml",
        kinds={"python", "polars", "iceberg"},
        # The weather of the forecast day is a model input: a new forecast re-runs the newest day by automation.
        deps=[FEATURES, STATIONS, WEATHER, PRODUCTION_MODEL],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=(
            "Next-day bookings and utilisation per station and hour from gold/demand_features_hourly and "
            "gold/dim_stations, by the registry's champion model (the seasonal-naive baseline before the "
            "first promotion); each row names the model version. A run replaces its feature days."
        ),
    )
    def demand_forecast(
        context: dg.AssetExecutionContext, warehouse: Warehouse, iceberg: IcebergCatalog, registry: ModelRegistry
    ) -> dg.MaterializeResult:
        window = context.partition_time_window
        start, end = window.start.date(), window.end.date()
        features = read_features(warehouse, start, end)
        champion = registry.champion()
        if champion is None:
            forecast = seasonal_naive_forecast(features, context.run.run_id)
            model, model_version = MODEL_NAME, "none"
        else:
            booster = registry.load_booster(champion.version)
            forecast, _ = model_forecast(warehouse, booster, champion, start, end, context.run.run_id)
            model, model_version = champion.name, champion.version
        context.log.info(f"{FORECAST_TABLE}: forecast by {model} version {model_version}")
        table = forecast_table(iceberg)
        commit_with_retry(table, lambda t: t.overwrite(forecast, overwrite_filter=feature_date_filter(start, end)))
        table = table.refresh()
        snapshot = table.current_snapshot()
        context.log.info(f"{FORECAST_TABLE}: {forecast.num_rows} forecast row(s) for feature days [{start}, {end})")
        # Each feature day is its own partition: its own rows, checksum, window and input, so a range
        # run's materializations do not all carry the run's totals.
        for partition_key in context.partition_keys:
            day = partitions_def.time_window_for_partition_key(partition_key)
            day_start, day_end = day.start.date(), day.end.date()
            day_features, day_forecast = rows_of_day(features, day_start), rows_of_day(forecast, day_start)
            context.add_asset_metadata(
                audit_metadata(
                    table_name=FORECAST_TABLE,
                    uri=table.metadata_location,
                    rows_in=day_features.num_rows,
                    rows_out=day_forecast.num_rows,
                    table_row_count=int(snapshot.summary["total-records"]),
                    partition_row_count=day_forecast.num_rows,
                    checksum=table_checksum(day_forecast.drop_columns(["dagster_run_id"]), FORECAST_KEY_COLUMNS),
                    data_window=(day_start.isoformat(), day_end.isoformat()),
                    input_partitions=[f"{FEATURES.to_user_string()}:{day_start}"],
                    snapshot_id=snapshot.snapshot_id,
                    schema=FORECAST_SCHEMA,
                    extra={"model": model, "model_version": model_version},
                ),
                partition_key=partition_key,
            )
        return dg.MaterializeResult()

    return demand_forecast


def build_forecast_checks() -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(
        asset=dg.AssetKey(["ml", "demand_forecast"]),
        name=BASELINE_CHECK,
        description=(
            "The forecast's MAE on the latest days whose actuals have arrived, against the seasonal-naive "
            "baseline on the same station-hours; a model worse than the baseline is flagged (warning)."
        ),
    )
    def beats_seasonal_naive(
        context: dg.AssetCheckExecutionContext, warehouse: Warehouse, iceberg: IcebergCatalog
    ) -> dg.AssetCheckResult:
        return compare_with_baseline(warehouse, iceberg)

    return [beats_seasonal_naive]


def compare_with_baseline(warehouse: Warehouse, iceberg: IcebergCatalog) -> dg.AssetCheckResult:
    """MAE of the stored forecast vs "same hour the day before" on the forecast days Gold now holds."""
    import polars as pl

    table = iceberg.table_or_none(FORECAST_TABLE)
    forecast = pl.from_arrow(table.scan().to_arrow()) if table is not None else pl.DataFrame()
    if forecast.is_empty():
        return dg.AssetCheckResult(passed=True, metadata={"compared_days": 0}, description="no forecast yet")
    first, last = forecast["forecast_date"].min(), forecast["forecast_date"].max()
    demand, stations = read_gold_demand(warehouse, first - timedelta(days=1), last + timedelta(days=1))
    cube = demand_cube(demand, stations, first - timedelta(days=1), last)
    present = set(cube.days_present())
    days = sorted(
        d for d in set(forecast["forecast_date"].to_list()) if d in present and d - timedelta(days=1) in present
    )
    days = days[-CHECK_DAYS:]
    if not days:
        return dg.AssetCheckResult(
            passed=True, metadata={"compared_days": 0}, description="no forecast day has its actuals in Gold yet"
        )
    position = {int(station): i for i, station in enumerate(cube.station_ids)}
    model_error, naive_error, versions = 0.0, 0.0, set()
    for day in days:
        predicted = np.zeros_like(cube.bookings[0])
        rows = forecast.filter(pl.col("forecast_date") == day)
        for station, hour, value in rows.select("start_station_id", "hour_of_day", "predicted_bookings").iter_rows():
            if station in position:
                predicted[position[station], hour] = value if value is not None else 0.0
        versions |= set(rows["model_version"].to_list())
        actual, yesterday = cube.bookings[cube.day_index(day)], cube.bookings[cube.day_index(day) - 1]
        model_error += float(np.abs(actual - predicted).sum())
        naive_error += float(np.abs(actual - yesterday).sum())
    cells = len(days) * cube.bookings[0].size
    model_mae, naive_mae = model_error / cells, naive_error / cells
    passed = model_mae <= naive_mae
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"forecast MAE {model_mae:.4f} vs seasonal-naive {naive_mae:.4f} on {len(days)} day(s)"
            + ("" if passed else ": the model is worse than the baseline")
        ),
        metadata={
            "compared_days": len(days),
            "days": f"[{days[0]}, {days[-1] + timedelta(days=1)})",
            "forecast_mae": model_mae,
            "seasonal_naive_mae": naive_mae,
            "model_versions": dg.MetadataValue.json(sorted(str(v) for v in versions)),
        },
    )
