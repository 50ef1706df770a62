"""`make bench`: every benchmark prints its figure and the ratio against its floor.

`python -m tests.benchmarks [scale]` runs them all; `python -m tests.benchmarks NAME [arg]` runs one
(NAME: pipeline, drops, audit, ml, report, week, dbtcall, observability, eventlog; `arg` is the scale, or the days
of the week benchmark; dbtcall defaults to scale 0.01).
`make bench-backfill` runs the 181-day backfill benchmark (tests/benchmarks/bench_backfill.py) on its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from tests.benchmarks import (
    bench_audit,
    bench_dbt_call,
    bench_drops,
    bench_event_log,
    bench_ml,
    bench_observability,
    bench_pipeline,
    bench_report,
    bench_week,
)

BENCHMARKS: dict[str, Callable[[float], Iterable[str]]] = {
    "pipeline": bench_pipeline.main,
    "drops": lambda _scale: bench_drops.main(),
    "audit": lambda _scale: bench_audit.main(),
    "ml": bench_ml.main,
    "report": bench_report.main,
    "week": lambda days: bench_week.main(int(days) if days != 1.0 else 7),
    "dbtcall": lambda scale: bench_dbt_call.main(scale if scale != 1.0 else 0.01),
    "observability": bench_observability.main,
    "eventlog": lambda _scale: bench_event_log.main(),
}


def main() -> int:
    args = sys.argv[1:]
    names = list(BENCHMARKS)
    if args and args[0] in BENCHMARKS:
        names, args = [args[0]], args[1:]
    scale = float(args[0]) if args else 1.0
    for name in names:
        for line in BENCHMARKS[name](scale):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
