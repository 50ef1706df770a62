"""The simulated week (tests/week_simulation.py) as a benchmark: what a week of lights-out operation costs.

Figures: the wall time of the whole week (7 days of hourly ticks, at scale 0.01), the runs it executed by
trigger and kind, and the daemons' own evaluation time per simulated hour (schedules, sensors, automation;
the runs excluded). Floor: the runs themselves, that is the same Bronze loads and dbt builds with no
evaluation between them; the ratio is the share the clock, sensors and automation add.
`python -m tests.benchmarks week [days]` runs this one alone.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from tests.benchmarks.measure import Measurement, measured, report

WEEK_START = datetime(2026, 10, 1, tzinfo=UTC)


def main(days: int = 7) -> list[str]:
    from definitions import build_definitions
    from resources.settings import load_settings
    from tests.support import local_instance_for_test
    from tests.week_simulation import WeekScenario, upstream_services

    with tempfile.TemporaryDirectory(prefix="strata-bench-week-") as tmp, upstream_services():
        os.environ["STRATA_ROOT"] = str(Path(tmp) / "strata")
        os.environ["STRATA_START_DATE"] = WEEK_START.date().isoformat()
        settings = load_settings()
        defs = build_definitions(settings)
        with local_instance_for_test() as instance, measured() as week:
            daemons = WeekScenario(WEEK_START, days).run(settings, defs, instance)
        log = daemons.log
        figures = log.figures()
        floor = Measurement(seconds=figures["run_seconds"])
        failed = [r.run_id for r in log.runs if not r.success]
        return [
            report(
                f"simulated week ({days} days, {len(log.tick_seconds)} hourly ticks)", week, floor, "its runs alone"
            ),
            f"  runs by trigger:kind: {figures['by_kind']}; failed: {len(failed)}",
            f"  daemon evaluation per simulated hour: median {figures['tick_seconds_median']} s, "
            f"max {figures['tick_seconds_max']} s (target < 2 s)",
        ]
