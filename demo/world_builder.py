"""Build the simulated world: stations, customers and vehicles, then every booking and payment of the window.

Pure functions of the config (see `demo/world.py` for the model they fill and the random streams they
draw from): the same config always builds the same world.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import numpy as np

from demo.world import (
    CANCEL_PROB,
    CITIES,
    CITY_LAT,
    CITY_LON,
    CITY_NAMES,
    CITY_SHARE,
    CUSTOMER_MOVE_RATE_PER_DAY,
    DAY_US,
    FIRST_NAMES,
    HOUR_US,
    KM_PER_DEGREE,
    LANDMARKS,
    LAST_NAMES,
    MINUTE_US,
    NEVER,
    PRICE_PER_KM_CENTS,
    PRICE_PER_MINUTE_CENTS,
    REFUND_DELAY_US,
    REFUND_PROB,
    SLOT_US,
    SLOTS_PER_DAY,
    TRIP_SPEED_KMH,
    UNLOCK_FEE_CENTS,
    VEHICLE_MODELS,
    VEHICLE_REHOME_RATE_PER_DAY,
    VEHICLE_TYPE_SHARE,
    VEHICLE_TYPES,
    Bookings,
    CityIndex,
    Customers,
    DemoConfig,
    Payments,
    Stations,
    Stream,
    Trips,
    Vehicles,
    World,
    scaled_count,
    slot_booking_prob,
    sub_rng,
    to_us,
)


def _before_start(rng: np.random.Generator, start_us: int, n: int, min_days: float, max_days: float) -> np.ndarray:
    return start_us - rng.integers(int(min_days * DAY_US), int(max_days * DAY_US), n)


def _churners(rng: np.random.Generator, cfg: DemoConfig, n: int, rate_per_day: float) -> tuple[np.ndarray, np.ndarray]:
    """Which members change during the window (at least one, so dimension updates always occur) and when."""
    count = min(n, max(1, round(n * rate_per_day * cfg.days)))
    members = rng.choice(n, count, replace=False)
    changed_at = np.full(n, NEVER, dtype=np.int64)
    changed_at[members] = to_us(cfg.start_dt) + rng.integers(0, cfg.days * DAY_US, count)
    return members, changed_at


def _join(*parts: np.ndarray | str) -> np.ndarray:
    joined = np.asarray(parts[0])
    for part in parts[1:]:
        joined = np.char.add(joined, part)
    return joined


def build_stations(cfg: DemoConfig) -> Stations:
    rng = sub_rng(cfg.seed, Stream.STATIONS)
    n = scaled_count(cfg.scale, 200, 5)
    city = rng.choice(len(CITIES), n, p=CITY_SHARE)
    ids = np.arange(1, n + 1).astype(str)
    name = _join(CITY_NAMES[city], " ", LANDMARKS[rng.integers(0, len(LANDMARKS), n)], " #", ids)
    return Stations(
        name=name,
        city=city,
        lat=np.round(CITY_LAT[city] + rng.normal(0, 0.03, n), 6),
        lon=np.round(CITY_LON[city] + rng.normal(0, 0.045, n), 6),
        capacity=rng.integers(10, 41, n),
        created_at=_before_start(rng, to_us(cfg.start_dt), n, 60, 1000),
        by_city=CityIndex.of(city),
    )


def build_customers(cfg: DemoConfig) -> Customers:
    rng = sub_rng(cfg.seed, Stream.CUSTOMERS)
    n = scaled_count(cfg.scale, 20_000, 50)
    first = FIRST_NAMES[rng.integers(0, len(FIRST_NAMES), n)]
    last = LAST_NAMES[rng.integers(0, len(LAST_NAMES), n)]
    ids = np.arange(1, n + 1).astype(str)
    city = rng.choice(len(CITIES), n, p=CITY_SHARE)
    segment = np.where(rng.random(n) < 0.15, "business", "private")
    created_at = _before_start(rng, to_us(cfg.start_dt), n, 1, 900)
    movers, moved_at = _churners(rng, cfg, n, CUSTOMER_MOVE_RATE_PER_DAY)
    new_city = city.copy()
    new_city[movers] = (city[movers] + rng.integers(1, len(CITIES), len(movers))) % len(CITIES)
    return Customers(
        full_name=_join(first, " ", last),
        email=np.char.lower(_join(first, ".", last, ".", ids, "@example.com")),
        segment=segment,
        city=city,
        created_at=created_at,
        moved_at=moved_at,
        new_city=new_city,
        by_city=CityIndex.of(city),
    )


def build_vehicles(cfg: DemoConfig, stations: Stations) -> Vehicles:
    rng = sub_rng(cfg.seed, Stream.VEHICLES)
    n = scaled_count(cfg.scale, 1000, 10)
    vehicle_type = rng.choice(len(VEHICLE_TYPES), n, p=VEHICLE_TYPE_SHARE)
    model = VEHICLE_MODELS[vehicle_type, rng.integers(0, VEHICLE_MODELS.shape[1], n)]
    home = rng.integers(0, stations.size, n)
    commissioned_at = _before_start(rng, to_us(cfg.start_dt), n, 7, 700)
    created_at = commissioned_at - rng.integers(HOUR_US, 10 * DAY_US, n)
    age_days = (to_us(cfg.start_dt) - commissioned_at) / DAY_US
    base_odometer_m = np.round(age_days * rng.uniform(3.0, 25.0, n) * 1000).astype(np.int64)
    movers, rehomed_at = _churners(rng, cfg, n, VEHICLE_REHOME_RATE_PER_DAY)
    new_home = home.copy()
    new_home[movers] = stations.by_city.pick_other(home[movers], stations.city[home[movers]], rng.random(len(movers)))
    return Vehicles(
        vehicle_type=vehicle_type,
        model=model,
        home_station=home,
        commissioned_at=commissioned_at,
        created_at=created_at,
        rehomed_at=rehomed_at,
        new_home_station=new_home,
        base_odometer_m=base_odometer_m,
        battery_phase=rng.uniform(0.0, 80.0, n),
        park_offset_deg=rng.normal(0.0, 0.0002, (n, 2)),
    )


def _draw_day(cfg: DemoConfig, vehicles: Vehicles, day: date) -> dict[str, np.ndarray]:
    """One day's bookings with their predetermined timings; draw order is fixed, whatever is used."""
    rng = sub_rng(cfg.seed, Stream.BOOKINGS, day.toordinal())
    present = rng.random((vehicles.size, SLOTS_PER_DAY)) < slot_booking_prob(day)
    vehicle, slot = np.nonzero(present)
    m = len(vehicle)
    booked_at = to_us(datetime.combine(day, time())) + slot * SLOT_US + rng.integers(0, 40 * MINUTE_US, m)
    cancelled = rng.random(m) < CANCEL_PROB
    cancel_delay = rng.integers(MINUTE_US, 30 * MINUTE_US + 1, m)
    start_delay = rng.integers(2 * MINUTE_US, 15 * MINUTE_US + 1, m)
    duration = rng.integers(5 * MINUTE_US, 60 * MINUTE_US + 1, m)
    speed_range = TRIP_SPEED_KMH[vehicles.vehicle_type[vehicle]]
    avg_speed = speed_range[:, 0] + (speed_range[:, 1] - speed_range[:, 0]) * rng.random(m)
    started_at = booked_at + start_delay
    return {
        "vehicle": vehicle,
        "booked_at": booked_at,
        "cancelled_at": np.where(cancelled, booked_at + cancel_delay, NEVER),
        "started_at": np.where(cancelled, NEVER, started_at),
        "ended_at": np.where(cancelled, NEVER, started_at + duration),
        "distance_m": np.where(cancelled, 0, np.round(avg_speed * duration / HOUR_US * 1000)).astype(np.int64),
        "avg_speed_kmh": avg_speed,
        "end_pick": rng.random(m),
        "customer_pick": rng.random(m),
        "bulge": rng.normal(0.0, 1.0, (m, 2)),
        "refunded": ~cancelled & (rng.random(m) < REFUND_PROB),
    }


def pick_popular_station(stations: Stations, city: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A station of `city` chosen by uniform `u` with probability proportional to its capacity.

    Trips end more often at big stations, and a vehicle's next trip starts where the last one ended, so
    a station's demand grows with its capacity (in gold/dim_stations): learnable station signal.
    """
    index = stations.by_city
    weight = stations.capacity[index.order].astype(np.float64)
    cumulative = np.cumsum(weight)
    before_city = np.concatenate([[0.0], cumulative])[index.offset]  # weight of the cities sorted before
    city_weight = np.concatenate([[0.0], cumulative])[index.offset + index.count] - before_city
    target = before_city[city] + u * city_weight[city]
    position = np.searchsorted(cumulative, target, side="right")
    last_of_city = index.offset[city] + np.maximum(index.count[city] - 1, 0)
    chosen = index.order[np.clip(position, index.offset[city], last_of_city)]
    return np.where(index.count[city] > 0, chosen, index.pick(city, u))


def _chain_start_stations(
    vehicle: np.ndarray, active: np.ndarray, end_station: np.ndarray, home: np.ndarray
) -> np.ndarray:
    """A booking starts where the vehicle's previous trip ended (its home before any trip).

    Arrays are ordered by (vehicle, booked_at); `active` marks bookings that became trips.
    """
    n = len(vehicle)
    last_trip_upto = np.maximum.accumulate(np.where(active, np.arange(n), -1)) if n else np.empty(0, np.int64)
    previous = np.concatenate([[-1], last_trip_upto[:-1]]).astype(np.int64) if n else last_trip_upto
    has_previous = (previous >= 0) & (vehicle[np.maximum(previous, 0)] == vehicle)
    return np.where(has_previous, end_station[np.maximum(previous, 0)], home[vehicle])


def build_bookings(cfg: DemoConfig, stations: Stations, customers: Customers, vehicles: Vehicles) -> Bookings:
    days = [_draw_day(cfg, vehicles, cfg.start + timedelta(days=i)) for i in range(cfg.days)]
    raw = {key: np.concatenate([d[key] for d in days]) for key in days[0]}
    # booking_id follows booking time; ties (never in practice) by vehicle
    raw = {key: values[np.lexsort((raw["vehicle"], raw["booked_at"]))] for key, values in raw.items()}
    vehicle = raw["vehicle"]
    city = stations.city[vehicles.home_station[vehicle]]
    end_station = pick_popular_station(stations, city, raw["end_pick"])
    by_vehicle = np.lexsort((raw["booked_at"], vehicle))
    start_station = np.empty_like(end_station)
    start_station[by_vehicle] = _chain_start_stations(
        vehicle[by_vehicle],
        raw["ended_at"][by_vehicle] != NEVER,
        end_station[by_vehicle],
        vehicles.home_station,
    )
    bulge_deg = raw["bulge"] * (raw["distance_m"] / 1000 / 4 / KM_PER_DEGREE)[:, None]
    return Bookings(
        customer=customers.by_city.pick(stations.city[start_station], raw["customer_pick"]),
        vehicle=vehicle,
        start_station=start_station,
        end_station=end_station,
        booked_at=raw["booked_at"],
        cancelled_at=raw["cancelled_at"],
        started_at=raw["started_at"],
        ended_at=raw["ended_at"],
        distance_m=raw["distance_m"],
        avg_speed_kmh=raw["avg_speed_kmh"],
        bulge_deg=bulge_deg,
        refunded=raw["refunded"],
    )


def build_payments(bookings: Bookings, vehicles: Vehicles) -> Payments:
    paid = np.nonzero(bookings.ended_at != NEVER)[0]
    paid = paid[np.lexsort((paid, bookings.ended_at[paid]))]
    minutes = (bookings.ended_at[paid] - bookings.started_at[paid]) / MINUTE_US
    km = bookings.distance_m[paid] / 1000
    per_minute = PRICE_PER_MINUTE_CENTS[vehicles.vehicle_type[bookings.vehicle[paid]]]
    paid_at = bookings.ended_at[paid]
    return Payments(
        booking=paid,
        amount_cents=np.round(UNLOCK_FEE_CENTS + per_minute * minutes + PRICE_PER_KM_CENTS * km).astype(np.int64),
        paid_at=paid_at,
        refunded_at=np.where(bookings.refunded[paid], paid_at + REFUND_DELAY_US, NEVER),
    )


def build_trips(cfg: DemoConfig, bookings: Bookings) -> Trips:
    booking = np.nonzero(bookings.ended_at != NEVER)[0]
    booking = booking[np.lexsort((bookings.started_at[booking], bookings.vehicle[booking]))]
    vehicle = bookings.vehicle[booking]
    distance = bookings.distance_m[booking]
    before = np.cumsum(distance) - distance
    first_of_vehicle = np.searchsorted(vehicle, vehicle, side="left")
    origin_us = to_us(cfg.start_dt) - DAY_US
    span_us = (cfg.days + 3) * DAY_US
    return Trips(
        booking=booking,
        vehicle=vehicle,
        key=vehicle * span_us + (bookings.started_at[booking] - origin_us),
        origin_us=origin_us,
        span_us=span_us,
        cum_before_m=before - before[first_of_vehicle],
    )


def build_world(cfg: DemoConfig) -> World:
    """The complete simulated history of the window; cheap enough (well under a second) to rebuild."""
    stations = build_stations(cfg)
    customers = build_customers(cfg)
    vehicles = build_vehicles(cfg, stations)
    bookings = build_bookings(cfg, stations, customers, vehicles)
    return World(
        cfg=cfg,
        stations=stations,
        customers=customers,
        vehicles=vehicles,
        bookings=bookings,
        payments=build_payments(bookings, vehicles),
        trips=build_trips(cfg, bookings),
    )
