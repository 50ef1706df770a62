"""Demand-model features from Gold: one row per station, hour and target day, with only the past as input.

`gold/demand_features_hourly` holds a row per station and hour that had bookings; a station-hour
without one had none (on a day Gold holds at all). The model needs the zeros too, so the rows are
laid out as a dense cube (day x station x hour) in which a day Gold does not hold is unknown (NaN),
not zero. A row for target day t reads the cube at days < t only (yesterday, a week ago, the
week's mean at that hour) plus calendar and station attributes, so the same code builds the training
rows, the holdout rows and tomorrow's forecast rows, and no row can see its own target.

The weather of the target hour at the station's weather location is a feature too: it is a forecast,
known before the day starts (the weather API forecasts 48 hours ahead), so using it sees no target. It
is read from `silver.weather_conditions` by `gold.dim_stations.weather_location_id` rather than from
`gold.demand_features_hourly`, which holds only the station-hours that had bookings: the hours without
bookings (the zeros the model must learn too) need their weather as well. Gold's weather columns come
from the same table by the same key, so the two agree wherever Gold has a row. An hour without a fetched
forecast stays missing (NaN), which LightGBM treats as missing, not as zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import pyarrow as pa

from resources.warehouse import Warehouse

HOURS = 24
# The target hour's weather at the station's location (silver/weather_conditions); is_wet as 0/1.
WEATHER_COLUMNS = ["temperature_c", "precipitation_mm", "wind_kmh", "is_wet"]
LOOKBACK_DAYS = 7  # the longest lag: a target day needs the 7 days before it
FEATURE_COLUMNS = [
    "hour_of_day",
    "day_of_week",
    "capacity",
    "lat",
    "lon",
    "bookings_lag_1d",
    "bookings_lag_7d",
    "bookings_mean_7d",
    *WEATHER_COLUMNS,
]
TARGET = "bookings"
KEY_COLUMNS = ["target_date", "start_station_id", "hour_of_day"]

# Portable SQL (quoted identifiers, `?` parameters): the same text runs on DuckDB and on Trino.
GOLD_DEMAND_SQL = """
SELECT "feature_date", "start_station_id", CAST("hour_of_day" AS BIGINT) AS "hour_of_day",
       CAST("bookings_started" AS BIGINT) AS "bookings_started"
FROM "gold"."demand_features_hourly"
WHERE "feature_date" >= ? AND "feature_date" < ?
"""
# Every station's weather per hour: the stations' location key joined to the weather of that location.
WEATHER_SQL = """
SELECT s."station_id", w."hour_start", CAST(w."temperature_c" AS DOUBLE) AS "temperature_c",
       CAST(w."precipitation_mm" AS DOUBLE) AS "precipitation_mm", CAST(w."wind_kmh" AS DOUBLE) AS "wind_kmh",
       CASE WHEN w."is_wet" THEN 1.0 ELSE 0.0 END AS "is_wet"
FROM "silver"."weather_conditions" AS w
JOIN "gold"."dim_stations" AS s ON s."weather_location_id" = w."location_id"
WHERE w."hour_start" >= ? AND w."hour_start" < ?
"""
GOLD_STATIONS_SQL = """
SELECT "station_id", CAST("capacity" AS BIGINT) AS "capacity", CAST("lat" AS DOUBLE) AS "lat",
       CAST("lon" AS DOUBLE) AS "lon"
FROM "gold"."dim_stations"
ORDER BY "station_id"
"""

FEATURE_SCHEMA = pa.schema(
    [
        pa.field("target_date", pa.date32(), nullable=False),
        pa.field("start_station_id", pa.int64(), nullable=False),
        pa.field("hour_of_day", pa.int64(), nullable=False),
        pa.field("day_of_week", pa.int64(), nullable=False),  # ISO: Monday = 1
        pa.field("capacity", pa.int64(), nullable=False),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
        pa.field("bookings_lag_1d", pa.float64()),  # null: that day is not in Gold
        pa.field("bookings_lag_7d", pa.float64()),
        pa.field("bookings_mean_7d", pa.float64()),
        *(pa.field(name, pa.float64()) for name in WEATHER_COLUMNS),  # null: no forecast fetched for that hour
        pa.field(TARGET, pa.float64()),  # null for a day still to come (the forecast)
    ]
)


@dataclass(frozen=True)
class DemandCube:
    """Bookings per (day, station, hour) over consecutive days from `first_day`; NaN for a day not in Gold."""

    first_day: date
    station_ids: np.ndarray
    capacity: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    bookings: np.ndarray  # float64, shape (days, stations, 24)
    # float64, shape (days + 1, stations, 24, len(WEATHER_COLUMNS)): one day more than `bookings`, for the
    # forecast's target day; NaN where no forecast was fetched (or no weather was read)
    weather: np.ndarray | None = None

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range(self.bookings.shape[0])]

    def day_index(self, day: date) -> int:
        return (day - self.first_day).days

    def days_present(self) -> list[date]:
        known = ~np.isnan(self.bookings[:, 0, 0]) if self.bookings.size else np.zeros(0, bool)
        return [day for day, present in zip(self.days, known, strict=True) if present]


def read_gold_demand(warehouse: Warehouse, start: date, end: date) -> tuple[pa.Table, pa.Table]:
    """(feature rows of the days [start, end), every station) from Gold, on either warehouse engine."""
    return warehouse.query_arrow(GOLD_DEMAND_SQL, [start, end]), warehouse.query_arrow(GOLD_STATIONS_SQL, [])


def read_weather(warehouse: Warehouse, start: date, end: date) -> pa.Table:
    """Every station's weather per hour of the days [start, end), on either warehouse engine."""
    to_hour = datetime.combine  # the parameters are timestamps: hour_start is one
    return warehouse.query_arrow(WEATHER_SQL, [to_hour(start, time()), to_hour(end, time())])


def weather_cube(weather: pa.Table, station_ids: np.ndarray, first_day: date, n_days: int) -> np.ndarray:
    """The weather rows laid out as (day, station, hour, column) for `n_days` from `first_day`; NaN elsewhere."""
    cube = np.full((max(n_days, 0), len(station_ids), HOURS, len(WEATHER_COLUMNS)), np.nan)
    if weather.num_rows == 0 or len(station_ids) == 0:
        return cube
    hour_start = weather.column("hour_start").cast(pa.timestamp("us"))
    micros = np.asarray(hour_start.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    hours_since_first = micros // 3_600_000_000 - (first_day - date(1970, 1, 1)).days * HOURS
    day_index, hour = hours_since_first // HOURS, hours_since_first % HOURS
    station = np.asarray(weather.column("station_id").to_numpy(), dtype=np.int64)
    position = np.minimum(np.searchsorted(station_ids, station), len(station_ids) - 1)
    keep = (day_index >= 0) & (day_index < n_days) & (station_ids[position] == station)
    values = np.column_stack(
        [np.asarray(weather.column(name).to_numpy(zero_copy_only=False), dtype=np.float64) for name in WEATHER_COLUMNS]
    )
    cube[day_index[keep], position[keep], hour[keep]] = values[keep]
    return cube


def demand_cube(
    demand: pa.Table, stations: pa.Table, first_day: date, last_day: date, weather: pa.Table | None = None
) -> DemandCube:
    """Lay the sparse Gold rows out densely for the days [first_day, last_day] and every station.

    A day with no Gold row at all is unknown (NaN); a missing station-hour of a known day is zero.
    Rows of stations missing from `stations` are an error: the two marts disagree. `weather`
    (`read_weather` over [first_day, last_day + 2 days)) gives the target hours' weather; without it the
    weather features are missing.
    """
    station_ids = np.asarray(stations.column("station_id").to_numpy(), dtype=np.int64)
    n_days = (last_day - first_day).days + 1
    cube = np.full((max(n_days, 0), len(station_ids), HOURS), np.nan)
    days = np.asarray(demand.column("feature_date").cast(pa.int32()).to_numpy(), dtype=np.int64)
    day_index = days - (first_day - date(1970, 1, 1)).days
    inside = (day_index >= 0) & (day_index < n_days)
    station = np.asarray(demand.column("start_station_id").to_numpy(), dtype=np.int64)[inside]
    hour = np.asarray(demand.column("hour_of_day").to_numpy(), dtype=np.int64)[inside]
    count = np.asarray(demand.column("bookings_started").to_numpy(), dtype=np.float64)[inside]
    day_index = day_index[inside]
    position = np.searchsorted(station_ids, station)
    unknown = (position >= len(station_ids)) | (station_ids[np.minimum(position, len(station_ids) - 1)] != station)
    if unknown.any():
        missing = sorted(set(station[unknown].tolist()))[:10]
        raise ValueError(f"gold.demand_features_hourly has station(s) {missing} that gold.dim_stations lacks")
    cube[np.unique(day_index)] = 0.0
    np.add.at(cube, (day_index, position, hour), count)
    return DemandCube(
        first_day=first_day,
        station_ids=station_ids,
        capacity=np.asarray(stations.column("capacity").to_numpy(), dtype=np.int64),
        lat=np.asarray(stations.column("lat").to_numpy(), dtype=np.float64),
        lon=np.asarray(stations.column("lon").to_numpy(), dtype=np.float64),
        bookings=cube,
        weather=weather_cube(weather, station_ids, first_day, n_days + 1) if weather is not None else None,
    )


def feature_rows(cube: DemandCube, target_days: list[date]) -> pa.Table:
    """One row per target day, station and hour: features from the days before it, and its target.

    A target day may lie one day past the cube (tomorrow): its target is null, its features known.
    """
    n_stations = len(cube.station_ids)
    columns: dict[str, list[np.ndarray]] = {field.name: [] for field in FEATURE_SCHEMA}
    hours = np.tile(np.arange(HOURS, dtype=np.int64), n_stations)
    per_day = n_stations * HOURS

    def day_values(index: int) -> np.ndarray:
        if 0 <= index < cube.bookings.shape[0]:
            return cube.bookings[index].reshape(-1)
        return np.full(per_day, np.nan)

    def day_weather(index: int) -> np.ndarray:
        if cube.weather is not None and 0 <= index < cube.weather.shape[0]:
            return cube.weather[index].reshape(per_day, len(WEATHER_COLUMNS))
        return np.full((per_day, len(WEATHER_COLUMNS)), np.nan)

    for day in target_days:
        t = cube.day_index(day)
        history = np.stack([day_values(t - k) for k in range(1, LOOKBACK_DAYS + 1)])
        known = ~np.isnan(history)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(known.any(axis=0), np.nansum(history, axis=0) / np.maximum(known.sum(axis=0), 1), np.nan)
        columns["target_date"].append(np.full(per_day, day, dtype="datetime64[D]"))
        columns["start_station_id"].append(np.repeat(cube.station_ids, HOURS))
        columns["hour_of_day"].append(hours)
        columns["day_of_week"].append(np.full(per_day, day.isoweekday(), dtype=np.int64))
        columns["capacity"].append(np.repeat(cube.capacity, HOURS))
        columns["lat"].append(np.repeat(cube.lat, HOURS))
        columns["lon"].append(np.repeat(cube.lon, HOURS))
        columns["bookings_lag_1d"].append(history[0])
        columns["bookings_lag_7d"].append(history[LOOKBACK_DAYS - 1])
        columns["bookings_mean_7d"].append(mean)
        weather = day_weather(t)
        for i, name in enumerate(WEATHER_COLUMNS):
            columns[name].append(weather[:, i])
        columns[TARGET].append(day_values(t))
    arrays = []
    for field in FEATURE_SCHEMA:
        parts = columns[field.name]
        values = np.concatenate(parts) if parts else np.zeros(0)
        if pa.types.is_floating(field.type):
            arrays.append(pa.array(values, type=field.type, from_pandas=True))  # NaN -> null
        else:
            arrays.append(pa.array(values).cast(field.type))
    return pa.Table.from_arrays(arrays, schema=FEATURE_SCHEMA)


@dataclass(frozen=True)
class TrainingWindow:
    """The days a retraining as of `as_of` uses: the most recent `holdout_days` are the holdout, and up to
    `training_days` before them (fewer while history is shorter) train the model."""

    as_of: date
    training_days: int = 90
    holdout_days: int = 7

    @property
    def holdout_start(self) -> date:
        return self.as_of - timedelta(days=self.holdout_days - 1)

    @property
    def training_start(self) -> date:
        return self.holdout_start - timedelta(days=self.training_days)

    @property
    def read_start(self) -> date:
        """The first Gold day read: the lags of the first training day reach a week further back."""
        return self.training_start - timedelta(days=LOOKBACK_DAYS)

    def holdout_days_list(self) -> list[date]:
        return [self.holdout_start + timedelta(days=i) for i in range(self.holdout_days)]


def training_rows(cube: DemandCube, window: TrainingWindow) -> tuple[pa.Table, list[date], list[date]]:
    """(rows, training days, holdout days) for the window: only days Gold holds become rows.

    Every holdout day must be in Gold (a partial holdout would make the gate compare unlike things);
    the training days are those of the window Gold holds.
    """
    present = set(cube.days_present())
    holdout = window.holdout_days_list()
    missing = [day.isoformat() for day in holdout if day not in present]
    if missing:
        raise MissingFeatureDays(f"gold.demand_features_hourly has no rows for holdout day(s) {missing}")
    training = sorted(day for day in present if window.training_start <= day < window.holdout_start)
    return feature_rows(cube, training + holdout), training, holdout


class MissingFeatureDays(ValueError):
    """Gold lacks days the model needs: a data state, not a transient error."""


def split_rows(rows: pa.Table, holdout_start: date) -> tuple[pa.Table, pa.Table]:
    """(training rows, holdout rows): strictly by target day, the holdout being the days from `holdout_start`."""
    import pyarrow.compute as pc

    is_holdout = pc.greater_equal(rows.column("target_date"), pa.scalar(holdout_start, pa.date32()))
    return rows.filter(pc.invert(is_holdout)), rows.filter(is_holdout)
