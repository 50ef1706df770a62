"""What the official Dagster Helm chart (1.13) makes of Strata's values, for offline tests.

There is no Helm binary here, so the parts of the chart's templates that matter to Strata are
mirrored: the instance ConfigMap (`templates/configmap-instance.yaml` and `helpers/instance/*.tpl`:
storage, run launcher, run queue, run monitoring, concurrency), the image helper (digest wins over tag,
dagster-io/dagster#32570) and the container context a user deployment with
`includeConfigInLaunchedRuns` hands to its runs. The tests then feed the result to the real
libraries (Dagster's instance schema, dagster-k8s's launcher and Job builder, kubernetes-validate).

The key lists come from the chart's pydantic schema (`helm/dagster/schema/schema/charts/...`) as
indexed from dagster-io/dagster; they were not checked against the 1.13.27 chart archive itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.deployment_policy import REPO_ROOT

HELM_DIR = REPO_ROOT / "helm"
ENVIRONMENTS = ("dev", "uat", "prod")
RELEASE = "strata"
CHART_FULLNAME = f"{RELEASE}-dagster"

# DagsterHelmValues (schema/charts/dagster/values.py); `concurrency` is in the newer versions.
CHART_TOP_LEVEL_KEYS = frozenset(
    {
        "dagsterWebserver",
        "dagster-user-deployments",
        "postgresql",
        "generatePostgresqlPasswordSecret",
        "generateCeleryConfigSecret",
        "rabbitmq",
        "redis",
        "flower",
        "ingress",
        "imagePullSecrets",
        "computeLogManager",
        "scheduler",
        "runLauncher",
        "pythonLogs",
        "dagsterDaemon",
        "busybox",
        "migrate",
        "telemetry",
        "serviceAccount",
        "global",
        "retention",
        "concurrency",
        "additionalInstanceConfig",
    }
)
# What a Strata deployment cannot do without: leaving one out falls back to a chart default that is
# wrong for it (the bundled PostgreSQL, a generated password, the default run launcher image).
STRATA_REQUIRED_KEYS = frozenset(
    {
        "global",
        "postgresql",
        "generatePostgresqlPasswordSecret",
        "dagsterWebserver",
        "dagster-user-deployments",
        "runLauncher",
        "dagsterDaemon",
        "concurrency",
    }
)
# Keys of the nested sections Strata sets (Webserver, Daemon, UserDeployment, PostgreSQL,
# K8sRunLauncherConfig, QueuedRunCoordinatorConfig, Concurrency), so a typo is not silently ignored.
SECTION_KEYS = {
    ("global",): {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
                  "dagsterInstanceConfigMap", "postgresqlSecretUsernameKey"},
    ("postgresql",): {"postgresqlScheme", "image", "enabled", "postgresqlHost", "postgresqlUsername",
                      "postgresqlPassword", "postgresqlDatabase", "postgresqlParams", "service"},
    ("dagsterWebserver",): {"dbStatementTimeout", "dbPoolRecycle", "logLevel", "schedulerName", "volumeMounts",
                            "volumes", "pathPrefix", "replicaCount", "image", "nameOverride", "service", "workspace",
                            "env", "envConfigMaps", "envSecrets", "deploymentLabels", "labels", "nodeSelector",
                            "affinity", "tolerations", "podSecurityContext", "securityContext", "resources",
                            "readinessProbe", "livenessProbe", "startupProbe", "annotations", "enableReadOnly"},
    ("dagsterDaemon",): {"schedulerName", "volumeMounts", "volumes", "enabled", "image", "runCoordinator",
                         "heartbeatTolerance", "env", "envConfigMaps", "envSecrets", "deploymentLabels", "labels",
                         "nodeSelector", "affinity", "tolerations", "podSecurityContext", "securityContext",
                         "resources", "livenessProbe", "readinessProbe", "startupProbe", "annotations",
                         "runMonitoring", "runRetries", "sensors", "schedules", "backfills",
                         "checkDbReadyInitContainer", "logFormat", "extraContainers"},
    ("dagsterDaemon", "runMonitoring"): {"enabled", "startTimeoutSeconds", "cancelTimeoutSeconds",
                                         "maxResumeRunAttempts", "pollIntervalSeconds", "freeSlotsAfterRunEndSeconds"},
    ("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator"): {
        "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
        "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"},
    ("runLauncher", "config", "k8sRunLauncher"): {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig",
                                                  "kubeconfigFile", "envConfigMaps", "envSecrets", "envVars",
                                                  "volumeMounts", "volumes", "labels", "failPodOnRunFailure",
                                                  "resources", "securityContext", "schedulerName", "runK8sConfig"},
    ("concurrency",): {"enabled", "pools", "runs"},
    ("concurrency", "pools"): {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    ("concurrency", "runs"): {"maxConcurrentRuns", "tagConcurrencyLimits"},
}  # fmt: skip
USER_DEPLOYMENT_KEYS = frozenset(
    {
        "name", "image", "port", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "env",
        "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
        "labels", "volumeMounts", "volumes", "schedulerName", "deploymentNamespace",
    }
)  # fmt: skip
RUN_K8S_CONFIG_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


def load_values(env: str) -> dict[str, Any]:
    return yaml.safe_load((HELM_DIR / f"values-{env}.yaml").read_text())


def load_executor_config(path: Path = HELM_DIR / "k8s-executor.yaml") -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def unknown_keys(values: Mapping[str, Any]) -> list[str]:
    """Keys the chart does not know, as dotted paths (top level, the sections above, each deployment)."""
    unknown = [key for key in values if key not in CHART_TOP_LEVEL_KEYS]
    for path, known in SECTION_KEYS.items():
        node: Any = values
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping):
            unknown += [".".join((*path, key)) for key in node if key not in known]
    for index, deployment in enumerate(values.get("dagster-user-deployments", {}).get("deployments", [])):
        place = f"dagster-user-deployments.deployments[{index}]"
        unknown += [f"{place}.{key}" for key in deployment if key not in USER_DEPLOYMENT_KEYS]
    return unknown


def missing_keys(values: Mapping[str, Any]) -> list[str]:
    return sorted(STRATA_REQUIRED_KEYS - set(values))


def renamed(source: Mapping[str, Any], names: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The chart's `{{- if .x }} snake_name: {{ .x }}` pattern: set values only, under their dagster.yaml names."""
    return {key: source[camel] for camel, key in names if source.get(camel) not in (None, [], {})}


def image_name(image: Mapping[str, Any]) -> str:
    """The chart's image helper: `repository@digest` when a digest is set, else `repository:tag`."""
    if image.get("digest"):
        return f"{image['repository']}@{image['digest']}"
    return f"{image['repository']}:{image['tag']}"


def _postgres_db(values: Mapping[str, Any]) -> dict[str, Any]:
    pg = values["postgresql"]
    config = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams") or {},
    }
    if pg.get("postgresqlScheme"):
        config["scheme"] = pg["postgresqlScheme"]
    return config


def run_launcher_config(values: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """`run_launcher.config` as `dagsterYaml.runLauncher.k8s` renders it."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or namespace,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": values["global"]["serviceAccountName"],
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}]
        + [c["name"] for c in launcher.get("envConfigMaps") or []],
    }
    if values.get("imagePullSecrets"):
        config["image_pull_secrets"] = values["imagePullSecrets"]
    if launcher.get("image"):
        config["job_image"] = image_name(launcher["image"])
    if launcher.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in launcher["envSecrets"]]
    for key, rendered in (
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("securityContext", "security_context"),
        ("schedulerName", "scheduler_name"),
        ("failPodOnRunFailure", "fail_pod_on_run_failure"),
    ):
        if launcher.get(key) not in (None, [], {}):
            config[rendered] = launcher[key]
    if launcher.get("runK8sConfig"):
        config["run_k8s_config"] = {RUN_K8S_CONFIG_KEYS[k]: v for k, v in launcher["runK8sConfig"].items()}
    return config


def instance_config(values: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The dagster.yaml of the chart's instance ConfigMap, for the sections Strata sets."""
    storage = {"postgres_db": _postgres_db(values)}
    daemon = values["dagsterDaemon"]
    config: dict[str, Any] = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": storage},
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": run_launcher_config(values, namespace),
        },
        "telemetry": {"enabled": values.get("telemetry", {}).get("enabled", True)},
    }
    coordinator = daemon.get("runCoordinator") or {}
    if daemon.get("enabled") and coordinator.get("enabled"):
        queued = coordinator["config"]["queuedRunCoordinator"] or {}
        rendered = renamed(
            queued,
            (
                ("maxConcurrentRuns", "max_concurrent_runs"),
                ("tagConcurrencyLimits", "tag_concurrency_limits"),
                ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
                ("dequeueUseThreads", "dequeue_use_threads"),
                ("dequeueNumWorkers", "dequeue_num_workers"),
            ),
        )
        block = queued.get("blockOpConcurrencyLimitedRuns")
        if block:
            rendered["block_op_concurrency_limited_runs"] = {
                "enabled": block["enabled"],
                **renamed(block, (("opConcurrencySlotBuffer", "op_concurrency_slot_buffer"),)),
            }
        config["run_coordinator"] = {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            **({"config": rendered} if rendered else {}),
        }
    monitoring = daemon.get("runMonitoring") or {}
    if daemon.get("enabled") and monitoring.get("enabled"):
        config["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        }
        for camel, key in (
            ("cancelTimeoutSeconds", "cancel_timeout_seconds"),
            ("maxResumeRunAttempts", "max_resume_run_attempts"),
        ):
            if monitoring.get(camel) is not None:
                config["run_monitoring"][key] = monitoring[camel]
    retries = daemon.get("runRetries") or {}
    if daemon.get("enabled") and retries.get("enabled"):
        config["run_retries"] = {"enabled": True, **renamed(retries, (("maxRetries", "max_retries"),))}
    concurrency = values.get("concurrency") or {}
    if concurrency.get("enabled"):
        pools, runs = concurrency.get("pools") or {}, concurrency.get("runs") or {}
        rendered_concurrency: dict[str, Any] = {}
        if pools:
            rendered_concurrency["pools"] = renamed(
                pools,
                (
                    ("defaultLimit", "default_limit"),
                    ("granularity", "granularity"),
                    ("opGranularityRunBuffer", "op_granularity_run_buffer"),
                ),
            )
        if runs:
            rendered_concurrency["runs"] = renamed(
                runs,
                (("maxConcurrentRuns", "max_concurrent_runs"), ("tagConcurrencyLimits", "tag_concurrency_limits")),
            )
        config["concurrency"] = rendered_concurrency
    return config


def user_deployment_container_context(values: Mapping[str, Any], deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The container context a code server started by the chart reports for its runs
    (includeConfigInLaunchedRuns): its env, secrets and pull policy, in dagster-k8s's config shape.

    The chart passes the deployment's `env` through a ConfigMap; here it is given as env_vars, which
    puts the same variables into the run and step pods.
    """
    env = deployment.get("env") or []
    pairs = env.items() if isinstance(env, Mapping) else ((e["name"], e["value"]) for e in env)
    return {
        "k8s": {
            "env_vars": [f"{name}={value}" for name, value in pairs],
            "env_secrets": [s["name"] for s in deployment.get("envSecrets") or []],
            "image_pull_policy": deployment["image"].get("pullPolicy", "IfNotPresent"),
            "service_account_name": values["global"]["serviceAccountName"],
        }
    }


def write_offline_kubeconfig(path: Path) -> Path:
    """A kubeconfig naming a cluster nobody contacts (127.0.0.1:1): dagster-k8s loads it when it builds a
    launcher or step handler, and building Jobs needs no API call."""
    cluster = {"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}
    user = {"name": "u", "user": {"token": "unused"}}
    context = {"name": "c", "context": {"cluster": "c", "user": "u"}}
    config = {"apiVersion": "v1", "kind": "Config", "clusters": [cluster], "users": [user], "contexts": [context]}
    path.write_text(yaml.safe_dump({**config, "current-context": "c"}))
    return path
