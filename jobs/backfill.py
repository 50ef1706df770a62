"""Materialize the whole graph for a date range, headless (`make demo`), and summarise it.

Runs go through the Dagster instance in $DAGSTER_HOME, so they appear in the UI's run history. The
order is partitioning by partitioning: hourly Bronze telemetry, then everything unpartitioned (OLTP
Bronze, then the Silver views/dimensions that read it), then the daily models and the forecast, each
as one range run. Each job belongs to one code location; the CLI loads every location workspace.yaml
names and runs each job in its own.

The CLI (the initial load of `make dev` and `make demo`) fetches the weather first: on a new table the
fetch catches up from the first partition day, so the Silver weather and the daily models built after
it have the weather of every day. The weather API is an outside system: when it fails, the backfill
says so (and exits non-zero) but builds the rest, with the weather left empty until the next fetch.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg

from assets.drops.protocol import partition_key
from assets.quality.parity_checks import PARITY_CHECK

WORKSPACE_FILE = Path(__file__).resolve().parents[1] / "workspace.yaml"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass
class BackfillSummary:
    runs: list[tuple[str, str, bool, float]] = field(default_factory=list)  # (job, run id, success, seconds)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    # Dual-run parity differences from the legacy outputs: warnings by design while a table is in dual
    # run (`audit cutover` lists them), so they fail nothing; once cut over they are failed checks.
    parity_warnings: list[str] = field(default_factory=list)
    # Other checks of WARN severity that did not pass (a volume anomaly, a changed column): shown, not failed.
    check_warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return all(run[2] for run in self.runs) and not self.checks_failed


def range_tags(first: str, last: str) -> dict[str, str]:
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}


WEATHER_JOB = "fetch_weather"


def planned_runs(start: date, end: date, weather: bool = False) -> list[tuple[str, dict[str, str]]]:
    """(job name, tags) in execution order for the days [start, end); with `weather`, the weather fetch first."""
    first_hour = datetime(start.year, start.month, start.day)
    last_hour = datetime(end.year, end.month, end.day) - timedelta(hours=1)
    days = range_tags(f"{start:%Y-%m-%d}", f"{end - timedelta(days=1):%Y-%m-%d}")
    return [
        *([(WEATHER_JOB, {})] if weather else []),
        ("load_hourly", range_tags(partition_key(first_hour), partition_key(last_hour))),
        ("extract_oltp", {}),
        ("refresh_unpartitioned", {}),
        ("build_daily", days),
        ("forecast_daily", days),
    ]


Locations = dg.Definitions | Sequence[dg.Definitions]


def resolve_job(locations: Locations, job_name: str) -> dg.JobDefinition:
    """The job from the code location that holds it (or from the single-location view)."""
    for defs in [locations] if isinstance(locations, dg.Definitions) else locations:
        if defs.get_repository_def().has_job(job_name):
            return defs.resolve_job_def(job_name)
    raise KeyError(f"no code location has the job {job_name}")


def backfilled_assets(defs: Locations) -> set[dg.AssetKey]:
    """What a backfill builds: the assets of the jobs it runs. The assets on a clock of their own (the
    weather fetch, unless `weather` asks for it first, the retraining, the weekly report, table
    maintenance) are left to their schedules."""
    jobs = {job for job, _tags in planned_runs(date(2000, 1, 1), date(2000, 1, 2))}
    return set().union(*(resolve_job(defs, job).asset_layer.selected_asset_keys for job in jobs))


def run_backfill(
    defs: Locations, instance: dg.DagsterInstance, start: date, end: date, weather: bool = False
) -> BackfillSummary:
    summary = BackfillSummary()
    began = time.monotonic()
    for job_name, tags in planned_runs(start, end, weather):
        run_began = time.monotonic()
        result = resolve_job(defs, job_name).execute_in_process(
            instance=instance, tags={**tags, "strata/trigger": "backfill-cli"}, raise_on_error=False
        )
        summary.runs.append((job_name, result.run_id, result.success, time.monotonic() - run_began))
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.passed:
                summary.checks_passed += 1
            elif evaluation.check_name == PARITY_CHECK and evaluation.severity == dg.AssetCheckSeverity.WARN:
                summary.parity_warnings.append(f"{evaluation.asset_key.to_user_string()}[{evaluation.partition}]")
            elif evaluation.severity == dg.AssetCheckSeverity.WARN:
                partition = f"[{evaluation.partition}]" if evaluation.partition else ""
                summary.check_warnings.append(
                    f"{evaluation.asset_key.to_user_string()}{partition}:{evaluation.check_name}"
                )
            else:
                summary.checks_failed.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
        if not result.success and job_name != WEATHER_JOB:  # without weather the rest still builds
            break
    summary.seconds = time.monotonic() - began
    return summary


def table_row_counts(defs: Locations) -> dict[str, int]:
    """Rows per table after the backfill: Bronze from Iceberg snapshots, Silver/Gold from the warehouse
    (every code location has the same resources: the first one's are read)."""
    if not isinstance(defs, dg.Definitions):
        defs = defs[0]
    iceberg = defs.resources["iceberg"]
    counts = {}
    catalog = iceberg.load()
    for identifier in catalog.list_tables("bronze"):
        snapshot = catalog.load_table(identifier).current_snapshot()
        counts[".".join(identifier)] = int(snapshot.summary["total-records"]) if snapshot else 0
    warehouse = defs.resources["warehouse"]
    if warehouse.engine == "duckdb":
        with warehouse.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema IN ('silver', 'gold') AND table_type = 'BASE TABLE' ORDER BY 1, 2"
            ).fetchall()
            for schema, name in rows:
                counts[f"{schema}.{name}"] = con.execute(f'SELECT count(*) FROM {schema}."{name}"').fetchone()[0]
    return counts


def demo_window() -> tuple[date, date]:
    """The whole days the demo generator has filled (its ground truth says), else the configured default.

    A window made for the live demo reaches past its `as_of`: the backfill stops at the last midnight
    the data has passed, and the drops of the day under way are left to the drop sensor.
    """
    import json

    from resources.settings import default_demo_end, load_settings

    settings = load_settings()
    truth = settings.demo_dir / "ground_truth.json"
    if truth.exists():
        recorded = json.loads(truth.read_text())
        start = date.fromisoformat(recorded["config"]["start"])
        filled_until = datetime.fromisoformat(recorded["as_of"]).date()
        return start, min(start + timedelta(days=int(recorded["config"]["days"])), filled_until)
    return settings.start_date, default_demo_end()


def load_code_locations(workspace: Path = WORKSPACE_FILE) -> list[dg.Definitions]:
    """The Definitions of every code location that `workspace.yaml` declares, loaded as `dagster dev` does.

    Loading the files the workspace names (rather than importing `definitions`) keeps this CLI below the
    assembly layer and makes it run exactly what the UI runs.
    """
    import runpy

    import yaml

    found = []
    for entry in yaml.safe_load(workspace.read_text())["load_from"]:
        location = entry["python_file"]
        path = workspace.parent / location.get("working_directory", ".") / location["relative_path"]
        found.append(runpy.run_path(str(path))["defs"])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description="Materialize every asset for a date range (end exclusive).")
    parser.add_argument("--start", type=date.fromisoformat)
    parser.add_argument("--end", type=date.fromisoformat)
    parser.add_argument(
        "--no-weather", action="store_true", help="skip the weather fetch (no weather API at STRATA_WEATHER_URL)"
    )
    args = parser.parse_args()
    default_start, default_end = demo_window()
    start, end = args.start or default_start, args.end or default_end

    defs = load_code_locations()
    summary = run_backfill(defs, dg.DagsterInstance.get(), start, end, weather=not args.no_weather)
    print(f"Strata backfill {start} .. {end} (end exclusive)")
    for job_name, run_id, ok, seconds in summary.runs:
        print(f"  run {job_name:<22} {run_id}  {'SUCCESS' if ok else 'FAILURE'}  {seconds:6.1f} s")
    print("  tables:")
    for name, rows in table_row_counts(defs).items():
        print(f"    {name:<34} {rows:>12,} rows")
    print(f"  checks: {summary.checks_passed} passed, {len(summary.checks_failed)} failed")
    for failed in summary.checks_failed:
        print(f"    FAILED {failed}")
    for warned in summary.check_warnings:
        print(f"    WARN {warned}")
    if summary.parity_warnings:
        print(
            f"  dual-run parity: {len(summary.parity_warnings)} day(s) differ from the legacy outputs (`audit cutover`)"
        )
    print(f"  wall time: {summary.seconds:.1f} s")
    raise SystemExit(0 if summary.success else 1)


if __name__ == "__main__":
    main()
