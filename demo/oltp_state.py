"""What the OLTP tables hold at a moment `as_of`: a projection of the predetermined world.

A row exists once its `created_at` <= as_of, and `updated_at` is the time of its latest event <= as_of,
so the rows that differ between two moments are exactly those with `updated_at` after the earlier one
(the same rule an incremental extractor relies on).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assets.bronze.contracts import oltp_contracts
from demo.oilgas import OLTP_TABLES as OIL_GAS_TABLES
from demo.world import CITY_NAMES, VEHICLE_TYPES, World

BOOKING_STATUSES = ("reserved", "active", "completed", "cancelled")
PAYMENT_STATUSES = ("captured", "refunded")
CURRENCY = "EUR"


def _timestamps(micros: np.ndarray, happened: np.ndarray | None = None) -> pa.Array:
    """int64 epoch microseconds -> timestamp[us]; NULL where the event has not `happened`."""
    if happened is None:
        return pa.array(micros, pa.int64()).view(pa.timestamp("us"))
    return pa.array(np.where(happened, micros, 0), pa.int64(), mask=~happened).view(pa.timestamp("us"))


def _labels(labels: tuple[str, ...] | np.ndarray, codes: np.ndarray) -> pa.Array:
    return pc.take(pa.array(list(labels), pa.string()), pa.array(codes, pa.int64()))


def _table(name: str, columns: dict[str, pa.Array | np.ndarray]) -> pa.Table:
    schema = oltp_contracts()[name].arrow_schema()
    return pa.Table.from_arrays([pa.array(columns[f.name], f.type) for f in schema], schema=schema)


def _latest(*events: np.ndarray, as_of_us: int) -> np.ndarray:
    """Per row, the latest of the event times that are <= as_of (the first one always is)."""
    latest = events[0]
    for event in events[1:]:
        latest = np.where(event <= as_of_us, np.maximum(latest, event), latest)
    return latest


def stations_at(world: World, as_of_us: int) -> pa.Table:
    s = world.stations
    rows = np.nonzero(s.created_at <= as_of_us)[0]
    return _table(
        "stations",
        {
            "station_id": rows + 1,
            "station_name": s.name[rows],
            "city": CITY_NAMES[s.city[rows]],
            "lat": s.lat[rows],
            "lon": s.lon[rows],
            "capacity": s.capacity[rows],
            "created_at": _timestamps(s.created_at[rows]),
            "updated_at": _timestamps(s.created_at[rows]),
        },
    )


def customers_at(world: World, as_of_us: int) -> pa.Table:
    c = world.customers
    rows = np.nonzero(c.created_at <= as_of_us)[0]
    moved = c.moved_at[rows] <= as_of_us
    return _table(
        "customers",
        {
            "customer_id": rows + 1,
            "full_name": c.full_name[rows],
            "email": c.email[rows],
            "city": CITY_NAMES[np.where(moved, c.new_city[rows], c.city[rows])],
            "segment": c.segment[rows],
            "created_at": _timestamps(c.created_at[rows]),
            "updated_at": _timestamps(_latest(c.created_at[rows], c.moved_at[rows], as_of_us=as_of_us)),
        },
    )


def vehicles_at(world: World, as_of_us: int) -> pa.Table:
    v = world.vehicles
    rows = np.nonzero(v.created_at <= as_of_us)[0]
    rehomed = v.rehomed_at[rows] <= as_of_us
    return _table(
        "vehicles",
        {
            "vehicle_id": rows + 1,
            "vehicle_type": VEHICLE_TYPES[v.vehicle_type[rows]],
            "model": v.model[rows],
            "home_station_id": np.where(rehomed, v.new_home_station[rows], v.home_station[rows]) + 1,
            "commissioned_at": _timestamps(v.commissioned_at[rows]),
            "created_at": _timestamps(v.created_at[rows]),
            "updated_at": _timestamps(_latest(v.created_at[rows], v.rehomed_at[rows], as_of_us=as_of_us)),
        },
    )


def bookings_at(world: World, as_of_us: int) -> pa.Table:
    b = world.bookings
    rows = np.nonzero(b.booked_at <= as_of_us)[0]
    booked, started, ended, cancelled = (
        b.booked_at[rows],
        b.started_at[rows],
        b.ended_at[rows],
        b.cancelled_at[rows],
    )
    is_started, is_ended, is_cancelled = started <= as_of_us, ended <= as_of_us, cancelled <= as_of_us
    status = np.select([is_cancelled, is_ended, is_started], [3, 2, 1], default=0)
    return _table(
        "bookings",
        {
            "booking_id": rows + 1,
            "customer_id": b.customer[rows] + 1,
            "vehicle_id": b.vehicle[rows] + 1,
            "start_station_id": b.start_station[rows] + 1,
            "end_station_id": pa.array(b.end_station[rows] + 1, pa.int64(), mask=~is_ended),
            "status": _labels(BOOKING_STATUSES, status),
            "booked_at": _timestamps(booked),
            "started_at": _timestamps(started, is_started),
            "ended_at": _timestamps(ended, is_ended),
            "distance_km": pa.array(b.distance_m[rows] / 1000, pa.float64(), mask=~is_ended),
            "created_at": _timestamps(booked),
            "updated_at": _timestamps(_latest(booked, started, ended, cancelled, as_of_us=as_of_us)),
        },
    )


def payments_at(world: World, as_of_us: int) -> pa.Table:
    p = world.payments
    rows = np.nonzero(p.paid_at <= as_of_us)[0]
    refunded = p.refunded_at[rows] <= as_of_us
    return _table(
        "payments",
        {
            "payment_id": rows + 1,
            "booking_id": p.booking[rows] + 1,
            "amount_cents": p.amount_cents[rows],
            "currency": pa.array(np.full(len(rows), CURRENCY)),
            "status": _labels(PAYMENT_STATUSES, refunded.astype(np.int64)),
            "paid_at": _timestamps(p.paid_at[rows]),
            "created_at": _timestamps(p.paid_at[rows]),
            "updated_at": _timestamps(_latest(p.paid_at[rows], p.refunded_at[rows], as_of_us=as_of_us)),
        },
    )


SNAPSHOTS = {
    "customers": customers_at,
    "stations": stations_at,
    "vehicles": vehicles_at,
    "bookings": bookings_at,
    "payments": payments_at,
}


def oltp_tables_at(world: World, as_of_us: int) -> dict[str, pa.Table]:
    """Every OLTP table of the fleet as it stands at `as_of_us`, in contract column order (the oil-and-gas
    domain's tables come from `demo.oilgas`)."""
    missing = set(oltp_contracts()) - set(SNAPSHOTS) - set(OIL_GAS_TABLES)
    if missing:
        raise ValueError(f"the demo simulator does not produce contract tables {sorted(missing)}")
    return {name: SNAPSHOTS[name](world, as_of_us) for name in oltp_contracts() if name in SNAPSHOTS}


def changed_since(table: pa.Table, since_us: int) -> tuple[pa.Table, int]:
    """Rows of a snapshot that changed after `since_us`, and how many of them were created after it."""
    since = pa.scalar(since_us, pa.timestamp("us"))
    changed = table.filter(pc.greater(table["updated_at"], since))
    inserted = pc.sum(pc.greater(changed["created_at"], since).cast(pa.int64())).as_py() or 0
    return changed, inserted
