"""Command line: `python -m demo generate [...]` and `python -m demo advance --as-of ISO [...]`.

Paths come from `load_settings()`; `advance` defaults its config to the one recorded by `generate`.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, datetime
from pathlib import Path

from demo.simulator import DemoConfig, advance, generate, read_truth
from resources.settings import DEFAULT_DEMO_DAYS, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("generate", "(re)create the OLTP tables, telemetry drops and ground truth"),
        ("advance", "move existing demo data forward to a later --as-of"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--start", type=date.fromisoformat, help="first day, YYYY-MM-DD")
        command.add_argument("--days", type=int)
        command.add_argument("--scale", type=float)
        command.add_argument("--seed", type=int)
        command.add_argument("--as-of", type=datetime.fromisoformat, required=name == "advance")
    return parser


def _config(args: argparse.Namespace, recorded: dict | None, configured_start: date) -> DemoConfig:
    """Flags win; then the recorded config (for advance); then the platform's start date, so the demo
    window begins where the partitions do."""
    base = DemoConfig.from_json(recorded) if recorded else None
    days = args.days or (base.days if base else DEFAULT_DEMO_DAYS)
    default_start = base.start if base else configured_start
    return DemoConfig(
        start=args.start or default_start,
        days=days,
        scale=args.scale or (base.scale if base else 1.0),
        seed=args.seed if args.seed is not None else (base.seed if base else 42),
    )


def _summary(result: dict, seconds: float) -> str:
    counts = ", ".join(f"{name}={n:,}" for name, n in result["row_counts"].items())
    lines = [f"as of {result['as_of']}: {counts}", f"telemetry drops written: {result['drops_written']:,}"]
    for name, change in result.get("changes", {}).items():
        lines.append(f"  {name}: {change['updated']:,} updated, {change['inserted']:,} inserted")
    lines.append(f"done in {seconds:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    paths = {
        "source_url": settings.source_database_url,
        "landing_root": Path(settings.landing_root),
        "truth_dir": settings.demo_dir,
    }
    began = time.perf_counter()
    if args.command == "generate":
        cfg = _config(args, None, settings.start_date)
        print(f"generating {cfg}", flush=True)
        result = generate(cfg, as_of=args.as_of, **paths)
    else:
        cfg = _config(args, read_truth(settings.demo_dir)["config"], settings.start_date)
        print(f"advancing {cfg} to {args.as_of}", flush=True)
        result = advance(cfg, as_of=args.as_of, **paths)
    print(_summary(result, time.perf_counter() - began))
    return 0


if __name__ == "__main__":
    sys.exit(main())
