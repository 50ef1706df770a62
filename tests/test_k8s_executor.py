"""The prod executor: every job runs its steps as Kubernetes Jobs through dagster-k8s's
k8s_job_executor, sized by helm/k8s-executor.yaml; local jobs keep Dagster's default executor; and the
code location never imports dagster_k8s (the Kubernetes client) just to load the definitions."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import dagster as dg
import pytest

from jobs.executor import K8S_EXECUTOR_NAME, k8s_step_executor, load_step_sizes
from resources.settings import REPO_ROOT, load_settings
from tests.helm_chart import write_offline_kubeconfig


def test_prod_settings_choose_the_k8s_executor_and_a_prod_shaped_run_may_opt_out():
    assert load_settings({"STRATA_ENV": "prod"}).executor == "k8s"
    assert load_settings({}).executor == "multiprocess"
    assert load_settings({"STRATA_ENV": "prod", "STRATA_EXECUTOR": "multiprocess"}).executor == "multiprocess"
    with pytest.raises(ValueError, match="STRATA_EXECUTOR must be 'multiprocess' or 'k8s', got 'celery'"):
        load_settings({"STRATA_EXECUTOR": "celery"})


@pytest.mark.slow  # builds the definitions twice: 20-25 s on a loaded machine
def test_every_job_uses_the_k8s_executor_in_prod_and_the_default_locally(settings):
    from definitions import build_definitions

    prod = build_definitions(dataclasses.replace(settings, executor="k8s"))
    local = build_definitions(settings)
    prod_jobs, local_jobs = prod.resolve_all_job_defs(), local.resolve_all_job_defs()
    assert {job.name for job in prod_jobs} == {job.name for job in local_jobs}
    assert {job.name: job.executor_def.name for job in prod_jobs} == dict.fromkeys(
        (job.name for job in prod_jobs), K8S_EXECUTOR_NAME
    )
    assert {job.executor_def.name for job in local_jobs} == {dg.multi_or_in_process_executor.name}


@pytest.mark.slow  # a fresh interpreter loads the definitions: 20-45 s on a loaded machine
def test_loading_prod_definitions_does_not_import_dagster_k8s(strata_root):
    """The code server loads the definitions at start and on every reload; the Kubernetes client is
    imported only by the run worker that creates the executor."""
    script = textwrap.dedent(
        f"""
        import sys
        from definitions import build_definitions
        from resources.settings import load_settings
        settings = load_settings({{"STRATA_ROOT": {str(strata_root)!r}, "STRATA_EXECUTOR": "k8s"}})
        defs = build_definitions(settings)
        assert {{job.executor_def.name for job in defs.resolve_all_job_defs()}} == {{"k8s"}}
        print(sorted(name for name in ("dagster_k8s", "kubernetes") if name in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


@dg.op
def dbt_models(): ...


@dg.job
def one_step():
    dbt_models()


def create_executor(config: dict):
    from dagster._core.definitions.job_base import InMemoryJob

    executor_def = k8s_step_executor(config)
    return executor_def.executor_creation_fn(
        dg.InitExecutorContext(
            job=InMemoryJob(one_step),
            executor_def=executor_def,
            executor_config={},
            instance=dg.DagsterInstance.ephemeral(),
        )
    )


@pytest.fixture
def kubeconfig(tmp_path):
    """A kubeconfig naming a cluster nobody contacts: the step handler loads it, creating no Job."""
    return write_offline_kubeconfig(tmp_path / "kubeconfig")


def test_the_executor_hands_the_step_sizes_to_dagster_k8s(kubeconfig):
    from dagster._core.executor.step_delegating import StepDelegatingExecutor
    from dagster_k8s.executor import K8sStepHandler

    sizes = load_step_sizes()
    # In a pod the executor loads the in-cluster config; here a kubeconfig file stands in for it.
    executor = create_executor({**sizes, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)})
    assert isinstance(executor, StepDelegatingExecutor)
    handler = executor._step_handler
    assert isinstance(handler, K8sStepHandler)
    # Private attributes: what dagster-k8s will launch each step with.
    per_step = handler._per_step_k8s_config
    assert {op: c["container_config"] for op, c in per_step.items()} == {
        op: c["container_config"] for op, c in sizes["per_step_k8s_config"].items()
    }
    assert per_step["dbt_daily_models"]["container_config"]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    default = handler._executor_container_context.run_k8s_config.container_config
    assert default == sizes["step_k8s_config"]["container_config"]
    assert executor._max_concurrent == sizes["max_concurrent"] == 4


def test_invalid_step_sizes_fail_the_run_naming_the_file_and_the_entry():
    sizes = load_step_sizes()
    sizes["per_step_k8s_config"]["dbt_models"]["container_confg"] = {}
    with pytest.raises(dg.DagsterInvalidConfigError, match=r'k8s-executor.yaml .*"container_confg"'):
        create_executor(sizes)
