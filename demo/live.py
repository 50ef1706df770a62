"""The living demo: the upstream world moves on by itself, so the platform has something to do.

`python -m demo live` (started by `make dev` unless `LIVE=0`) advances the generated world tick by tick:
new bookings and status changes reach the OLTP source, and every elapsed hour's telemetry drop is
written with the landing protocol. Simulated time runs `speed` times faster than the clock (default 60:
one simulated hour per minute) until it has caught up with the real time, then with it. It never runs
ahead of the clock: Dagster's hourly partitions only exist for hours that have ended, so a drop from
the future would only be reported as outside the partitions.

Now and then a drop is late: the drop of every `late_every`-th hour arrives `late_by_hours` after its
hour ends, so freshness, completeness and the late-arrival path can be watched at work. Which hours are
late is a pure function of the hour, so a restarted demo continues the same story.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from demo.simulator import DemoConfig, LateDrops, advance, read_truth
from demo.world import HOUR_US, hours_elapsed, to_us

LATE_PHASE = 5  # which hour of each `late_every` cycle is late (05:00 for a daily cycle)


@dataclass(frozen=True)
class LivePace:
    """How the demo world moves: `speed` simulated seconds per real second, one step every `tick_seconds`."""

    speed: float = 60.0
    tick_seconds: float = 10.0
    late_every: int = 24  # 0: every drop on time
    late_by_hours: int = 2

    def __post_init__(self) -> None:
        if self.speed < 1 or self.tick_seconds <= 0 or self.late_every < 0 or self.late_by_hours < 0:
            raise ValueError(f"need speed >= 1, tick_seconds > 0, late_every >= 0, late_by_hours >= 0: {self}")


def is_late_hour(hour: int, pace: LivePace) -> bool:
    return pace.late_every > 0 and hour % pace.late_every == LATE_PHASE % pace.late_every


def late_drops(cfg: DemoConfig, as_of: datetime, pace: LivePace) -> LateDrops:
    """The late hours as of `as_of`: withheld until `late_by_hours` after the hour ends, then delivered."""
    current_hour = to_us(as_of) // HOUR_US
    late = [h for h in hours_elapsed(cfg, to_us(as_of)) if is_late_hour(h, pace)]
    due = {h for h in late if current_hour >= h + 1 + pace.late_by_hours}
    return LateDrops(withheld=frozenset(set(late) - due), delivered=frozenset(due))


def next_as_of(simulated: datetime, real_now: datetime, pace: LivePace, window_end: datetime) -> datetime:
    """One tick on: `speed` times the tick in simulated time, but never past the clock or the window."""
    stepped = simulated + timedelta(seconds=pace.speed * pace.tick_seconds)
    return max(simulated, min(stepped, real_now, window_end))


def utc_now_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def run_live(
    *,
    source_url: str,
    landing_root: Path,
    truth_dir: Path,
    pace: LivePace,
    clock: Callable[[], datetime] = utc_now_naive,
    sleep: Callable[[float], None] = time.sleep,
    max_ticks: int | None = None,
    report: Callable[[str], None] = print,
) -> datetime:
    """Advance the recorded world tick by tick until `max_ticks` (forever when None); returns the last as_of."""
    truth = read_truth(truth_dir)
    cfg = DemoConfig.from_json(truth["config"])
    simulated = datetime.fromisoformat(truth["as_of"])
    ticks = 0
    while max_ticks is None or ticks < max_ticks:
        target = next_as_of(simulated, clock(), pace, cfg.end)
        if target > simulated:
            result = advance(
                cfg,
                source_url=source_url,
                landing_root=landing_root,
                truth_dir=truth_dir,
                as_of=target,
                late=late_drops(cfg, target, pace),
            )
            changed = sum(c["updated"] + c["inserted"] for c in result["changes"].values())
            report(
                f"demo live: world at {target:%Y-%m-%d %H:%M}: {changed} source row(s) changed, "
                f"{result['drops_written']} drop(s) written"
            )
            simulated = target
        elif simulated >= cfg.end:
            report(f"demo live: the window ends at {cfg.end:%Y-%m-%d %H:%M}; regenerate for more")
            break
        ticks += 1
        if max_ticks is None or ticks < max_ticks:
            sleep(pace.tick_seconds)
    return simulated
