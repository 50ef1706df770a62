"""One dbt call inside the platform, with and without the dbt forkserver (resources/dbt_forkserver.py).

`refresh_unpartitioned` (OLTP extraction, then one `dbt build` of the unpartitioned models) on one day at
`scale`, run in process. Per run: the dbt step's seconds before dbt starts its first node (interpreter
start, imports, partial parse; from the step's start to the earliest node start in run_results.json)
and the step's total. Then a partial `dbt parse` of the project through the wrapper. Median of 3,
alternating the modes; the first call of each mode (server start, dbt's cold parse) is not counted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import dagster as dg

from tests.benchmarks.bench_pipeline import BENCH_START, generate

REPEATS = 3


def first_node_started(run_results: Path) -> float:
    results = json.loads(run_results.read_text())["results"]
    starts = [timing["started_at"] for result in results for timing in result["timing"] if timing.get("started_at")]
    return min(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in starts)


def dbt_step(defs: dg.Definitions, instance: dg.DagsterInstance, dbt_dir: Path) -> tuple[float, float]:
    result = defs.get_job_def("refresh_unpartitioned").execute_in_process(instance=instance)
    assert result.success
    [step] = [s for s in instance.get_run_step_stats(result.run_id) if s.step_key == "dbt_models"]
    [run_results] = (dbt_dir / "target" / "strata").glob("*-dbt_models/run_results.json")
    return first_node_started(run_results) - step.start_time, step.end_time - step.start_time


def parse_seconds(dbt_dir: Path, target: Path) -> float:
    from resources.environment import dbt_executable

    began = time.perf_counter()
    subprocess.run(
        [dbt_executable(), "parse", "--profiles-dir", ".", "--target-path", str(target), "--quiet"],
        cwd=dbt_dir,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - began


def main(scale: float = 0.01) -> list[str]:
    from definitions import build_definitions
    from resources import dbt_forkserver
    from resources.settings import REPO_ROOT, load_settings

    dbt_dir = REPO_ROOT / "dbt"
    figures: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "strata"
        generate(root, scale)
        os.environ["STRATA_ROOT"] = str(root)
        os.environ["STRATA_START_DATE"] = BENCH_START.isoformat()
        defs = build_definitions(load_settings())
        instance = dg.DagsterInstance.ephemeral()
        for round_ in range(REPEATS + 1):
            for mode in ("on", "off"):
                os.environ[dbt_forkserver.SWITCH_ENV] = "1" if mode == "on" else "0"
                before_sql, total = dbt_step(defs, instance, dbt_dir)
                parse = parse_seconds(dbt_dir, Path(tmp) / f"parse-{mode}")
                if round_ > 0:
                    for name, value in (("before", before_sql), ("total", total), ("parse", parse)):
                        figures[mode].setdefault(name, []).append(value)
    os.environ.pop(dbt_forkserver.SWITCH_ENV, None)
    load = os.getloadavg()[0]

    def median(mode: str, name: str) -> float:
        return statistics.median(figures[mode][name])

    return [
        f"dbt step of refresh_unpartitioned (scale {scale}, median of {REPEATS}, load {load:.1f}): "
        f"before SQL {median('on', 'before'):.1f} s with the forkserver / {median('off', 'before'):.1f} s without; "
        f"step total {median('on', 'total'):.1f} s / {median('off', 'total'):.1f} s",
        f"dbt parse (partial) through the wrapper: {median('on', 'parse'):.1f} s with the forkserver / "
        f"{median('off', 'parse'):.1f} s without",
        f"raw: {json.dumps(figures)}",
    ]


if __name__ == "__main__":
    for line in main():
        print(line, flush=True)
