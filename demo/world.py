"""The simulated fleet: dimensions and the whole booking history of a demo window, as numpy arrays.

Everything here is a pure function of the config (seed, scale, start, days); `as_of` only decides how
much of it is visible (see `oltp_state`). Random draws come from sub-generators keyed by stream and by
absolute day, so a day's bookings never depend on when the world is observed. Times are int64
microseconds since the Unix epoch, naive UTC; `NEVER` marks an event that does not happen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import IntEnum

import numpy as np

US = 1_000_000
MINUTE_US = 60 * US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
NEVER = np.iinfo(np.int64).max
EPOCH = datetime(1970, 1, 1)

# name, centre lat, centre lon, share of stations and customers
CITIES: tuple[tuple[str, float, float, float], ...] = (
    ("Berlin", 52.5200, 13.4050, 0.30),
    ("Hamburg", 53.5511, 9.9937, 0.18),
    ("Munich", 48.1372, 11.5756, 0.17),
    ("Cologne", 50.9375, 6.9603, 0.12),
    ("Frankfurt", 50.1109, 8.6821, 0.10),
    ("Stuttgart", 48.7758, 9.1829, 0.07),
    ("Leipzig", 51.3397, 12.3731, 0.06),
)
CITY_NAMES = np.array([c[0] for c in CITIES])
CITY_LAT = np.array([c[1] for c in CITIES])
CITY_LON = np.array([c[2] for c in CITIES])
CITY_SHARE = np.array([c[3] for c in CITIES]) / sum(c[3] for c in CITIES)
# fmt: off
LANDMARKS = np.array([
    "Hauptbahnhof", "Marktplatz", "Rathaus", "Universitaet", "Stadtpark", "Hafen", "Messe", "Altstadt",
    "Zoo", "Nordbahnhof", "Suedkreuz", "Klinikum",
])
FIRST_NAMES = np.array([
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hannah", "Jonas", "Lea", "Leon", "Lina",
    "Lukas", "Marie", "Max", "Mia", "Noah", "Paul", "Sofia", "Tim", "Emil", "Ida", "Finn", "Nora",
])
LAST_NAMES = np.array([
    "Mueller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
    "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Neumann", "Schwarz", "Braun", "Zimmermann",
    "Krueger", "Hartmann",
])
# fmt: on

# Vehicle types: share of the fleet, models, average trip speed range (km/h), price per minute (cents),
# battery use (percent per km).
VEHICLE_TYPES = np.array(["e_scooter", "e_bike", "e_car"])
VEHICLE_TYPE_SHARE = np.array([0.6, 0.3, 0.1])
VEHICLE_MODELS = np.array(
    [
        ["Niu KQi3", "Segway Max G2", "Xiaomi 4 Pro"],
        ["VanMoof S5", "Cowboy 4", "Riese Mueller Nevo"],
        ["Renault Zoe", "Fiat 500e", "VW e-up"],
    ]
)
TRIP_SPEED_KMH = np.array([[12.0, 20.0], [14.0, 22.0], [18.0, 35.0]])
PRICE_PER_MINUTE_CENTS = np.array([25.0, 20.0, 40.0])
BATTERY_PCT_PER_KM = np.array([2.5, 1.2, 0.5])
UNLOCK_FEE_CENTS = 100.0
PRICE_PER_KM_CENTS = 30.0

# A vehicle-day has 12 two-hour slots holding at most one booking each; a booking (booked within the first
# 40 min, started <= 15 min later, <= 60 min long) always ends inside its slot, so a vehicle's trips never
# overlap. The demand curve sets each slot's booking probability; it averages 5 bookings per vehicle-day.
SLOT_US = 2 * HOUR_US
SLOT_DEMAND = np.array([0.2, 0.1, 0.3, 1.0, 1.0, 1.1, 1.2, 1.0, 1.3, 1.2, 0.8, 0.5])
BOOKINGS_PER_VEHICLE_DAY = 5.0
SLOT_BOOKING_PROB = BOOKINGS_PER_VEHICLE_DAY * SLOT_DEMAND / SLOT_DEMAND.sum()
CANCEL_PROB = 0.08
REFUND_PROB = 0.03
REFUND_DELAY_US = DAY_US
# Dimension churn: share of customers moving city / vehicles re-homed, per day of the window.
CUSTOMER_MOVE_RATE_PER_DAY = 0.0015
VEHICLE_REHOME_RATE_PER_DAY = 0.002
KM_PER_DEGREE = 111.0


class Stream(IntEnum):
    """Independent random streams: adding draws to one never shifts another."""

    STATIONS = 1
    CUSTOMERS = 2
    VEHICLES = 3
    BOOKINGS = 4
    TELEMETRY = 5


def sub_rng(seed: int, stream: Stream, *keys: int) -> np.random.Generator:
    """Generator for one stream (and day or hour): reproducible whatever else is generated."""
    return np.random.default_rng([seed, int(stream), *keys])


def to_us(moment: datetime) -> int:
    """Naive UTC datetime -> microseconds since the epoch."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(micros))


@dataclass(frozen=True)
class DemoConfig:
    """What the simulated world is a pure function of."""

    start: date  # first day of the window (UTC)
    days: int = 30
    scale: float = 1.0
    seed: int = 42

    def __post_init__(self) -> None:
        if self.days < 1 or self.scale <= 0 or self.seed < 0:
            raise ValueError(f"need days >= 1, scale > 0 and seed >= 0, got {self}")

    @property
    def start_dt(self) -> datetime:
        return datetime.combine(self.start, time())

    @property
    def end(self) -> datetime:
        """End of the window, exclusive, naive UTC."""
        return self.start_dt + timedelta(days=self.days)

    def to_json(self) -> dict:
        return {"start": self.start.isoformat(), "days": self.days, "scale": self.scale, "seed": self.seed}

    @classmethod
    def from_json(cls, raw: dict) -> DemoConfig:
        return cls(
            start=date.fromisoformat(raw["start"]),
            days=int(raw["days"]),
            scale=float(raw["scale"]),
            seed=int(raw["seed"]),
        )


def scaled_count(scale: float, per_unit: int, minimum: int) -> int:
    return max(minimum, round(per_unit * scale))


@dataclass(frozen=True)
class CityIndex:
    """Members (stations or customers) grouped by city, to draw a random member of a given city."""

    order: np.ndarray  # member indices sorted by city
    offset: np.ndarray  # first position of each city in `order`
    count: np.ndarray  # members per city
    rank: np.ndarray  # position of each member within its city

    @classmethod
    def of(cls, city: np.ndarray) -> CityIndex:
        order = np.argsort(city, kind="stable")
        count = np.bincount(city, minlength=len(CITIES))
        offset = np.concatenate([[0], np.cumsum(count)[:-1]])
        rank = np.empty(len(city), dtype=np.int64)
        rank[order] = np.arange(len(city)) - offset[city[order]]
        return cls(order, offset, count, rank)

    @property
    def size(self) -> int:
        return len(self.order)

    def pick(self, city: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A member of `city` chosen by uniform `u`; any member when the city has none."""
        count = self.count[city]
        within = np.minimum((u * np.maximum(count, 1)).astype(np.int64), np.maximum(count - 1, 0))
        chosen = self.order[np.minimum(self.offset[city] + within, self.size - 1)]
        anywhere = np.minimum((u * self.size).astype(np.int64), self.size - 1)
        return np.where(count > 0, chosen, anywhere)

    def pick_other(self, member: np.ndarray, city: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Another member of the same city, or of any city when the member is alone in its own."""
        count = self.count[city]
        step = 1 + (u * np.maximum(count - 1, 1)).astype(np.int64)
        same_city = self.order[self.offset[city] + (self.rank[member] + step) % np.maximum(count, 1)]
        anywhere = (member + 1 + (u * (self.size - 1)).astype(np.int64)) % self.size
        return np.where(count > 1, same_city, anywhere)


@dataclass(frozen=True)
class Stations:
    name: np.ndarray
    city: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    capacity: np.ndarray
    created_at: np.ndarray
    by_city: CityIndex

    @property
    def size(self) -> int:
        return len(self.city)


@dataclass(frozen=True)
class Customers:
    full_name: np.ndarray
    email: np.ndarray
    segment: np.ndarray
    city: np.ndarray  # city at creation
    created_at: np.ndarray
    moved_at: np.ndarray  # NEVER for customers who stay
    new_city: np.ndarray
    by_city: CityIndex

    @property
    def size(self) -> int:
        return len(self.city)


@dataclass(frozen=True)
class Vehicles:
    vehicle_type: np.ndarray  # index into VEHICLE_TYPES
    model: np.ndarray
    home_station: np.ndarray  # station index at creation
    commissioned_at: np.ndarray
    created_at: np.ndarray
    rehomed_at: np.ndarray  # NEVER for vehicles that keep their home
    new_home_station: np.ndarray
    base_odometer_m: np.ndarray  # odometer at the window start, whole metres
    battery_phase: np.ndarray  # battery swap cycle offset, percent
    park_offset_deg: np.ndarray  # (n, 2) where the vehicle stands around a station

    @property
    def size(self) -> int:
        return len(self.vehicle_type)


@dataclass(frozen=True)
class Bookings:
    """Every booking of the window with its whole, predetermined lifecycle; index + 1 = booking_id."""

    customer: np.ndarray
    vehicle: np.ndarray
    start_station: np.ndarray
    end_station: np.ndarray
    booked_at: np.ndarray
    cancelled_at: np.ndarray  # NEVER unless cancelled
    started_at: np.ndarray  # NEVER when cancelled
    ended_at: np.ndarray  # NEVER when cancelled
    distance_m: np.ndarray  # whole metres, 0 when cancelled
    avg_speed_kmh: np.ndarray
    bulge_deg: np.ndarray  # (n, 2) how far the route bows away from the straight line
    refunded: np.ndarray  # bool: its payment gets refunded

    @property
    def size(self) -> int:
        return len(self.vehicle)


@dataclass(frozen=True)
class Payments:
    """One payment per non-cancelled booking, ordered by payment time; index + 1 = payment_id."""

    booking: np.ndarray
    amount_cents: np.ndarray
    paid_at: np.ndarray
    refunded_at: np.ndarray  # NEVER unless refunded


@dataclass(frozen=True)
class Trips:
    """Non-cancelled bookings ordered by (vehicle, start), with each vehicle's distance before the trip."""

    booking: np.ndarray
    vehicle: np.ndarray
    key: np.ndarray  # sortable (vehicle, started_at) key, see `key_of`
    origin_us: int
    span_us: int
    cum_before_m: np.ndarray

    def key_of(self, vehicle: np.ndarray, moment_us: np.ndarray) -> np.ndarray:
        return vehicle * self.span_us + (moment_us - self.origin_us)


@dataclass(frozen=True)
class World:
    cfg: DemoConfig
    stations: Stations
    customers: Customers
    vehicles: Vehicles
    bookings: Bookings
    payments: Payments
    trips: Trips


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
    present = rng.random((vehicles.size, len(SLOT_DEMAND))) < SLOT_BOOKING_PROB
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
    end_station = stations.by_city.pick(city, raw["end_pick"])
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


def hours_elapsed(cfg: DemoConfig, as_of_us: int) -> range:
    """Absolute hour numbers (hours since the epoch) of the window fully elapsed at `as_of_us`."""
    first = to_us(cfg.start_dt) // HOUR_US
    last = min(to_us(cfg.end), as_of_us) // HOUR_US  # exclusive: hour h is complete once (h + 1)h <= as_of
    return range(first, max(first, last))
