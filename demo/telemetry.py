"""Hourly vehicle telemetry derived from the trips of the simulated world.

Every vehicle reports 42 times an hour (one reading in each ~85.7 s slot). A vehicle moves only during
its trips: the odometer (whole metres, so exactly monotonic) is the vehicle's starting odometer plus
the distance of its earlier trips plus the elapsed share of the current one, which makes any hour
computable on its own and consistent with `bookings.distance_km`. Noise comes from a per-hour
generator, so an hour's readings never depend on which other hours are generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assets.bronze.contracts import file_drop_contracts
from demo.world import BATTERY_PCT_PER_KM, HOUR_US, US, Stream, World, sub_rng

DATASET = "telemetry"
READINGS_PER_HOUR = 42
SLOT_EDGES_US = (np.arange(READINGS_PER_HOUR + 1) * HOUR_US) // READINGS_PER_HOUR
MAX_SPEED_KMH = 45.0
SPEED_NOISE = 0.2
GPS_NOISE_DEG = 0.00003
BATTERY_SWAP_RANGE_PCT = 80.0  # batteries are swapped at 20 %, so readings stay in (20, 100]
FAULT_CODES = ("E101", "E205", "S301", "B201")  # motor, controller, sensor, low battery
RANDOM_FAULT_PROB = 0.0008
LOW_BATTERY_FAULT_PCT = 23.0
LOW_BATTERY_FAULT_PROB = 0.05


@dataclass(frozen=True)
class HourPositions:
    """Where each reading of one hour falls in the trip history; rows are vehicle-major, time-minor."""

    rng: np.random.Generator  # the hour's generator, positioned after the timestamp draw
    vehicle: np.ndarray
    ts_us: np.ndarray
    booking: np.ndarray  # the vehicle's latest trip (booking index) started by ts; meaningless without has_trip
    has_trip: np.ndarray
    progress: np.ndarray  # share of that trip done at ts, in [0, 1]
    moving: np.ndarray
    odometer_m: np.ndarray

    @property
    def odometer_km(self) -> np.ndarray:
        return self.odometer_m / 1000


def hour_positions(world: World, hour: int) -> HourPositions:
    """Timestamps and odometer of one hour (hours since the epoch): all that the ground truth needs."""
    rng = sub_rng(world.cfg.seed, Stream.TELEMETRY, hour)
    n_vehicles, slot_len = world.vehicles.size, np.diff(SLOT_EDGES_US)
    offsets = rng.integers(US // 2, slot_len - US // 2, size=(n_vehicles, READINGS_PER_HOUR))
    ts_us = (hour * HOUR_US + SLOT_EDGES_US[:-1] + offsets).ravel()
    vehicle = np.repeat(np.arange(n_vehicles), READINGS_PER_HOUR)
    trips, bookings = world.trips, world.bookings
    found = np.searchsorted(trips.key, trips.key_of(vehicle, ts_us), side="right") - 1
    has_trip = (found >= 0) & (trips.vehicle[np.maximum(found, 0)] == vehicle)
    trip = np.where(has_trip, found, 0)
    booking = trips.booking[trip]
    started, ended = bookings.started_at[booking], bookings.ended_at[booking]
    progress = np.where(has_trip, np.clip((ts_us - started) / np.maximum(ended - started, 1), 0.0, 1.0), 0.0)
    done_m = np.floor(bookings.distance_m[booking] * progress).astype(np.int64)
    driven_m = np.where(has_trip, trips.cum_before_m[trip] + done_m, 0)
    return HourPositions(
        rng=rng,
        vehicle=vehicle,
        ts_us=ts_us,
        booking=booking,
        has_trip=has_trip,
        progress=progress,
        moving=has_trip & (ts_us < ended),
        odometer_m=world.vehicles.base_odometer_m[vehicle] + driven_m,
    )


def _coordinates(world: World, pos: HourPositions, gps_noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parked at the last trip's end station (home before any trip); on a trip, along a bowed route."""
    stations, bookings, vehicles = world.stations, world.bookings, world.vehicles
    booking = pos.booking
    home = vehicles.home_station[pos.vehicle]
    origin = np.where(pos.has_trip, bookings.start_station[booking], home)
    destination = np.where(pos.has_trip, bookings.end_station[booking], home)
    share = np.where(pos.moving, pos.progress, 1.0)
    bow = np.where(pos.moving, np.sin(np.pi * pos.progress), 0.0)[:, None] * bookings.bulge_deg[booking]
    offset = vehicles.park_offset_deg[pos.vehicle] + gps_noise + bow
    lat = stations.lat[origin] + (stations.lat[destination] - stations.lat[origin]) * share + offset[:, 0]
    lon = stations.lon[origin] + (stations.lon[destination] - stations.lon[origin]) * share + offset[:, 1]
    return np.round(lat, 6), np.round(lon, 6)


def _fault_codes(battery_pct: np.ndarray, fault_u: np.ndarray, fault_kind: np.ndarray) -> pa.Array:
    """Mostly NULL; rare random faults, and a low-battery warning now and then near the swap level."""
    low_battery = (battery_pct < LOW_BATTERY_FAULT_PCT) & (fault_u > 1 - LOW_BATTERY_FAULT_PROB)
    code = np.where(fault_u < RANDOM_FAULT_PROB, fault_kind, np.where(low_battery, FAULT_CODES.index("B201"), -1))
    return pc.take(pa.array(FAULT_CODES), pa.array(code, pa.int64(), mask=code < 0))


def hour_table(world: World, hour: int) -> tuple[pa.Table, HourPositions]:
    """One hour of readings in the contract schema, sorted by (vehicle_id, ts)."""
    pos = hour_positions(world, hour)
    n = len(pos.ts_us)
    gps_noise = pos.rng.normal(0.0, GPS_NOISE_DEG, (n, 2))
    speed_noise = pos.rng.normal(0.0, SPEED_NOISE, n)
    fault_u = pos.rng.random(n)
    fault_kind = pos.rng.integers(0, len(FAULT_CODES) - 1, n)
    speed = np.where(
        pos.moving,
        np.clip(world.bookings.avg_speed_kmh[pos.booking] * (1 + speed_noise), 1.0, MAX_SPEED_KMH),
        0.0,
    )
    consumption = BATTERY_PCT_PER_KM[world.vehicles.vehicle_type[pos.vehicle]]
    drained = (pos.odometer_km * consumption + world.vehicles.battery_phase[pos.vehicle]) % BATTERY_SWAP_RANGE_PCT
    battery = np.round(100.0 - drained, 1)
    lat, lon = _coordinates(world, pos, gps_noise)
    schema = file_drop_contracts()[DATASET].arrow_schema()
    columns = {
        "vehicle_id": pa.array(pos.vehicle + 1, pa.int64()),
        "ts": pa.array(pos.ts_us, pa.int64()).view(pa.timestamp("us")),
        "lat": pa.array(lat),
        "lon": pa.array(lon),
        "speed_kmh": pa.array(np.round(speed, 1)),
        "battery_pct": pa.array(battery),
        "odometer_km": pa.array(pos.odometer_km),
        "fault_code": _fault_codes(battery, fault_u, fault_kind),
    }
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema), pos
