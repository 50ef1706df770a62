"""Jobs whose steps only take turns run in the run worker's own process locally (jobs/policies.py
IN_PROCESS_JOBS): no process start per step and no pool back-off between steps. In Kubernetes they keep
one pod per step."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from definitions import build_location
from demo.simulator import DemoConfig, generate
from jobs.policies import IN_PROCESS_JOBS
from resources.settings import REPO_ROOT, load_settings
from tests.conftest import TEST_START


def execution(job: dg.JobDefinition, run_config: dict | None = None) -> tuple[str, set[str]]:
    """The executor a run of `job` uses with `run_config`, and the mode chosen in its config."""
    from dagster._core.system_config.objects import ResolvedRunConfig

    resolved = ResolvedRunConfig.build(job, run_config or {}).execution
    return resolved.execution_engine_name, set(resolved.execution_engine_config or {})


def test_the_serial_jobs_run_in_process_locally_and_step_per_pod_in_kubernetes(settings, monkeypatch):
    assert set(IN_PROCESS_JOBS) == {"extract_oltp"}
    local = build_location("ingestion", settings)
    default = dg.multi_or_in_process_executor.name
    assert execution(local.resolve_job_def("extract_oltp")) == (default, {"in_process"})
    assert execution(local.resolve_job_def("load_hourly")) == (default, {"multiprocess"})
    # A person launching the job can still choose the other mode.
    multiprocess = {"execution": {"config": {"multiprocess": {}}}}
    assert execution(local.resolve_job_def("extract_oltp"), multiprocess) == (default, {"multiprocess"})

    monkeypatch.setenv("STRATA_EXECUTOR", "k8s")
    in_cluster = build_location("ingestion", load_settings())
    assert execution(in_cluster.resolve_job_def("extract_oltp"))[0] == "k8s"


@pytest.mark.slow
def test_a_launched_extraction_runs_every_load_in_the_run_workers_process(settings, tmp_path):
    """`dagster job execute` runs the job as a run worker does (its own executor, the repository's
    dagster.yaml with the `source_db` pool): each table's load starts in the worker's process, in turn,
    and every table is loaded."""
    generate(
        DemoConfig(start=TEST_START, days=1, scale=0.01, seed=7),
        as_of=datetime(TEST_START.year, TEST_START.month, TEST_START.day, 10),
        source_url=settings.source_database_url,
        landing_root=Path(settings.landing_root),
        truth_dir=settings.demo_dir,
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    command = [Path(sys.executable).with_name("dagster"), "job", "execute", "-f", "locations/ingestion.py"]
    done = subprocess.run(
        [*command, "-j", "extract_oltp"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.is_dagster_event]
    executing = [e.message for e in events if e.event_type_value == "ENGINE_EVENT" and "in process" in e.message]
    [worker_pid] = {int(pid) for message in executing for pid in re.findall(r"pid: (\d+)", message)}
    starts = [e for e in events if e.event_type == dg.DagsterEventType.STEP_START]
    materialized = {
        e.asset_key.to_user_string() for e in events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    }
    job = build_location("ingestion", settings).resolve_job_def("extract_oltp")
    assert materialized == {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert len(starts) >= len(materialized) >= 8  # a step per OLTP table (and its checks), every table loaded
    assert {e.pid for e in starts} == {worker_pid}
    assert all(key.startswith("bronze/") for key in materialized)
