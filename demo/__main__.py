"""Command line: `python -m demo generate [...]`, `python -m demo advance --as-of ISO [...]`, `python -m demo live`,
`python -m demo weather-api [--port 8765] [--faults JSON]`.

Paths come from `load_settings()`; `advance` and `live` continue the config recorded by `generate`.
`generate --horizon-days N --lag-hours H` makes a window that reaches N days past the history, filled
only up to H hours ago, so that `live` can move the world on towards (and then with) the clock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from demo.live import LivePace, run_live, utc_now_naive
from demo.simulator import DemoConfig, advance, generate, read_truth
from demo.weather_api import DEFAULT_PORT, WeatherFaults
from demo.weather_api import serve_forever as serve_weather_api_forever
from resources.settings import DEFAULT_DEMO_DAYS, WEATHER_AUTH_SECRET, environment_secret, load_settings


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
    generate_command = commands.choices["generate"]
    generate_command.add_argument(
        "--horizon-days", type=int, default=0, help="extend the window this many days past --days (for `live`)"
    )
    generate_command.add_argument(
        "--lag-hours", type=float, help="fill the world up to this many hours before now (default: the window end)"
    )
    live = commands.add_parser("live", help="advance the generated world by itself, in compressed time")
    live.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (default 60)")
    live.add_argument("--tick-seconds", type=float, default=10.0)
    live.add_argument("--late-every", type=int, default=24, help="every Nth hour's drop is late (0: never)")
    live.add_argument("--late-by-hours", type=int, default=2)
    live.add_argument("--ticks", type=int, help="stop after this many ticks (default: run until stopped)")
    weather = commands.add_parser("weather-api", help="serve the demo weather API on 127.0.0.1")
    weather.add_argument("--port", type=int, default=DEFAULT_PORT)
    weather.add_argument("--scale", type=float, help="default: the scale recorded by generate, else 1")
    weather.add_argument("--seed", type=int, help="default: the seed recorded by generate, else 42")
    weather.add_argument(
        "--faults", type=json.loads, default={}, help="JSON of WeatherFaults, e.g. '{\"missing_locations\": [3]}'"
    )
    return parser


def _config(args: argparse.Namespace, recorded: dict | None, configured_start: date) -> DemoConfig:
    """Flags win; then the recorded config (for advance); then the platform's start date, so the demo
    window begins where the partitions do."""
    base = DemoConfig.from_json(recorded) if recorded else None
    days = args.days or (base.days if base else DEFAULT_DEMO_DAYS)
    days += getattr(args, "horizon_days", 0) or 0
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
    if args.command == "weather-api":
        return _serve_weather_api(args, settings)
    if args.command == "live":
        pace = LivePace(args.speed, args.tick_seconds, args.late_every, args.late_by_hours)
        print(f"live demo: {pace}; stop with Ctrl-C", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C, or `make dev` stopping
            run_live(**paths, pace=pace, max_ticks=args.ticks, report=lambda line: print(line, flush=True))
        return 0
    if args.command == "generate":
        cfg = _config(args, None, settings.start_date)
        as_of = args.as_of
        if args.lag_hours is not None:
            as_of = min(cfg.end, utc_now_naive() - timedelta(hours=args.lag_hours))
        print(f"generating {cfg} as of {as_of or cfg.end}", flush=True)
        result = generate(cfg, as_of=as_of, **paths)
    else:
        cfg = _config(args, read_truth(settings.demo_dir)["config"], settings.start_date)
        print(f"advancing {cfg} to {args.as_of}", flush=True)
        result = advance(cfg, as_of=args.as_of, **paths)
    print(_summary(result, time.perf_counter() - began))
    return 0


def _serve_weather_api(args: argparse.Namespace, settings) -> int:
    """The demo weather API for `make dev`: the recorded demo's seed and scale, the token of the platform's
    weather secret (when one is set, the API asks for it, as a real provider would)."""
    recorded = read_truth(settings.demo_dir)["config"] if (settings.demo_dir / "ground_truth.json").exists() else {}
    faults = WeatherFaults()
    faults.update(args.faults)
    token = environment_secret(settings.weather.get("auth_secret", WEATHER_AUTH_SECRET), settings.dotenv_path)
    with contextlib.suppress(KeyboardInterrupt):
        serve_weather_api_forever(
            seed=args.seed if args.seed is not None else recorded.get("seed", 42),
            scale=args.scale or recorded.get("scale", 1.0),
            port=args.port,
            token=token,
            faults=faults,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
