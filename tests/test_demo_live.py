"""The living demo: the world moves on in compressed time, never past the clock, with late drops."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from assets.drops.protocol import READY_NAME, drop_prefix
from demo.live import LivePace, late_drops, next_as_of, run_live
from demo.simulator import DemoConfig, LateDrops, generate, read_truth
from demo.world import HOUR_US, to_us

CFG = DemoConfig(start=date(2026, 10, 1), days=4, scale=0.01, seed=3)
DAY1 = datetime(2026, 10, 1)
HOURLY = LivePace(speed=3600, tick_seconds=1, late_every=24, late_by_hours=2)  # one simulated hour a tick


def _paths(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    return {"source_url": f"sqlite:///{root / 'oltp.sqlite'}", "landing_root": root / "landing", "truth_dir": root}


def _ready(root: Path, hour: datetime) -> bool:
    return (root / "landing" / drop_prefix("telemetry", hour) / READY_NAME).exists()


def _hour(moment: datetime) -> int:
    return to_us(moment) // HOUR_US


def test_a_late_hour_is_withheld_until_its_delay_has_passed_then_delivered():
    five = DAY1 + timedelta(hours=5)
    assert _hour(five) in late_drops(CFG, DAY1 + timedelta(hours=7, minutes=59), HOURLY).withheld
    at_eight = late_drops(CFG, DAY1 + timedelta(hours=8), HOURLY)
    assert _hour(five) in at_eight.delivered and _hour(five) not in at_eight.withheld
    # Only hour 05 of each day is late; 04:00 and 06:00 are never withheld.
    assert {_hour(DAY1 + timedelta(hours=h)) for h in (4, 6)}.isdisjoint(at_eight.withheld | at_eight.delivered)
    assert late_drops(CFG, DAY1 + timedelta(days=2), LivePace(late_every=0)) == LateDrops()


@pytest.mark.parametrize(
    ("simulated", "clock", "expected"),
    [
        (DAY1, DAY1 + timedelta(days=1), DAY1 + timedelta(minutes=10)),  # catching up: 60 x 10 s
        (DAY1, DAY1 + timedelta(minutes=3), DAY1 + timedelta(minutes=3)),  # never past the clock
        (DAY1 + timedelta(days=4), DAY1 + timedelta(days=9), DAY1 + timedelta(days=4)),  # nor the window end
        (DAY1 + timedelta(hours=2), DAY1 + timedelta(hours=1), DAY1 + timedelta(hours=2)),  # nor backwards
    ],
)
def test_simulated_time_catches_up_with_the_clock_and_never_overtakes_it(simulated, clock, expected):
    assert next_as_of(simulated, clock, LivePace(speed=60, tick_seconds=10), CFG.end) == expected


def test_live_demo_moves_the_world_tick_by_tick_with_a_late_drop(tmp_path):
    paths = _paths(tmp_path)
    generate(CFG, as_of=DAY1, **paths)
    clock = DAY1 + timedelta(days=1, hours=12)
    lines: list[str] = []

    at = run_live(**paths, pace=HOURLY, clock=lambda: clock, sleep=lambda s: None, max_ticks=6, report=lines.append)
    assert at == DAY1 + timedelta(hours=6)
    assert _ready(tmp_path, DAY1 + timedelta(hours=4)) and not _ready(tmp_path, DAY1 + timedelta(hours=5))
    assert len(lines) == 6 and lines[0].startswith("demo live: world at 2026-10-01 01:00")
    bookings_before = read_truth(tmp_path)["row_counts"]["bookings"]

    at = run_live(**paths, pace=HOURLY, clock=lambda: clock, sleep=lambda s: None, max_ticks=60, report=lines.append)
    assert at == clock  # caught up, and then held at the clock
    hours = [DAY1 + timedelta(hours=h) for h in range(36)]
    assert [h for h in hours if not _ready(tmp_path, h)] == []  # 05:00 of both days delivered by now
    assert not _ready(tmp_path, clock)  # the hour under way has no drop yet
    truth = read_truth(tmp_path)
    assert truth["as_of"] == clock.isoformat()
    assert truth["row_counts"]["bookings"] > bookings_before  # new bookings reached the source


def test_the_initial_backfill_stops_at_the_last_midnight_the_data_has_passed(tmp_path, monkeypatch):
    from jobs.backfill import demo_window

    root = tmp_path / "strata"
    monkeypatch.setenv("STRATA_ROOT", str(root))
    generate(CFG, as_of=DAY1 + timedelta(days=2, hours=9), **_paths(root / "demo"))
    assert demo_window() == (date(2026, 10, 1), date(2026, 10, 3))
