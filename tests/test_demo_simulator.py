"""The demo simulator: deterministic, protocol-abiding drops, advance == generate, truth == data."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from assets.bronze.contracts import file_drop_contracts, oltp_contracts
from assets.drops.protocol import MANIFEST_NAME, READY_NAME, drop_prefix
from demo.simulator import TRUTH_FILE, DemoConfig, advance, generate

CFG = DemoConfig(start=date(2026, 10, 1), days=2, scale=0.01, seed=7)
MID = datetime(2026, 10, 1, 13, 17, 30)
SQLITE_TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
TRUTH_KEYS = ("config", "as_of", "row_counts", "daily_revenue_cents", "bookings_per_status")
TRUTH_KEYS += ("km_driven_per_vehicle", "telemetry_rows_per_day", "oil_gas")


def _paths(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    return {
        "source_url": f"sqlite:///{root / 'oltp.sqlite'}",
        "landing_root": root / "landing",
        "truth_dir": root,
    }


def _run_generate(root: Path, cfg: DemoConfig = CFG, as_of: datetime | None = None) -> dict:
    return generate(cfg, as_of=as_of, **_paths(root))


def _db_rows(root: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(root / "oltp.sqlite") as conn:
        return {
            name: conn.execute(f"SELECT * FROM {name} ORDER BY {contract.primary_key}").fetchall()
            for name, contract in oltp_contracts().items()
        }


def _query(root: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(root / "oltp.sqlite") as conn:
        return conn.execute(sql).fetchall()


def _drop_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / "landing" / "telemetry").glob("dt=*/hour=*/*.parquet"))


def _manifest_digests(root: Path) -> dict[str, str]:
    return {
        str(d.relative_to(root / "landing")): json.loads((d / MANIFEST_NAME).read_text())["files"][0]["sha256"]
        for d in _drop_dirs(root)
    }


def _telemetry(root: Path) -> pl.DataFrame:
    paths = sorted(root.glob("landing/telemetry/**/*.parquet"))  # not the ledger feeds of the oil & gas domain
    return pl.concat([pl.from_arrow(pq.read_table(path)) for path in paths])


def _truth(result: dict) -> dict:
    return {key: result[key] for key in TRUTH_KEYS}


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("full")
    return root, _run_generate(root)


def test_same_seed_gives_identical_data_and_another_seed_does_not(full, tmp_path):
    root, _ = full
    _run_generate(tmp_path / "again")
    _run_generate(tmp_path / "other", DemoConfig(start=CFG.start, days=CFG.days, scale=CFG.scale, seed=8))

    assert _db_rows(tmp_path / "again") == _db_rows(root)
    assert _manifest_digests(tmp_path / "again") == _manifest_digests(root)
    assert len(_manifest_digests(root)) == 48
    other_rows = _db_rows(tmp_path / "other")
    assert other_rows["bookings"] != _db_rows(root)["bookings"]
    other_digests = _manifest_digests(tmp_path / "other")
    assert other_digests.keys() == _manifest_digests(root).keys()
    assert not set(other_digests.values()) & set(_manifest_digests(root).values())


def test_oltp_tables_follow_the_contract_and_the_booking_lifecycle(full):
    root, _ = full
    for name, contract in oltp_contracts().items():
        columns = _query(root, f"SELECT name, pk FROM pragma_table_info('{name}') ORDER BY cid")
        assert [c for c, _ in columns] == contract.column_names
        assert [c for c, pk in columns if pk] == [contract.primary_key]
        timestamp_columns = [c.name for c in contract.columns if c.type_name == "timestamp"]
        for column in timestamp_columns:
            values = [v for (v,) in _query(root, f"SELECT {column} FROM {name}") if v is not None]
            assert values and all(SQLITE_TS.match(v) for v in values), (name, column)

    per_status = dict(_query(root, "SELECT status, COUNT(*) FROM bookings GROUP BY status"))
    assert set(per_status) == {"completed", "cancelled"}  # trips end inside the day they are booked
    assert 0.02 < per_status["cancelled"] / sum(per_status.values()) < 0.2
    inconsistent = """
        SELECT COUNT(*) FROM bookings WHERE
          (status = 'completed') != (end_station_id IS NOT NULL AND distance_km > 0 AND ended_at IS NOT NULL)
          OR (status = 'cancelled') != (started_at IS NULL)
          OR created_at != booked_at OR updated_at < booked_at
          OR (status = 'completed' AND NOT (booked_at < started_at AND started_at < ended_at
                                            AND updated_at = ended_at))
    """
    assert _query(root, inconsistent) == [(0,)]
    unpaid = """
        SELECT COUNT(*) FROM bookings b LEFT JOIN payments p USING (booking_id)
        WHERE (b.status = 'completed') != (p.payment_id IS NOT NULL)
           OR (p.payment_id IS NOT NULL AND (p.paid_at != b.ended_at OR p.amount_cents <= 0))
    """
    assert _query(root, unpaid) == [(0,)]
    window_start = f"{CFG.start} 00:00:00.000000"
    for table in ("customers", "vehicles", "stations"):
        assert _query(root, f"SELECT MAX(created_at) < '{window_start}' FROM {table}") == [(1,)]
    assert _query(root, "SELECT COUNT(*) > 0 FROM customers WHERE updated_at > created_at") == [(1,)]
    assert _query(root, "SELECT COUNT(*) > 0 FROM vehicles WHERE updated_at > created_at") == [(1,)]


def test_every_hour_is_a_complete_verified_drop(full):
    root, truth = full
    drops = _drop_dirs(root)
    expected = [
        root / "landing" / drop_prefix("telemetry", CFG.start_dt + timedelta(hours=h)) for h in range(CFG.days * 24)
    ]
    assert drops == expected
    schema = file_drop_contracts()["telemetry"].arrow_schema()
    for drop in drops:
        part, manifest_path, ready = drop / "part-00000.parquet", drop / MANIFEST_NAME, drop / READY_NAME
        assert sorted(p.name for p in drop.iterdir()) == sorted([part.name, MANIFEST_NAME, READY_NAME])
        assert ready.stat().st_size == 0
        assert part.stat().st_mtime_ns <= manifest_path.stat().st_mtime_ns <= ready.stat().st_mtime_ns
        manifest = json.loads(manifest_path.read_text())
        dt, hour = drop.parent.name.removeprefix("dt="), drop.name.removeprefix("hour=")
        assert manifest["dataset"] == "telemetry" and manifest["schema_version"] == 1
        assert manifest["partition"] == {"dt": dt, "hour": hour}
        hour_start = datetime.fromisoformat(f"{dt}T{hour}:00:00")
        assert datetime.fromisoformat(manifest["created_at"]).replace(tzinfo=None) == hour_start + timedelta(hours=1)
        table = pq.read_table(part)
        assert manifest["files"] == [
            {
                "name": part.name,
                "rows": table.num_rows,
                "bytes": part.stat().st_size,
                "sha256": hashlib.sha256(part.read_bytes()).hexdigest(),
            }
        ]
        assert table.schema.equals(schema)
        frame = pl.from_arrow(table)
        assert frame.equals(frame.sort("vehicle_id", "ts"))
        assert frame["ts"].min() > hour_start and frame["ts"].max() < hour_start + timedelta(hours=1)
        assert frame.n_unique("vehicle_id") == truth["row_counts"]["vehicles"]

    readings = _telemetry(root)
    assert readings.height == truth["row_counts"]["telemetry"] == 10 * 42 * 48
    assert readings["battery_pct"].is_between(0, 100).all() and readings["speed_kmh"].is_between(0, 45).all()
    assert 0.05 < (readings["speed_kmh"] > 0).mean() < 0.5
    assert readings["fault_code"].null_count() > 0.95 * readings.height
    steps = readings.sort("vehicle_id", "ts").select(
        pl.col("odometer_km").diff().over("vehicle_id").alias("step"),
        pl.col("ts").diff().over("vehicle_id").alias("gap"),
    )
    assert steps["step"].drop_nulls().min() >= 0  # odometer never goes back, across hours and days
    assert steps["step"].drop_nulls().max() > 0
    assert steps["gap"].drop_nulls().min() > timedelta(0)


def test_truth_equals_independent_recomputation(full):
    root, truth = full
    assert json.loads((root / TRUTH_FILE).read_text()) == _truth(truth)
    assert truth["config"] == CFG.to_json() and truth["as_of"] == CFG.end.isoformat()
    counts = {**truth["row_counts"], **truth["oil_gas"]["row_counts"]}  # the oil & gas tables are counted apart
    for name in oltp_contracts():
        assert _query(root, f"SELECT COUNT(*) FROM {name}") == [(counts[name],)]
    revenue = _query(
        root,
        "SELECT substr(paid_at, 1, 10), SUM(amount_cents) FROM payments WHERE status = 'captured' "
        "GROUP BY 1 ORDER BY 1",
    )
    assert truth["daily_revenue_cents"] == dict(revenue)
    assert sorted(truth["daily_revenue_cents"]) == ["2026-10-01", "2026-10-02"]
    statuses = _query(root, "SELECT substr(booked_at, 1, 10), status, COUNT(*) FROM bookings GROUP BY 1, 2")
    recomputed: dict[str, dict[str, int]] = {}
    for day, status, count in statuses:
        recomputed.setdefault(day, {})[status] = count
    assert truth["bookings_per_status"] == recomputed

    readings = _telemetry(root).with_columns(day=pl.col("ts").dt.date().cast(pl.String))
    km = readings.group_by("day", "vehicle_id").agg(
        (pl.col("odometer_km").max() - pl.col("odometer_km").min()).alias("km")
    )
    expected_km = {day: {} for day in sorted(km["day"].unique())}
    for row in km.iter_rows(named=True):
        expected_km[row["day"]][str(row["vehicle_id"])] = row["km"]
    assert truth["km_driven_per_vehicle"].keys() == expected_km.keys()
    for day, per_vehicle in expected_km.items():
        assert truth["km_driven_per_vehicle"][day] == pytest.approx(per_vehicle, abs=1e-6)
    assert sum(v for day in expected_km.values() for v in day.values()) > 0
    rows_per_day = dict(readings.group_by("day").len().sort("day").iter_rows())
    assert truth["telemetry_rows_per_day"] == rows_per_day


def test_partial_as_of_shows_only_what_has_happened(tmp_path):
    truth = _run_generate(tmp_path, as_of=MID)
    as_of_text = MID.strftime("%Y-%m-%d %H:%M:%S.%f")
    assert _query(tmp_path, f"SELECT MAX(updated_at) <= '{as_of_text}' FROM bookings") == [(1,)]
    assert _query(tmp_path, f"SELECT COUNT(*) FROM bookings WHERE ended_at > '{as_of_text}'") == [(0,)]
    open_bookings = _query(tmp_path, "SELECT COUNT(*) FROM bookings WHERE status IN ('reserved', 'active')")
    assert open_bookings[0][0] > 0
    assert len(_drop_dirs(tmp_path)) == 13  # hours 00..12 are complete at 13:17
    assert truth["as_of"] == MID.isoformat()


def _diff(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> dict[str, dict[str, int]]:
    """Per table, rows whose content changed and rows that are new (first column = primary key)."""
    counts = {}
    for name in after:
        old, new = {r[0]: r for r in before[name]}, {r[0]: r for r in after[name]}
        assert old.keys() <= new.keys()  # nothing is ever deleted
        counts[name] = {
            "updated": sum(old[key] != new[key] for key in old),
            "inserted": len(new.keys() - old.keys()),
        }
    return counts


def test_advance_reaches_exactly_the_generated_end_state(full, tmp_path):
    root, truth_at_end = full
    _run_generate(tmp_path, as_of=MID)
    rows_at_mid = _db_rows(tmp_path)
    early_drops = {d: (d / READY_NAME).stat().st_mtime_ns for d in _drop_dirs(tmp_path)}

    result = advance(CFG, as_of=CFG.end, **_paths(tmp_path))

    assert _db_rows(tmp_path) == _db_rows(root)
    assert result["changes"] == _diff(rows_at_mid, _db_rows(root))
    assert result["changes"]["bookings"]["updated"] > 0 and result["changes"]["bookings"]["inserted"] > 0
    assert result["changes"]["payments"]["inserted"] > 0
    assert _manifest_digests(tmp_path) == _manifest_digests(root)
    assert {d: (d / READY_NAME).stat().st_mtime_ns for d in early_drops} == early_drops
    assert result["drops_written"] == 48 - len(early_drops)
    assert _truth(result) == _truth(truth_at_end)
    assert json.loads((tmp_path / TRUTH_FILE).read_text()) == _truth(truth_at_end)


def test_advance_in_steps_also_updates_dimensions(full, tmp_path):
    root, _ = full
    _run_generate(tmp_path, as_of=CFG.start_dt + timedelta(minutes=1))
    steps = [advance(CFG, as_of=CFG.start_dt + timedelta(hours=h), **_paths(tmp_path)) for h in (7, 30, 48)]

    assert _db_rows(tmp_path) == _db_rows(root)
    assert _manifest_digests(tmp_path) == _manifest_digests(root)
    assert [s["drops_written"] for s in steps] == [7, 23, 18]
    for table in ("customers", "vehicles", "bookings", "payments"):
        assert sum(s["changes"][table]["updated"] for s in steps) > 0, table
    assert all(s["changes"]["stations"] == {"updated": 0, "inserted": 0} for s in steps)


def test_advance_refuses_another_config_or_going_back(full):
    root, _ = full
    with pytest.raises(ValueError, match="backwards"):
        advance(CFG, as_of=MID, **_paths(root))
    with pytest.raises(ValueError, match="generated with"):
        advance(
            DemoConfig(start=CFG.start, days=CFG.days, scale=CFG.scale, seed=99),
            as_of=CFG.end,
            **_paths(root),
        )
