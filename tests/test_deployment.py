"""The production deployment, proven offline with the real libraries (no Docker, Kubernetes or Helm here):
the Helm values against the chart's keys and across environments, the instance they render against
Dagster's own schema, the run launcher and k8s_job_executor config against dagster-k8s's schema, the
Job manifests dagster-k8s builds from them against the Kubernetes API schema (kubernetes-validate,
strict), the Dockerfiles, the SBOM, and the image identity in materializations."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tomllib
from pathlib import Path

import dagster as dg
import pytest
import yaml

from jobs.locations import CODE_LOCATIONS
from tests.deployment_policy import REPO_ROOT, chart_image_reference, dockerfile_instructions, substitute
from tests.helm_chart import (
    CHART_FULLNAME,
    ENVIRONMENTS,
    HELM_DIR,
    image_name,
    instance_config,
    load_executor_config,
    load_values,
    missing_keys,
    unknown_keys,
    user_deployment_container_context,
    write_offline_kubeconfig,
)

KUBERNETES_VERSION = "1.31"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
RUN_ID = "5f0c8a52-3d1e-4c1b-9f7a-0d6e2b9c4a11"


def namespace_of(env: str) -> str:
    return f"strata-{env}"


def deployment_of(values: dict, location: str) -> dict:
    """The chart's user deployment that serves `location`."""
    (deployment,) = [d for d in values["dagster-user-deployments"]["deployments"] if d["name"] == location]
    return deployment


# ---- values: keys, environments -------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_values_use_only_chart_keys_and_miss_none_strata_needs(env):
    values = load_values(env)
    assert unknown_keys(values) == []
    assert missing_keys(values) == []


def test_an_unknown_or_missing_key_is_reported():
    values = load_values("prod")
    values["dagsterWebserverr"] = values.pop("dagsterWebserver")
    values["dagsterDaemon"]["runMonitoring"]["freeSlotsAfterRunEnd"] = 60
    values["dagster-user-deployments"]["deployments"][0]["includeConfigInLaunchedRun"] = {"enabled": True}
    del values["concurrency"]
    assert unknown_keys(values) == [
        "dagsterWebserverr",
        "dagsterDaemon.runMonitoring.freeSlotsAfterRunEnd",
        "dagster-user-deployments.deployments[0].includeConfigInLaunchedRun",
    ]
    assert missing_keys(values) == ["concurrency", "dagsterWebserver"]


ENVIRONMENT_SPECIFIC = re.compile(r"\b(dev|uat|prod)\b")
AWS_ACCOUNT = re.compile(r"\b\d{12}\b")


def normalized(node, path=()):
    """The values with what may differ between environments replaced by placeholders: image digests and
    tags, sizes (resources, replicas), and names that contain the environment or its AWS account."""
    if isinstance(node, dict):
        return {
            key: "<size>" if key in ("resources", "replicaCount") else normalized(value, (*path, key))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [normalized(item, path) for item in node]
    if path and path[-1] in ("digest", "tag"):
        return f"<{path[-1]}>"
    if isinstance(node, str):
        node = DIGEST.sub("<digest>", node)
        node = re.sub(r":\d{4}\.\d+\.\d+@", ":<tag>@", node)
        return AWS_ACCOUNT.sub("<account>", ENVIRONMENT_SPECIFIC.sub("<env>", node))
    return node


def test_environments_have_the_same_settings_apart_from_digests_sizes_and_names():
    documents = {env: load_values(env) for env in ENVIRONMENTS}
    reference = normalized(documents["prod"])
    for env in ("dev", "uat"):
        assert normalized(documents[env]) == reference, env
    # ... and they do differ where they should: each environment runs its own build of each location.
    digests = {
        (env, deployment["name"]): deployment["image"]["digest"]
        for env, values in documents.items()
        for deployment in values["dagster-user-deployments"]["deployments"]
    }
    assert len(set(digests.values())) == len(ENVIRONMENTS) * len(CODE_LOCATIONS)
    limits = {env: documents[env]["dagsterWebserver"]["resources"]["limits"]["memory"] for env in ENVIRONMENTS}
    assert limits == {"dev": "1Gi", "uat": "2Gi", "prod": "2Gi"}


def test_a_setting_that_drifts_between_environments_is_caught():
    uat = load_values("uat")
    uat["concurrency"]["runs"]["maxConcurrentRuns"] = 8
    assert normalized(uat) != normalized(load_values("prod"))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_image_is_pinned_and_strata_image_names_the_running_one(env):
    values = load_values(env)
    for deployment in values["dagster-user-deployments"]["deployments"]:
        strata_image = {e["name"]: e["value"] for e in deployment["env"]}["STRATA_IMAGE"]
        assert strata_image == chart_image_reference(deployment["image"])
        assert strata_image.endswith("@" + deployment["image"]["digest"])
        # What the chart renders for the pods: repository@digest (the tag does not decide what is pulled).
        digest = deployment["image"]["digest"]
        assert image_name(deployment["image"]) == f"registry.example.com/strata/strata-{deployment['name']}@{digest}"
    for component in ("dagsterWebserver", "dagsterDaemon", "busybox"):
        assert DIGEST.fullmatch(values[component]["image"]["digest"]), component


# ---- code locations: jobs/locations.py, workspace.yaml and the user deployments name the same three ---


def served_by_values(values: dict) -> dict[str, str | None]:
    """Location name -> the file its user deployment's code server loads."""
    served = {}
    for deployment in values["dagster-user-deployments"]["deployments"]:
        args = deployment.get("dagsterApiGrpcArgs", [])
        served[deployment["name"]] = args[args.index("--python-file") + 1] if "--python-file" in args else None
    return served


def served_by_workspace(workspace: dict) -> dict[str, str | None]:
    """Location name -> the file workspace.yaml loads for it (relative to the repository)."""
    return {
        entry["python_file"]["location_name"]: entry["python_file"]["relative_path"] for entry in workspace["load_from"]
    }


def mismatches(expected: dict[str, str], served: dict[str, str | None]) -> list[str]:
    return [
        f"{name}: expected {expected.get(name)}, served {served.get(name)}"
        for name in sorted(expected.keys() | served.keys())
        if expected.get(name) != served.get(name)
    ]


IN_IMAGE = {location.name: f"/app/{location.module_path}" for location in CODE_LOCATIONS}
IN_REPOSITORY = {location.name: location.module_path for location in CODE_LOCATIONS}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_values_deploy_every_code_location_and_nothing_else(env):
    assert mismatches(IN_IMAGE, served_by_values(load_values(env))) == []
    assert all((REPO_ROOT / path).is_file() for path in IN_REPOSITORY.values())


def test_workspace_yaml_loads_every_code_location_and_nothing_else():
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    assert mismatches(IN_REPOSITORY, served_by_workspace(workspace)) == []
    assert all(entry["python_file"]["working_directory"] == "." for entry in workspace["load_from"])


def test_a_code_location_missing_or_misplaced_is_reported():
    values = load_values("prod")
    deployments = values["dagster-user-deployments"]["deployments"]
    values["dagster-user-deployments"]["deployments"] = [d for d in deployments if d["name"] != "analytics"]
    assert mismatches(IN_IMAGE, served_by_values(values)) == [
        "analytics: expected /app/locations/analytics.py, served None"
    ]
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    workspace["load_from"] = [e for e in workspace["load_from"] if e["python_file"]["location_name"] != "transforms"]
    workspace["load_from"][0]["python_file"]["relative_path"] = "definitions.py"
    assert mismatches(IN_REPOSITORY, served_by_workspace(workspace)) == [
        "ingestion: expected locations/ingestion.py, served definitions.py",
        "transforms: expected locations/transforms.py, served None",
    ]


# ---- the instance the chart renders, against Dagster's schema -------------------------------------


def validated_instance(config: dict, tmp_path: Path) -> dict:
    """Dagster's own validation of a dagster.yaml (schema, concurrency rules), then each configurable
    class's config against that class's schema (dagster_postgres storages, K8sRunLauncher, queue)."""
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    validated, _ = dagster_instance_config(str(tmp_path))
    for section in ("run_storage", "event_log_storage", "schedule_storage", "run_launcher", "run_coordinator"):
        klass = class_from_code_pointer(config[section]["module"], config[section]["class"])
        result = validate_config(klass.config_type(), config[section].get("config", {}))
        assert result.success, (section, [e.message for e in result.errors])
    return validated


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rendered_instance_is_valid_and_keeps_dagster_yaml_limits(env, tmp_path):
    config = instance_config(load_values(env), namespace_of(env))
    validated = validated_instance(config, tmp_path)
    # The same run queue and pool limits as the local instance (dagster.yaml).
    local = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert validated["concurrency"] == local["concurrency"]
    assert validated["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert validated["run_monitoring"] == {
        "enabled": True,
        "start_timeout_seconds": 300,
        "cancel_timeout_seconds": 300,
        "max_resume_run_attempts": 0,
        "poll_interval_seconds": 60,
        "free_slots_after_run_end_seconds": 300,
    }
    assert validated["run_storage"]["config"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}


def test_queue_limits_beside_pools_are_refused_by_dagster(tmp_path):
    """Why the values put the run limits under `concurrency.runs`: once pools are configured, Dagster
    refuses max_concurrent_runs on the QueuedRunCoordinator (the chart would render it unchecked)."""
    values = load_values("prod")
    values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] = 4
    values["concurrency"]["runs"] = {}
    with pytest.raises(dg.DagsterInvalidConfigError, match=r"max_concurrent_runs.*incompatible"):
        validated_instance(instance_config(values, "strata-prod"), tmp_path)


# ---- run launcher and executor: dagster-k8s's schema, then the Jobs it builds ---------------------


@pytest.fixture
def chart_environment(monkeypatch, tmp_path):
    """The variables the chart sets on the daemon (the launcher's config reads them), and a kubeconfig
    that names a cluster nobody contacts: building the launcher loads it, building Jobs needs no API."""
    monkeypatch.setenv("DAGSTER_HOME", "/opt/dagster/dagster_home")
    monkeypatch.setenv("DAGSTER_K8S_INSTANCE_CONFIG_MAP", f"{CHART_FULLNAME}-instance")
    monkeypatch.setenv("DAGSTER_K8S_PG_PASSWORD_SECRET", "strata-dagster-postgresql")
    monkeypatch.setenv("DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP", f"{CHART_FULLNAME}-pipeline-env")
    return write_offline_kubeconfig(tmp_path / "kubeconfig")


def launcher_for(env: str, kubeconfig: Path):
    from dagster._config import process_config, validate_config
    from dagster_k8s import K8sRunLauncher

    config = instance_config(load_values(env), namespace_of(env))["run_launcher"]["config"]
    checked = validate_config(K8sRunLauncher.config_type(), config)
    assert checked.success, [e.message for e in checked.errors]
    processed = process_config(K8sRunLauncher.config_type(), config)
    assert processed.success, [e.message for e in processed.errors]
    return K8sRunLauncher(**{**processed.value, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)})


def run_from_code_location(env: str, job_name: str, location: str):
    """A run as the code server of `location` started by the chart creates it: its origin carries the
    deployment's image (repository@digest) and container context."""
    from dagster._core.code_pointer import FileCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.storage.dagster_run import DagsterRun

    values = load_values(env)
    deployment = deployment_of(values, location)
    origin = RepositoryPythonOrigin(
        executable_path="/opt/venv/bin/python",
        code_pointer=FileCodePointer(f"/app/locations/{location}.py", "defs", "/app"),
        container_image=image_name(deployment["image"]),
        entry_point=["dagster"],
        container_context=user_deployment_container_context(values, deployment),
    )
    return DagsterRun(job_name=job_name, run_id=RUN_ID, job_code_origin=JobPythonOrigin(job_name, origin))


def validated_manifest(job) -> dict:
    import kubernetes
    import kubernetes_validate

    manifest = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    return manifest


def pod_env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_run_worker_job_validates_against_the_kubernetes_schema(env, chart_environment):
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_job_name_from_run_id

    launcher = launcher_for(env, chart_environment)
    run = run_from_code_location(env, "build_daily", "transforms")
    # The steps K8sRunLauncher.launch_run takes, without the API call at the end.
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(run.job_code_origin.repository_origin.container_image, launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name=get_job_name_from_run_id(RUN_ID),
        pod_name=get_job_name_from_run_id(RUN_ID),
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/run-id": RUN_ID},
    )
    manifest = validated_manifest(job)

    values = load_values(env)
    deployment = deployment_of(values, "transforms")
    pod = manifest["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == f"registry.example.com/strata/strata-transforms@{deployment['image']['digest']}"
    assert pod_env(container)["STRATA_IMAGE"] == chart_image_reference(deployment["image"])
    assert pod_env(container)["STRATA_ENV"] == "prod"
    assert container["resources"] == values["runLauncher"]["config"]["k8sRunLauncher"]["resources"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert {"secretRef": {"name": f"strata-{env}-connections"}} in container["envFrom"]
    assert pod["spec"]["serviceAccountName"] == "strata-dagster"
    # The NetworkPolicy `run-and-step-pods` selects the pod by this label.
    assert pod["metadata"]["labels"]["strata.io/component"] == "run"
    assert manifest["spec"]["activeDeadlineSeconds"] == 86400


def step_manifest(env: str, launcher, op_name: str, executor_config: dict) -> dict:
    """A step Job as K8sStepHandler.launch_step builds it (dagster_k8s/executor.py): the run's context
    from the launcher and code location, then the executor's step config, then the per-op override."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_k8s_job_name

    run = run_from_code_location(env, "refresh_unpartitioned", "transforms")
    executor_context = K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_config.get("step_k8s_config", {}))
    )
    per_op = UserDefinedDagsterK8sConfig.from_dict(executor_config["per_step_k8s_config"].get(op_name, {}))
    context = (
        K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
        .merge(executor_context)
        .merge(K8sContainerContext(run_k8s_config=per_op))
    )
    job_config = context.get_k8s_job_config(None, launcher)
    job_config = job_config.with_image(run.job_code_origin.repository_origin.container_image)
    name = f"dagster-step-{get_k8s_job_name(RUN_ID, op_name)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=name,
        pod_name=name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/op": op_name, "dagster/run-id": RUN_ID},
        env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": op_name}],
    )
    return validated_manifest(job)


def test_executor_config_is_valid_for_the_k8s_job_executor():
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor

    config = load_executor_config()
    result = validate_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, [e.message for e in result.errors]

    @dg.op
    def dbt_models(): ...

    @dg.job(executor_def=k8s_job_executor)
    def one_step():
        dbt_models()

    assert dg.validate_run_config(one_step, {"execution": {"config": config}})
    # The schema checks the executor's own keys; what is inside container_config etc. is Kubernetes's,
    # checked when dagster-k8s builds the Job (test_a_manifest_with_an_unknown_field_is_refused).
    broken = copy.deepcopy(config)
    broken["per_step_k8s_config"]["dbt_models"]["container_confg"] = {}
    broken["max_concurrent"] = "four"
    errors = [e.message for e in validate_config(k8s_job_executor.config_schema.config_type, broken).errors]
    assert any('Received unexpected config entry "container_confg"' in e for e in errors), errors
    assert any('Value "four"' in e and "max_concurrent" in e for e in errors), errors


@pytest.mark.parametrize(
    ("op_name", "limits"),
    [
        ("dbt_models", {"cpu": "2", "memory": "4Gi"}),
        ("bronze__telemetry", {"cpu": "2", "memory": "3Gi"}),
        ("gx_bronze_bookings", {"cpu": "1", "memory": "1Gi"}),  # a check: the default step size
    ],
)
def test_step_jobs_are_sized_by_kind_and_validate(op_name, limits, chart_environment):
    launcher = launcher_for("prod", chart_environment)
    manifest = step_manifest("prod", launcher, op_name, load_executor_config())
    pod = manifest["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"] == limits
    assert container["securityContext"]["runAsNonRoot"] is True
    assert pod_env(container)["STRATA_IMAGE"].endswith(DIGEST.search(container["image"]).group(0))
    assert pod["metadata"]["labels"]["strata.io/component"] == "run"
    assert pod["metadata"]["labels"]["dagster/op"] == op_name


def test_a_manifest_with_an_unknown_field_is_refused(chart_environment):
    import kubernetes_validate

    launcher = launcher_for("prod", chart_environment)
    config = load_executor_config()
    config["per_step_k8s_config"]["dbt_models"]["pod_spec_config"] = {"node_selectorr": {"pool": "dbt"}}
    with pytest.raises(Exception, match=r"node_selectorr|nodeSelectorr"):
        step_manifest("prod", launcher, "dbt_models", config)
    manifest = step_manifest("prod", launcher, "dbt_models", load_executor_config())
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limitz"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="limitz"):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_executor_sizes_name_real_ops_and_cover_every_non_check_op(settings):
    from definitions import build_definitions

    defs = build_definitions(settings)
    ops = {node.definition.name for job in defs.resolve_all_job_defs() for node in job.nodes}
    check_ops = {checks.node_def.name for checks in defs.asset_checks or []}  # sized by the default
    sized = set(load_executor_config()["per_step_k8s_config"])
    assert sized - ops == set(), "per_step_k8s_config names ops that do not exist (dagster-k8s would ignore them)"
    assert ops - check_ops == sized


# ---- extras: NetworkPolicies and the auth proxy ---------------------------------------------------


def test_extras_validate_and_only_the_operators_reach_the_writable_webserver():
    import kubernetes_validate

    documents = {}
    for path in sorted((HELM_DIR / "extras").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            documents[(document["kind"], document["metadata"]["name"])] = document

    def proxy_args(name):
        return documents[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]["args"]

    operators, viewers = proxy_args("oauth2-proxy-operators"), proxy_args("oauth2-proxy-viewers")
    assert f"--upstream=http://{CHART_FULLNAME}-webserver:3000" in operators
    assert [a for a in operators if a.startswith("--allowed-group")] == ["--allowed-group=/dagster-operators"]
    assert f"--upstream=http://{CHART_FULLNAME}-webserver-read-only:3000" in viewers
    # Nothing but the auth proxies may open a connection to a webserver pod.
    webserver = documents[("NetworkPolicy", "webserver")]["spec"]
    assert webserver["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"strata.io/component": "auth-proxy"}}}],
            "ports": [{"protocol": "TCP", "port": 3000}],
        }
    ]
    assert documents[("NetworkPolicy", "default-deny-all")]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }
    # Every component the values label has a policy selecting it.
    labels = {
        values_labels["strata.io/component"]
        for values_labels in (
            load_values("prod")["dagsterWebserver"]["labels"],
            load_values("prod")["dagsterDaemon"]["labels"],
            load_values("prod")["dagster-user-deployments"]["deployments"][0]["labels"],
            load_values("prod")["runLauncher"]["config"]["k8sRunLauncher"]["labels"],
        )
    }
    selected = {
        d["spec"]["podSelector"].get("matchLabels", {}).get("strata.io/component")
        for (kind, _), d in documents.items()
        if kind == "NetworkPolicy"
    }
    assert labels <= selected


# ---- Dockerfiles ----------------------------------------------------------------------------------


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments) with ARG defaults substituted."""
    variables: dict[str, str] = {}
    result: list[list[tuple[str, str]]] = []
    for _, keyword, arguments in dockerfile_instructions(path.read_text()):
        if keyword == "ARG" and "=" in arguments and not result:
            name, _, value = arguments.partition("=")
            variables[name] = value
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, substitute(arguments, variables)))
    return result


def test_base_image_is_pinned_locked_and_non_root():
    build, final = stages(REPO_ROOT / "images" / "base" / "Dockerfile")[1:]
    python_from = dict(final)["FROM"]
    assert re.fullmatch(r"docker\.io/library/python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", python_from)
    assert dict(build)["FROM"].startswith(python_from)
    runs = [args for keyword, args in build if keyword == "RUN"]
    assert runs == ["uv sync --frozen --no-dev --no-install-project --no-editable"]
    assert ("COPY", "pyproject.toml uv.lock ./") in build
    # The final stage installs CA certificates only (no compiler, no build tools) and copies the venv.
    final_runs = " ".join(args for keyword, args in final if keyword == "RUN")
    installed = re.findall(r"apt-get install (--\S+ )*(\S+)", final_runs)
    assert installed == [("--no-install-recommends ", "ca-certificates")]
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|uv sync|pip install)\b", final_runs)
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    assert [args for keyword, args in final if keyword == "USER"] == ["10001:10001"]


def test_code_image_copies_code_only_on_the_base_by_digest():
    (stage,) = stages(REPO_ROOT / "images" / "strata" / "Dockerfile")
    assert re.fullmatch(r"\S+/strata-base:\S+@sha256:[0-9a-f]{64}", dict(stage)["FROM"])
    copies = [args.split()[:-1] for keyword, args in stage if keyword == "COPY"]
    sources = {word for words in copies for word in words if not word.startswith("--")}
    assert sources == {
        "definitions.py",
        "locations/",
        "workspace.yaml",
        "dagster.yaml",
        "pyproject.toml",
        "assets/",
        "audit/",
        "demo/",
        "jobs/",
        "resources/",
        "sensors/",
        "expectations/",
        "dbt/",
        "helm/k8s-executor.yaml",
    }
    runs = [args for keyword, args in stage if keyword == "RUN"]
    assert runs == ["cd /app/dbt && dbt parse --quiet --profiles-dir . --target prod"]  # nothing installed
    # One file for the three location images: the build argument picks the entry file the image serves.
    assert ("ARG", "LOCATION=ingestion") in stage
    assert "STRATA_LOCATION=${LOCATION}" in dict(stage)["ENV"]
    assert "--python-file /app/locations/${STRATA_LOCATION}.py" in dict(stage)["CMD"]
    assert [args for keyword, args in stage if keyword == "USER"] == ["10001:10001"]
    # The build context is an allow-list: everything is ignored first, and secrets stay ignored.
    ignored = [line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert ignored[0] == "*"
    assert {".env", ".env.*"} <= set(ignored)


# ---- SBOM ------------------------------------------------------------------------------------------


def test_make_sbom_lists_the_locked_runtime_packages(tmp_path):
    sbom = tmp_path / "strata-base.cdx.json"
    subprocess.run(["make", "-s", "sbom", f"SBOM={sbom}"], cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
    document = json.loads(sbom.read_text())
    assert document["bomFormat"] == "CycloneDX"
    components = {c["name"].lower(): c for c in document["components"]}
    lock = {p["name"]: p["version"] for p in tomllib.loads((REPO_ROOT / "uv.lock").read_text())["package"]}
    for name in ("dagster", "dagster-k8s", "dagster-postgres", "pyiceberg", "dbt-core", "duckdb"):
        assert components[name]["version"] == lock[name], name
        assert components[name]["purl"] == f"pkg:pypi/{name}@{lock[name]}"
    # Only what the base image installs: no dev tools, not the project itself.
    assert not {"pytest", "moto", "ruff", "hypothesis", "cyclonedx-bom", "strata"} & set(components)
    assert not list(tmp_path.glob("*.requirements.txt"))  # the intermediate export is removed


# ---- the image identity reaches the materializations ----------------------------------------------


def test_materialization_carries_strata_image_from_the_environment(tmp_path, monkeypatch):
    from audit.metadata import code_identity
    from audit.record import build_audit_record
    from tests.test_bronze_oltp import execute, materialize, metadata_of, row, source_urls

    image = chart_image_reference(load_values("prod")["dagster-user-deployments"]["deployments"][0]["image"])
    monkeypatch.setenv("STRATA_IMAGE", image)
    code_identity.cache_clear()  # the identity is read once per process, as in a pod
    try:
        url = source_urls(tmp_path, None)
        execute(url, row(1, "Bellecour", "2026-10-01 08:00:00.000000"))
        instance = dg.DagsterInstance.ephemeral()
        result = materialize(url, tmp_path, instance)
        assert metadata_of(result)["strata/image"].value == image
        assert build_audit_record(instance, result.run_id).image == image
    finally:
        code_identity.cache_clear()


# ---- the PostgreSQL driver and the prod settings --------------------------------------------------


def test_the_instance_names_the_postgres_driver_the_image_has():
    """SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3; the image has only psycopg2 (from
    dagster-postgres), so the values name the driver and the rendered storage URL must keep it."""
    from dagster_postgres.utils import get_conn_string
    from sqlalchemy.engine import make_url

    database = instance_config(load_values("prod"), "strata-prod")["run_storage"]["config"]["postgres_db"]
    url = get_conn_string(
        username=database["username"],
        hostname=database["hostname"],
        db_name=database["db_name"],
        port=str(database["port"]),
        params=database["params"],
        scheme=database["scheme"],
    )
    assert url == "postgresql+psycopg2://dagster@dagster-pg.prod.db.internal:5432/dagster?sslmode=verify-full"
    assert make_url(url).get_dialect().driver == "psycopg2"
    assert make_url("postgresql://dagster@host/dagster").get_dialect().driver == "psycopg"
    exported = subprocess.run(
        ["uv", "export", "--frozen", "--no-dev", "--no-emit-project", "--format", "requirements-txt"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    runtime = {line.split("==")[0] for line in exported.splitlines() if "==" in line}
    assert "psycopg2-binary" in runtime
    assert "psycopg" not in runtime


def test_prod_settings_choose_the_engine_and_the_dbt_target():
    from resources.settings import load_settings

    prod = load_settings({"STRATA_ENV": "prod"})
    assert (prod.warehouse_engine, prod.dbt_target) == ("trino", "prod")
    shaped = load_settings(
        {"STRATA_ENV": "prod", "STRATA_WAREHOUSE_ENGINE": "duckdb", "STRATA_ICEBERG_WAREHOUSE": "s3://b/warehouse"}
    )
    assert (shaped.warehouse_engine, shaped.dbt_target) == ("duckdb", "local_s3")
    assert load_settings({}).dbt_target == "local"
    with pytest.raises(ValueError, match="STRATA_WAREHOUSE_ENGINE must be 'duckdb' or 'trino', got 'spark'"):
        load_settings({"STRATA_WAREHOUSE_ENGINE": "spark"})
