"""ML: next-day booking demand per station and hour, a Python asset downstream of the dbt marts.

The forecast is the seasonal-naive baseline every demand model is compared against: tomorrow's
bookings in an hour at a station are today's bookings in that hour (`gold/demand_features_hourly`),
and the expected utilisation divides them by the station's capacity (`gold/dim_stations`). It exists
so the platform has a Python consumer of dbt output: a failing blocking dbt test on either input keeps
it from being published, in the same run and, through its automation condition, in later ones.
"""

from datetime import date

import dagster as dg
import pyarrow as pa

from audit.metadata import audit_metadata, table_checksum
from resources.iceberg import IcebergCatalog, commit_with_retry
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
    ]
)

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
    ).sort(FORECAST_KEY_COLUMNS)
    return forecast.to_arrow().cast(FORECAST_SCHEMA)


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
        deps=[FEATURES, STATIONS],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=(
            "Next-day bookings and utilisation per station and hour (seasonal-naive baseline) from "
            "gold/demand_features_hourly and gold/dim_stations; a run replaces its feature days."
        ),
    )
    def demand_forecast(
        context: dg.AssetExecutionContext, warehouse: Warehouse, iceberg: IcebergCatalog
    ) -> dg.MaterializeResult:
        window = context.partition_time_window
        start, end = window.start.date(), window.end.date()
        features = read_features(warehouse, start, end)
        forecast = seasonal_naive_forecast(features, context.run.run_id)
        table = iceberg.load_or_create_table(FORECAST_TABLE, FORECAST_SCHEMA)
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
                    extra={"model": MODEL_NAME},
                ),
                partition_key=partition_key,
            )
        return dg.MaterializeResult()

    return demand_forecast
