"""Deterministic upstream simulator of a shared-mobility fleet: OLTP tables, telemetry drops, ground truth.

The state of the world is a pure function of the config and `as_of` (see `demo.world`): `generate`
writes it from scratch, `advance` moves an existing database and landing zone forward the way the real
upstream systems would (updates in place, new rows, new hourly drops), so incremental loading can be
tested against `ground_truth.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from assets.bronze.contracts import file_drop_contracts
from assets.drops.protocol import READY_NAME, drop_prefix
from demo import legacy, oilgas
from demo.drop_producer import write_drop
from demo.oltp_state import changed_since, oltp_tables_at
from demo.oltp_store import replace_tables, upsert_rows
from demo.telemetry import DATASET as TELEMETRY
from demo.telemetry import READINGS_PER_HOUR, HourPositions, hour_positions, hour_table
from demo.world import HOUR_US, DemoConfig, World, from_us, hours_elapsed, to_us
from demo.world_builder import build_world

TRUTH_FILE = "ground_truth.json"

__all__ = ["ON_TIME", "TRUTH_FILE", "DemoConfig", "LateDrops", "advance", "generate", "naive_utc", "read_truth"]


def naive_utc(moment: datetime) -> datetime:
    """All demo times are naive UTC; an aware datetime is converted."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class LateDrops:
    """Hours (since the epoch) whose drop a producer delivers late: `withheld` are not written yet,
    `delivered` were withheld by an earlier call and are written now. The live demo and the simulated
    week use it; by default every drop arrives on time."""

    withheld: frozenset[int] = frozenset()
    delivered: frozenset[int] = frozenset()


ON_TIME = LateDrops()


@dataclass
class TelemetryTally:
    """Per-day telemetry facts, accumulated hour by hour from the very arrays written to the drops."""

    rows_per_day: dict[str, int] = field(default_factory=dict)
    odometer_min: dict[str, np.ndarray] = field(default_factory=dict)
    odometer_max: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, hour: int, positions: HourPositions) -> None:
        day = from_us(hour * HOUR_US).date().isoformat()
        odometer = positions.odometer_km.reshape(-1, READINGS_PER_HOUR)
        low, high = odometer.min(axis=1), odometer.max(axis=1)
        self.rows_per_day[day] = self.rows_per_day.get(day, 0) + odometer.size
        self.odometer_min[day] = np.minimum(self.odometer_min.get(day, low), low)
        self.odometer_max[day] = np.maximum(self.odometer_max.get(day, high), high)

    def km_driven_per_vehicle(self) -> dict[str, dict[str, float]]:
        return {
            day: {
                str(vehicle_id): round(float(km), 6)
                for vehicle_id, km in enumerate((self.odometer_max[day] - self.odometer_min[day]).tolist(), 1)
            }
            for day in sorted(self.odometer_min)
        }


def _daily_revenue_cents(payments: pa.Table) -> dict[str, int]:
    revenue = (
        pl.from_arrow(payments)
        .filter(pl.col("status") == "captured")
        .group_by(day=pl.col("paid_at").dt.date())
        .agg(pl.col("amount_cents").sum())
        .sort("day")
    )
    return {row["day"].isoformat(): int(row["amount_cents"]) for row in revenue.iter_rows(named=True)}


def _bookings_per_status(bookings: pa.Table) -> dict[str, dict[str, int]]:
    counts = (
        pl.from_arrow(bookings.select(["booked_at", "status"]))
        .group_by(day=pl.col("booked_at").dt.date(), status=pl.col("status"))
        .len()
        .sort("day", "status")
    )
    per_day: dict[str, dict[str, int]] = {}
    for row in counts.iter_rows(named=True):
        per_day.setdefault(row["day"].isoformat(), {})[row["status"]] = int(row["len"])
    return per_day


def ground_truth(cfg: DemoConfig, as_of: datetime, tables: dict[str, pa.Table], tally: TelemetryTally) -> dict:
    """The numbers the Gold tables must reproduce, from the same data that was written."""
    row_counts = {name: table.num_rows for name, table in tables.items()}
    row_counts[TELEMETRY] = sum(tally.rows_per_day.values())
    return {
        "config": cfg.to_json(),
        "as_of": as_of.isoformat(),
        "row_counts": row_counts,
        "daily_revenue_cents": _daily_revenue_cents(tables["payments"]),
        "bookings_per_status": _bookings_per_status(tables["bookings"]),
        "km_driven_per_vehicle": tally.km_driven_per_vehicle(),
        "telemetry_rows_per_day": dict(sorted(tally.rows_per_day.items())),
    }


def read_truth(truth_dir: Path) -> dict:
    path = Path(truth_dir) / TRUTH_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m demo generate` first")
    return json.loads(path.read_text())


def _write_truth(truth_dir: Path, truth: dict) -> None:
    truth_dir = Path(truth_dir)
    truth_dir.mkdir(parents=True, exist_ok=True)
    temp = truth_dir / f".{TRUTH_FILE}.tmp"
    temp.write_text(json.dumps(truth, indent=1) + "\n")
    os.replace(temp, truth_dir / TRUTH_FILE)


def _telemetry(
    world: World,
    landing_root: Path,
    hours: range,
    already_written: range,
    tally: TelemetryTally,
    late: LateDrops,
) -> int:
    """Write a drop for each hour not written before (never rewriting a ready drop); tally every hour.

    Hours in `late.withheld` get no drop now; hours in `late.delivered` are written although they lie in
    `already_written` (they were withheld by an earlier call). The truth tallies every elapsed hour.
    """
    schema_version = file_drop_contracts()[TELEMETRY].schema_version
    written = 0
    for hour in hours:
        hour_start = from_us(hour * HOUR_US)
        due = hour not in already_written or hour in late.delivered
        if (
            not due
            or hour in late.withheld
            or (Path(landing_root) / drop_prefix(TELEMETRY, hour_start) / READY_NAME).exists()
        ):
            tally.add(hour, hour_positions(world, hour))
            continue
        table, positions = hour_table(world, hour)
        write_drop(Path(landing_root), TELEMETRY, hour_start, [table], schema_version=schema_version)
        tally.add(hour, positions)
        written += 1
    return written


def _finance_drops(cfg: DemoConfig, landing_root: Path, hours: range, already_written: range) -> tuple[int, dict]:
    """Write the hourly ledger drops (journal lines, then their control totals) not written before;
    return how many hours were written and the oil-and-gas tally over every elapsed hour."""
    tally, written = oilgas.OilGasTally(), 0
    versions = {feed: file_drop_contracts()[feed].schema_version for feed in oilgas.DROP_FEEDS}
    for hour in hours:
        lines, control = oilgas.journal_hour(cfg, hour)
        tally.add_hour(hour, lines)
        hour_start = from_us(hour * HOUR_US)
        if (
            hour in already_written
            or (Path(landing_root) / drop_prefix(oilgas.CONTROL_TOTALS, hour_start) / READY_NAME).exists()
        ):
            continue
        for feed, table in ((oilgas.JOURNAL_LINES, lines), (oilgas.CONTROL_TOTALS, control)):
            write_drop(Path(landing_root), feed, hour_start, [table], schema_version=versions[feed])
        written += 1
    return written, tally


def generate(
    cfg: DemoConfig,
    *,
    source_url: str,
    landing_root: Path,
    truth_dir: Path,
    as_of: datetime | None = None,
    late: LateDrops = ON_TIME,
) -> dict:
    """(Re)create the OLTP tables and telemetry drops as of `as_of` (default: window end); write ground truth.

    Returns the ground truth plus "drops_written".
    """
    as_of = cfg.end if as_of is None else naive_utc(as_of)
    as_of_us = to_us(as_of)
    world = build_world(cfg)
    tables = oltp_tables_at(world, as_of_us)
    oil_gas = oilgas.oltp_tables_at(cfg, as_of)
    replace_tables(source_url, {**tables, **oil_gas})
    for feed in (TELEMETRY, *oilgas.DROP_FEEDS, legacy.LEGACY_PREFIX):
        shutil.rmtree(Path(landing_root) / feed, ignore_errors=True)
    tally = TelemetryTally()
    hours = hours_elapsed(cfg, as_of_us)
    written = _telemetry(world, landing_root, hours, range(0), tally, late)
    finance_written, finance = _finance_drops(cfg, landing_root, hours, range(0))
    truth = {**ground_truth(cfg, as_of, tables, tally), "oil_gas": finance.truth(oil_gas, len(hours))}
    truth["oil_gas"]["legacy"] = legacy.write_legacy_outputs(cfg, landing_root, as_of)
    _write_truth(truth_dir, truth)
    return {**truth, "drops_written": written, "finance_drops_written": finance_written}


def advance(
    cfg: DemoConfig,
    *,
    source_url: str,
    landing_root: Path,
    truth_dir: Path,
    as_of: datetime,
    late: LateDrops = ON_TIME,
) -> dict:
    """Move a generated database and landing zone forward to the later `as_of`.

    Rows changed since the previous as_of are updated in place, new rows inserted, nothing else touched;
    drops are written for newly elapsed hours only. Returns the new ground truth plus
    "changes": {table: {"updated": n, "inserted": n}} and "drops_written".
    """
    previous = read_truth(truth_dir)
    if DemoConfig.from_json(previous["config"]) != cfg:
        raise ValueError(f"the demo data was generated with {previous['config']}, not {cfg.to_json()}")
    as_of, previous_as_of = naive_utc(as_of), datetime.fromisoformat(previous["as_of"])
    if as_of < previous_as_of:
        raise ValueError(f"cannot advance backwards: data is as of {previous_as_of}, asked for {as_of}")
    as_of_us, previous_us = to_us(as_of), to_us(previous_as_of)
    world = build_world(cfg)
    tables = oltp_tables_at(world, as_of_us)
    oil_gas = oilgas.oltp_tables_at(cfg, as_of)
    changed, changes = {}, {}
    for name, table in {**tables, **oil_gas}.items():
        changed[name], inserted = changed_since(table, previous_us)
        changes[name] = {"updated": changed[name].num_rows - inserted, "inserted": inserted}
    upsert_rows(source_url, changed)
    tally = TelemetryTally()
    written = _telemetry(
        world, landing_root, hours_elapsed(cfg, as_of_us), hours_elapsed(cfg, previous_us), tally, late
    )
    hours = hours_elapsed(cfg, as_of_us)
    finance_written, finance = _finance_drops(cfg, landing_root, hours, hours_elapsed(cfg, previous_us))
    truth = {**ground_truth(cfg, as_of, tables, tally), "oil_gas": finance.truth(oil_gas, len(hours))}
    truth["oil_gas"]["legacy"] = legacy.write_legacy_outputs(cfg, landing_root, as_of)
    _write_truth(truth_dir, truth)
    return {**truth, "changes": changes, "drops_written": written, "finance_drops_written": finance_written}
