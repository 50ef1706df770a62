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
# overlap. The demand curve sets each slot's booking probability; it averages about 5 bookings per vehicle-day.
SLOT_US = 2 * HOUR_US
SLOTS_PER_DAY = 12
BOOKINGS_PER_VEHICLE_DAY = 5.0
# Demand carries the signal a forecast can learn (issue 14): working days have commute peaks, weekends a
# late, flat day, and the level differs by weekday (Friday busiest, Sunday quietest). A "same hour
# yesterday" forecast misses every Monday and Saturday; a model that knows the weekday does not.
SLOT_DEMAND_WORKDAY = np.array([0.1, 0.05, 0.2, 1.4, 1.6, 0.9, 1.0, 0.9, 1.6, 1.5, 0.8, 0.4])
SLOT_DEMAND_WEEKEND = np.array([0.3, 0.2, 0.1, 0.2, 0.6, 1.2, 1.5, 1.6, 1.4, 1.1, 0.9, 0.7])
DAY_OF_WEEK_LEVEL = np.array([0.9, 1.0, 1.0, 1.05, 1.15, 1.0, 0.75])  # Monday .. Sunday


def slot_booking_prob(day: date) -> np.ndarray:
    """Each two-hour slot's booking probability per vehicle on `day` (at most 0.88)."""
    profile = SLOT_DEMAND_WEEKEND if day.weekday() >= 5 else SLOT_DEMAND_WORKDAY
    return DAY_OF_WEEK_LEVEL[day.weekday()] * BOOKINGS_PER_VEHICLE_DAY * profile / profile.sum()


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


def hours_elapsed(cfg: DemoConfig, as_of_us: int) -> range:
    """Absolute hour numbers (hours since the epoch) of the window fully elapsed at `as_of_us`."""
    first = to_us(cfg.start_dt) // HOUR_US
    last = min(to_us(cfg.end), as_of_us) // HOUR_US  # exclusive: hour h is complete once (h + 1)h <= as_of
    return range(first, max(first, last))
