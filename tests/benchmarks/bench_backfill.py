"""`make bench-backfill`: the whole-graph backfill against its floor, and how `load_hourly` scales.

1. **Backfill.** `python -m jobs.backfill` over DAYS days at SCALE (the issue's figure: 181 days at 0.1,
   18.2M telemetry rows) on a fresh Strata root, against its floor: the same work with the raw engines
   (pyarrow reads and sha256-verifies every drop against its manifest, pyiceberg appends each day in
   one commit, and the compiled dbt SQL of every model runs in order in one DuckDB connection). Both
   run as child processes of this one, measured the same way: wall time, peak RSS of the whole process
   tree and of its largest process (psutil samples), and for the platform the size of DAGSTER_HOME.
2. **Scaling.** `load_hourly` alone over the first N days of the same drops, for each N of
   SCALING_DAYS (default 30, 90, 181), each on a fresh root: seconds per hour loaded and its ratio to the
   smallest N (linear growth: the ratio stays near 1; the target is <= 1.2).

The drops are generated once, for the longest window, and shared (STRATA_LANDING_URL / STRATA_SOURCE_URL).
Usage: `python -m tests.benchmarks.bench_backfill --days 3 --scale 0.01 --scaling-days 1,3` (small check);
the Makefile passes BENCH_DAYS / BENCH_SCALE / BENCH_SCALING_DAYS. Everything is written under --work-dir
(default: a temporary directory, removed afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
BENCH_START = date(2026, 1, 1)
JOBS = ("load_hourly", "extract_oltp", "refresh_unpartitioned", "build_daily", "forecast_daily")


@dataclass
class TreeRun:
    seconds: float
    peak_tree_bytes: int
    peak_process_bytes: int
    stdout: str

    def describe(self) -> str:
        return (
            f"{self.seconds:.1f} s, peak {self.peak_tree_bytes / 2**30:.2f} GiB tree / "
            f"{self.peak_process_bytes / 2**30:.2f} GiB largest process"
        )


def run_tree(args: list[str], env: dict[str, str], log: Path, interval: float = 0.2) -> TreeRun:
    """Run `python <args>` as a child, sampling the RSS of its whole process tree until it exits. Its
    stderr (Dagster's and dbt's logs) goes to `log`."""
    began = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as stderr:  # the child holds its own descriptor
        child = psutil.Popen(
            [sys.executable, *args], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    peaks = {"tree": 0, "process": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            sizes = []
            with suppress(psutil.Error):
                for process in [child, *child.children(recursive=True)]:
                    with suppress(psutil.Error):
                        sizes.append(process.memory_info().rss)
            if sizes:
                peaks["tree"] = max(peaks["tree"], sum(sizes))
                peaks["process"] = max(peaks["process"], max(sizes))
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = child.communicate()
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - began
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed with exit code {child.returncode} (log: {log}):\n{stdout[-4000:]}")
    return TreeRun(seconds, peaks["tree"], peaks["process"], stdout)


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def strata_env(root: Path, data_root: Path, start: date) -> dict[str, str]:
    """A fresh Strata root reading the shared drops and source DB; its own Iceberg, warehouse and DAGSTER_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    dagster_home = root / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return {
        **env,
        "STRATA_ROOT": str(root),
        "STRATA_START_DATE": start.isoformat(),
        "STRATA_LANDING_URL": str(data_root / "landing"),
        "STRATA_SOURCE_URL": f"sqlite:///{data_root / 'source' / 'oltp.sqlite'}",
        "DAGSTER_HOME": str(dagster_home),
    }


def generate(data_root: Path, days: int, scale: float) -> float:
    env = {**os.environ, "STRATA_ROOT": str(data_root), "STRATA_START_DATE": BENCH_START.isoformat()}
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "demo", "generate", "--start", str(BENCH_START), "--days", str(days),
         "--scale", str(scale)],
        env=env, cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - began


def run_seconds(stdout: str, job: str) -> float | None:
    """A run's seconds from `python -m jobs.backfill`'s summary line `run <job> <id> SUCCESS <s> s`."""
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[:2] == ["run", job]:
            return float(parts[-2])
    return None


# --- the floor (runs in a child process: `floor` subcommand) -------------------------------------------


def prepare_floor(work_root: Path) -> Path:
    """Compile the dbt project for the floor's DuckDB file (not part of the measured work, as in `make
    bench`); the (relation, materialization, SQL) list goes to a JSON file the floor process reads."""
    import duckdb

    from assets.bronze.contracts import file_drop_contracts, oltp_contracts
    from tests.benchmarks.bench_pipeline import compiled_models

    work_root.mkdir(parents=True, exist_ok=True)
    # Named like the warehouse: the compiled SQL says "warehouse"."silver"."x".
    with duckdb.connect(str(work_root / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS bronze")
        for name in [*oltp_contracts(), *file_drop_contracts()]:
            con.execute(f"CREATE OR REPLACE TABLE bronze.{name} AS SELECT * FROM range(0) WHERE false")
    models = work_root / "compiled_models.json"
    models.write_text(json.dumps(compiled_models(work_root)))
    return models


def floor_main(data_root: Path, work_root: Path, start: date, days: int) -> None:
    """Verify every drop with pyarrow + sha256, append each day to Iceberg in one commit, load the OLTP
    tables, then run every model's compiled SQL (from `prepare_floor`) in DuckDB over them. No Dagster,
    no checks."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.transforms import DayTransform

    from assets.bronze.contracts import file_drop_contracts
    from resources.iceberg import IcebergCatalog
    from resources.source_db import SourceDatabase
    from resources.warehouse import Warehouse
    from tests.benchmarks.bench_pipeline import drop_feed_views, run_floor_sql

    contract = file_drop_contracts()["telemetry"]
    schema = contract.arrow_schema()
    catalog = IcebergCatalog(uri=f"sqlite:///{work_root / 'catalog.db'}", warehouse=f"file://{work_root / 'iceberg'}")
    table = catalog.load_or_create_table("bronze.telemetry", schema)
    with table.update_spec() as update:  # partitioned by day, as the platform's table
        update.add_field(contract.time_column, DayTransform(), f"{contract.time_column}_day")
    table = table.refresh()
    landing = data_root / "landing" / "telemetry"
    for day in (start + timedelta(days=d) for d in range(days)):
        parts = []
        for hour in range(24):
            drop = landing / f"dt={day:%Y-%m-%d}" / f"hour={hour:02d}"
            manifest = json.loads((drop / "_manifest.json").read_text())
            for entry in manifest["files"]:
                data = (drop / entry["name"]).read_bytes()
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    raise RuntimeError(f"{drop / entry['name']}: sha256 differs from the manifest")
                rows = pq.read_table(pa.BufferReader(data))
                if rows.num_rows != entry["rows"]:
                    raise RuntimeError(f"{drop / entry['name']}: {rows.num_rows} rows, manifest says {entry['rows']}")
                parts.append(rows.select(schema.names).cast(schema))
        table.append(pa.concat_tables(parts))
        del parts

    warehouse = Warehouse(duckdb_path=str(work_root / "warehouse.duckdb"), extension_dir=str(work_root / "ext"))
    models = json.loads((work_root / "compiled_models.json").read_text())
    source = SourceDatabase(url=f"sqlite:///{data_root / 'source' / 'oltp.sqlite'}")
    with warehouse.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        location = table.metadata_location.replace("'", "''")
        con.execute("DROP TABLE IF EXISTS bronze.telemetry")
        con.execute(f"CREATE VIEW bronze.telemetry AS SELECT * FROM iceberg_scan('{location}')")
        drop_feed_views(con, data_root / "landing", skip=("telemetry",))  # the small journal feeds, from Parquet
        run_floor_sql(con, source, models)


# --- load_hourly alone (runs in a child process: `load-hourly` subcommand) ------------------------------


def load_hourly_main(start: date, days: int) -> None:
    import dagster as dg

    from jobs.backfill import load_code_locations, planned_runs, resolve_job

    job, tags = planned_runs(start, start + timedelta(days=days))[0]
    job_def = resolve_job(load_code_locations(), job)
    began = time.perf_counter()
    result = job_def.execute_in_process(instance=dg.DagsterInstance.get(), tags=tags)
    print(json.dumps({"seconds": time.perf_counter() - began, "success": result.success}))


# --- the benchmark --------------------------------------------------------------------------------------


def backfill_lines(work: Path, data_root: Path, days: int) -> list[str]:
    end = BENCH_START + timedelta(days=days)
    root = work / "platform"
    env = strata_env(root, data_root, BENCH_START)
    platform = run_tree(  # no weather API here, and the floor loads no weather either
        ["-m", "jobs.backfill", "--start", str(BENCH_START), "--end", str(end), "--no-weather"],
        env,
        work / "logs" / "backfill.log",
    )
    prepare_floor(work / "floor")
    floor = run_tree(
        ["-m", "tests.benchmarks.bench_backfill", "floor", "--data-root", str(data_root), "--work-root",
         str(work / "floor"), "--days", str(days)],
        {**os.environ, "STRATA_ROOT": str(work / "floor")},
        work / "logs" / "floor.log",
    )  # fmt: skip
    largest_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    ratio = platform.seconds / floor.seconds
    load = run_seconds(platform.stdout, "load_hourly")
    dagster_home_mib = directory_bytes(root / "dagster_home") / 2**20
    return [
        f"backfill {days} day(s) ({BENCH_START} .. {end}), python -m jobs.backfill: {platform.describe()}",
        "  runs: " + ", ".join(f"{job} {run_seconds(platform.stdout, job)} s" for job in JOBS),
        f"  floor (pyarrow verify + pyiceberg append per day + compiled dbt SQL in DuckDB): {floor.describe()}",
        f"  ratio platform / floor: {ratio:.2f}x (target <= 1.5x)"
        + (f"; load_hourly alone {load:.1f} s" if load is not None else ""),
        f"  DAGSTER_HOME after the backfill: {dagster_home_mib:.1f} MiB (target < 200 MB)",
        f"  largest child process (getrusage): {largest_child / 2**30:.2f} GiB (target <= 3 GiB for the tree)",
    ]


def scaling_lines(work: Path, data_root: Path, windows: list[int]) -> list[str]:
    per_hour: dict[int, float] = {}
    lines = []
    for days in windows:
        root = work / f"scaling-{days}"
        run = run_tree(
            ["-m", "tests.benchmarks.bench_backfill", "load-hourly", "--days", str(days)],
            strata_env(root, data_root, BENCH_START),
            work / "logs" / f"load_hourly-{days}.log",
        )
        result = json.loads(run.stdout.strip().splitlines()[-1])
        if not result["success"]:
            raise RuntimeError(f"load_hourly over {days} day(s) failed")
        per_hour[days] = result["seconds"] / (days * 24)
        lines.append(
            f"load_hourly over {days} day(s) ({days * 24} hours): {result['seconds']:.1f} s in the run, "
            f"{1000 * per_hour[days]:.1f} ms per hour; process {run.describe()}"
        )
        shutil.rmtree(root, ignore_errors=True)
    smallest, largest = min(windows), max(windows)
    if largest != smallest:
        lines.append(
            f"  time per hour, {largest} vs {smallest} days: {per_hour[largest] / per_hour[smallest]:.2f}x "
            f"(linear: <= 1.2); total time {largest * per_hour[largest] / (smallest * per_hour[smallest]):.1f}x "
            f"for {largest / smallest:.1f}x the hours"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_backfill", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    floor = sub.add_parser("floor", help="(internal) the raw-engine floor, run as a child process")
    floor.add_argument("--data-root", type=Path, required=True)
    floor.add_argument("--work-root", type=Path, required=True)
    floor.add_argument("--days", type=int, required=True)
    hourly = sub.add_parser("load-hourly", help="(internal) load_hourly alone, run as a child process")
    hourly.add_argument("--days", type=int, required=True)
    parser.add_argument("--days", type=int, default=int(os.environ.get("BENCH_DAYS", "181")))
    parser.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", "0.1")))
    parser.add_argument(
        "--scaling-days",
        default=os.environ.get("BENCH_SCALING_DAYS", "30,90,181"),
        help="comma-separated windows for the load_hourly scaling benchmark; empty: skip it",
    )
    parser.add_argument("--skip-backfill", action="store_true")
    parser.add_argument("--work-dir", type=Path, help="keep everything here instead of a temporary directory")
    args = parser.parse_args(argv)
    if args.command == "floor":
        floor_main(args.data_root, args.work_root, BENCH_START, args.days)
        return 0
    if args.command == "load-hourly":
        load_hourly_main(BENCH_START, args.days)
        return 0

    windows = sorted({int(d) for d in args.scaling_days.split(",") if d.strip()})
    longest = max([args.days if not args.skip_backfill else 0, *windows])
    with tempfile.TemporaryDirectory(prefix="strata-bench-backfill-") as tmp:
        work = args.work_dir or Path(tmp)
        data_root = work / "data"
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
        print(f"bench-backfill at {datetime.now():%Y-%m-%d %H:%M}, load average {load}", flush=True)
        seconds = generate(data_root, longest, args.scale)
        print(f"demo generate ({longest} day(s), scale {args.scale}): {seconds:.1f} s", flush=True)
        if not args.skip_backfill:
            for line in backfill_lines(work, data_root, args.days):
                print(line, flush=True)
        for line in scaling_lines(work, data_root, windows) if windows else []:
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
