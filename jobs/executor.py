"""The executor of every job: dagster-k8s's `k8s_job_executor` in a cluster (one Kubernetes Job per step,
sized by step kind), Dagster's default multiprocess executor elsewhere.

The step sizes are `helm/k8s-executor.yaml` (policy-checked with the Helm values, copied into the code
image): dbt, Bronze loads, the forecast, and a default for checks and anything unlisted. A change of
sizes ships with the image, like the code.

dagster_k8s imports the Kubernetes client, which costs seconds; the code server loads the definitions
often and never runs a step, so the executor defined here imports dagster_k8s only when a run worker
creates it, then hands over to `k8s_job_executor` with the file's config checked against its schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from resources.settings import REPO_ROOT, StrataSettings

STEP_SIZES_FILE = REPO_ROOT / "helm" / "k8s-executor.yaml"
EXECUTORS = ("multiprocess", "k8s")
K8S_EXECUTOR_NAME = "k8s"  # k8s_job_executor's own name, as run config and the UI show it


def load_step_sizes(path: Path = STEP_SIZES_FILE) -> dict[str, Any]:
    """The k8s_job_executor config: max_concurrent, step_k8s_config (default) and per_step_k8s_config (per op)."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as error:
        raise FileNotFoundError(f"the step sizes of the k8s executor are missing: {path} ({error})") from None


def k8s_step_executor(config: dict[str, Any]) -> dg.ExecutorDefinition:
    """`k8s_job_executor` with this fixed `config`, importing dagster_k8s only when a run creates it."""

    @dg.executor(
        name=K8S_EXECUTOR_NAME,
        config_schema={},
        requirements=dg.multiple_process_executor_requirements(),
    )
    def k8s_executor(init_context: dg.InitExecutorContext):
        from dagster._config import process_config
        from dagster_k8s import k8s_job_executor

        processed = process_config(k8s_job_executor.config_schema.config_type, config)
        if not processed.success:
            problems = "; ".join(error.message for error in processed.errors)
            raise dg.DagsterInvalidConfigError(
                f"{STEP_SIZES_FILE.name} is not valid k8s_job_executor config: {problems}", processed.errors, config
            )
        return k8s_job_executor.executor_creation_fn(
            dg.InitExecutorContext(
                job=init_context.job,
                executor_def=k8s_job_executor,
                executor_config=processed.value,
                instance=init_context.instance,
            )
        )

    return k8s_executor


def build_executor(settings: StrataSettings) -> dg.ExecutorDefinition | None:
    """The executor for `Definitions(executor=...)`: None keeps Dagster's default (multiprocess)."""
    if settings.executor == "k8s":
        return k8s_step_executor(load_step_sizes())
    return None
