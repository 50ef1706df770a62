"""The deployment policy (`make policy`): the repository's real files pass, and each kind of bad input
is refused with a message naming the file and the place."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.deployment_policy import (
    REPO_ROOT,
    check_dockerfile,
    check_executor,
    check_manifest,
    check_repository,
    check_values,
    image_problem,
    main,
    policy_files,
)

PROD_VALUES = REPO_ROOT / "helm" / "values-prod.yaml"
DIGEST = "sha256:" + "ab" * 32


def prod_values() -> dict:
    return yaml.safe_load(PROD_VALUES.read_text())


def proxy_deployment() -> dict:
    return next(yaml.safe_load_all((REPO_ROOT / "helm" / "extras" / "oauth2-proxy.yaml").read_text()))


def base_dockerfile() -> str:
    return (REPO_ROOT / "images" / "base" / "Dockerfile").read_text()


def line_of(text: str, needle: str, occurrence: int = 0) -> int:
    """The 1-based number of the line holding `needle` (its `occurrence`-th match)."""
    return [n for n, line in enumerate(text.splitlines(), start=1) if needle in line][occurrence]


def messages(violations) -> list[str]:
    return [str(v) for v in violations]


def test_the_repository_files_pass_and_all_are_checked():
    names = {str(p.relative_to(REPO_ROOT)) for p in policy_files()}
    assert {
        "images/base/Dockerfile",
        "images/strata/Dockerfile",
        "helm/values-dev.yaml",
        "helm/values-uat.yaml",
        "helm/values-prod.yaml",
        "helm/k8s-executor.yaml",
        "helm/extras/networkpolicies.yaml",
        "helm/extras/oauth2-proxy.yaml",
    } <= names
    assert check_repository() == []
    assert main([]) == 0


def test_the_cli_exits_1_and_names_the_violation(tmp_path: Path, capsys):
    bad = tmp_path / "values-bad.yaml"
    values = prod_values()
    values["dagsterDaemon"]["image"]["tag"] = "latest"
    bad.write_text(yaml.safe_dump(values))
    assert main([str(bad)]) == 1
    err = capsys.readouterr().err
    assert "values-bad.yaml: dagsterDaemon.image: image 'registry.example.com/strata/strata-base' uses tag" in err


# ---- images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("python:latest", "uses :latest"),
        ("python:latest@" + DIGEST, "uses :latest"),
        ("python:3.11-slim", "has no digest"),
        ("registry.example.com:5000/strata/strata", "has no digest"),
        ("python@sha256:abc", "malformed digest"),
        ("python:3.11@sha256:" + "AB" * 32, "malformed digest"),
    ],
)
def test_image_references_without_a_digest_are_refused(reference, problem):
    assert problem in image_problem(reference)


@given(
    registry=st.sampled_from(["", "docker.io/", "registry.example.com:5000/"]),
    path=st.from_regex(r"[a-z][a-z0-9]{0,8}(/[a-z][a-z0-9-]{0,8}){0,2}", fullmatch=True),
    tag=st.one_of(st.none(), st.from_regex(r"[0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True)),
    digest=st.binary(min_size=32, max_size=32),
)
def test_any_reference_with_a_digest_passes_and_the_same_without_it_is_refused(registry, path, tag, digest):
    name = registry + path + (f":{tag}" if tag else "")
    assert image_problem(f"{name}@sha256:{digest.hex()}") is None
    assert "has no digest" in image_problem(name)


def test_values_image_without_digest_or_with_latest_is_refused():
    values = prod_values()
    del values["dagster-user-deployments"]["deployments"][0]["image"]["digest"]
    values["dagsterWebserver"]["image"]["tag"] = "latest"
    assert messages(check_values(values, "v.yaml")) == [
        "v.yaml: dagsterWebserver.image: image 'registry.example.com/strata/strata-base' uses tag latest; "
        "pin it by digest",
        "v.yaml: dagster-user-deployments.deployments[0].image: image "
        "registry.example.com/strata/strata-ingestion:2026.11.0 has no digest; set image.digest: sha256:<digest>",
    ]


def test_manifest_image_by_tag_only_is_refused():
    deployment = proxy_deployment()
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "quay.io/oauth2-proxy/oauth2-proxy:v7.12.0"
    assert messages(check_manifest(deployment, "m.yaml")) == [
        "m.yaml: Deployment/oauth2-proxy-viewers: containers[oauth2-proxy]: image "
        "'quay.io/oauth2-proxy/oauth2-proxy:v7.12.0' has no digest; "
        "use repo@sha256:<digest> (a tag may stand beside it)"
    ]


def test_strata_image_must_name_the_image_the_code_location_runs():
    values = prod_values()
    deployment = values["dagster-user-deployments"]["deployments"][0]
    deployment["image"]["digest"] = DIGEST  # promoted the image but forgot STRATA_IMAGE
    assert messages(check_values(values, "v.yaml")) == [
        "v.yaml: dagster-user-deployments.deployments[0].env.STRATA_IMAGE: STRATA_IMAGE is "
        f"'registry.example.com/strata/strata-ingestion:2026.11.0@sha256:{'2c' * 32}' but the deployment runs "
        f"'registry.example.com/strata/strata-ingestion:2026.11.0@{DIGEST}'"
    ]


# ---- resource limits ------------------------------------------------------------------------------


def test_missing_limits_are_refused_everywhere():
    values = prod_values()
    del values["dagsterDaemon"]["resources"]["limits"]["memory"]
    del values["dagster-user-deployments"]["deployments"][0]["resources"]
    del values["runLauncher"]["config"]["k8sRunLauncher"]["resources"]["limits"]
    assert messages(check_values(values, "v.yaml")) == [
        "v.yaml: dagsterDaemon.resources: no resource limit for memory",
        "v.yaml: dagster-user-deployments.deployments[0](ingestion).resources: no resource limit for cpu and memory",
        "v.yaml: runLauncher.config.k8sRunLauncher.resources: no resource limit for cpu and memory",
    ]
    deployment = proxy_deployment()
    del deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    assert messages(check_manifest(deployment, "m.yaml")) == [
        "m.yaml: Deployment/oauth2-proxy-viewers: containers[oauth2-proxy]: no resource limit for cpu"
    ]
    executor = yaml.safe_load((REPO_ROOT / "helm" / "k8s-executor.yaml").read_text())
    executor["per_step_k8s_config"]["dbt_models"] = {"container_config": {"resources": {"requests": {"cpu": "1"}}}}
    assert messages(check_executor(executor, "e.yaml")) == [
        "e.yaml: per_step_k8s_config.dbt_models.container_config.resources: no resource limit for cpu and memory"
    ]


# ---- root ----------------------------------------------------------------------------------------


def test_containers_that_may_run_as_root_are_refused():
    values = prod_values()
    values["dagsterWebserver"]["securityContext"]["runAsUser"] = 0
    del values["dagsterDaemon"]["podSecurityContext"]["runAsNonRoot"]
    values["runLauncher"]["config"]["k8sRunLauncher"]["securityContext"]["runAsNonRoot"] = False
    assert messages(check_values(values, "v.yaml")) == [
        "v.yaml: dagsterWebserver.securityContext: runs as root (runAsUser: 0)",
        "v.yaml: dagsterDaemon.securityContext: may run as root: set securityContext.runAsNonRoot: true",
        "v.yaml: runLauncher.config.k8sRunLauncher.securityContext: may run as root (runAsNonRoot: false)",
    ]
    deployment = proxy_deployment()
    del deployment["spec"]["template"]["spec"]["securityContext"]
    assert messages(check_manifest(deployment, "m.yaml")) == [
        "m.yaml: Deployment/oauth2-proxy-viewers: containers[oauth2-proxy]: may run as root: "
        "set securityContext.runAsNonRoot: true"
    ]


def test_dockerfile_without_non_root_user_is_refused():
    text = base_dockerfile()
    assert check_dockerfile(text, "D") == []
    no_user = text.replace("USER 10001:10001", "")
    assert messages(check_dockerfile(no_user, "D")) == ["D: final stage: no USER: the image would run as root"]
    root = text.replace("USER 10001:10001", "USER root")
    assert messages(check_dockerfile(root, "D")) == ["D: final stage: USER root: the image would run as root"]
    # A USER in an earlier stage does not carry over to the final one.
    earlier = "FROM python:3.11@" + DIGEST + " AS build\nUSER 1000\nFROM python:3.11@" + DIGEST + "\n"
    assert messages(check_dockerfile(earlier, "D")) == ["D: final stage: no USER: the image would run as root"]


# ---- Dockerfile supply chain --------------------------------------------------------------------


def test_dockerfile_unpinned_base_remote_add_and_unpinned_installs_are_refused():
    text = base_dockerfile()
    unpinned = text.replace("python:3.11-slim-bookworm@sha256:" + "0b" * 32, "python:3.11-slim-bookworm")
    problem = (
        "FROM image 'docker.io/library/python:3.11-slim-bookworm' has no digest; "
        "use repo@sha256:<digest> (a tag may stand beside it)"
    )
    assert messages(check_dockerfile(unpinned, "D")) == [
        f"D: line {line_of(text, 'FROM ${PYTHON_IMAGE}', 0)}: {problem}",  # the build stage
        f"D: line {line_of(text, 'FROM ${PYTHON_IMAGE}', 1)}: {problem}",  # the final stage
    ]
    unfrozen = text.replace("uv sync --frozen --no-dev", "uv sync --no-dev")
    assert messages(check_dockerfile(unfrozen, "D")) == [
        f"D: line {line_of(text, 'RUN uv sync')}: uv sync without --frozen: the lock file would be re-resolved"
    ]
    end = len(text.splitlines())
    extra = text + "RUN pip install requests\nADD https://example.com/tool.tar.gz /opt/\n"
    assert messages(check_dockerfile(extra, "D"))[-2:] == [
        f"D: line {end + 1}: pip install without --require-hashes (install from `uv export --frozen` with hashes)",
        f"D: line {end + 2}: ADD of a remote URL; download in a pinned, checked step",
    ]


# ---- literal secrets ----------------------------------------------------------------------------


def test_literal_secrets_are_refused():
    values = prod_values()
    values["postgresql"]["postgresqlPassword"] = "hunter2-prod"
    deployment = values["dagster-user-deployments"]["deployments"][0]
    deployment["env"].append({"name": "STRATA_TRINO_PASSWORD", "value": "s3cr3t-value"})
    deployment["env"].append({"name": "STRATA_SOURCE_URL", "value": "postgresql://strata:pw123@db:5432/oltp"})
    found = messages(check_values(values, "v.yaml"))
    assert found == [
        "v.yaml: postgresql.postgresqlPassword: literal secret in postgresqlPassword; "
        "reference an existing Secret or Vault instead",
        "v.yaml: dagster-user-deployments.deployments[0].env[17].value: literal value for secret variable "
        "STRATA_TRINO_PASSWORD; use valueFrom/envSecrets or Vault",
        "v.yaml: dagster-user-deployments.deployments[0].env[18].value: credentials inside a URL; "
        "keep the URL in a Secret",
    ]
    # Pointers to secrets are not secrets.
    pointers = prod_values()
    pointers["dagster-user-deployments"]["deployments"][0]["env"].append(
        {"name": "STRATA_TRINO_PASSWORD_SECRET", "value": "trino/password"}
    )
    assert check_values(pointers, "v.yaml") == []


def test_secrets_in_manifests_and_dockerfiles_are_refused():
    deployment = proxy_deployment()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["args"].append("--client-secret=abcdef123456")
    last_arg = len(container["args"]) - 1
    container["env"][1] = {"name": "OAUTH2_PROXY_COOKIE_SECRET", "value": "0123456789abcdef"}
    assert messages(check_manifest(copy.deepcopy(deployment), "m.yaml")) == [
        f"m.yaml: Deployment/oauth2-proxy-viewers: spec.template.spec.containers[0].args[{last_arg}]: "
        "literal secret in argument --client-secret; pass it from a Secret (env valueFrom)",
        "m.yaml: Deployment/oauth2-proxy-viewers: spec.template.spec.containers[0].env[1].value: literal value for "
        "secret variable OAUTH2_PROXY_COOKIE_SECRET; use valueFrom/envSecrets or Vault",
    ]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}}
    assert messages(check_manifest(secret, "m.yaml")) == [
        "m.yaml: Secret/x: a Secret object in the repository; create it from Vault in the cluster"
    ]
    end = len(base_dockerfile().splitlines())
    dockerfile = base_dockerfile() + "ENV AWS_SECRET_ACCESS_KEY=abc123\nCOPY .env /app/.env\n"
    assert messages(check_dockerfile(dockerfile, "D"))[-2:] == [
        f"D: line {end + 1}: ENV AWS_SECRET_ACCESS_KEY holds a literal secret",
        f"D: line {end + 2}: COPY of a secret file",
    ]
