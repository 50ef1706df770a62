"""The deployment policy (`make policy`, run in CI before the tests): what must never reach a cluster.

It reads the Dockerfiles under images/, the Helm values (helm/values-*.yaml), the k8s_job_executor's
step sizes (helm/k8s-executor.yaml) and the plain manifests under helm/extras/, and refuses:
- an image by `:latest`, or by a tag without a digest (`repo@sha256:<64 hex>`, a tag may stand beside it);
- a container without CPU and memory limits;
- a container that may run as root (no `runAsNonRoot: true`, `runAsUser: 0`, a Dockerfile without a
  non-root USER in its final stage);
- a literal secret (a password, token or key as a value, credentials inside a URL, a Secret object);
- in a Dockerfile, an unpinned install (pip without `--require-hashes`, `uv sync` without `--frozen`)
  or an `ADD` of a remote URL;
- a code location whose STRATA_IMAGE is not the image it runs (the audit trail would lie).

Run it with `python -m tests.deployment_policy [files...]`; it prints one line per violation, naming
the file and the place in it, and exits 1 if there is any.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Names of settings that hold secrets. Some only *point* at one, which is fine: `...Name`/`...Ref` keys
# (a Kubernetes Secret's name), `..._BACKEND`, and Strata's `STRATA_..._SECRET` settings, which hold a
# secret's name in the secrets backend (e.g. STRATA_TRINO_PASSWORD_SECRET=trino/password).
SECRET_KEY = re.compile(r"password|passwd|secret|token|api[_-]?key|private[_-]?key|credential", re.IGNORECASE)
SECRET_NAME_KEY = re.compile(r"(name|names|ref|keyref|secrets|backend)$|^STRATA_\w+_SECRET$", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
# Chart components that run containers, as paths into the values; user deployments are added per entry.
VALUES_COMPONENTS = {
    "dagsterWebserver": ("dagsterWebserver",),
    "dagsterDaemon": ("dagsterDaemon",),
}
RUN_LAUNCHER = ("runLauncher", "config", "k8sRunLauncher")


@dataclass(frozen=True)
class Violation:
    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}"


# ---- image references ------------------------------------------------------------------------------


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of `repo[:tag][@digest]`; a registry port is not a tag."""
    name, _, digest = reference.partition("@")
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon + 1 :] or None, digest or None
    return name, None, digest or None


def image_problem(reference: str) -> str | None:
    """Why `reference` may not be deployed, or None if it is pinned by digest."""
    _, tag, digest = split_image(reference.strip())
    if tag == "latest":
        return f"image {reference!r} uses :latest; pin it by digest (repo@sha256:...)"
    if digest is None:
        return f"image {reference!r} has no digest; use repo@sha256:<digest> (a tag may stand beside it)"
    if not DIGEST.match(digest):
        return f"image {reference!r} has a malformed digest; expected sha256: and 64 lowercase hex digits"
    return None


def chart_image_problem(image: Mapping[str, Any]) -> str | None:
    """The chart's `image: {repository, tag, digest}`: the digest wins over the tag when rendered."""
    repository = str(image.get("repository", ""))
    tag = image.get("tag")
    digest = image.get("digest")
    if str(tag) == "latest":
        return f"image {repository!r} uses tag latest; pin it by digest"
    if not digest:
        return f"image {repository}:{tag} has no digest; set image.digest: sha256:<digest>"
    if not DIGEST.match(str(digest)):
        return f"image {repository} has a malformed digest {digest!r}"
    return None


def chart_image_reference(image: Mapping[str, Any]) -> str:
    """`repo:tag@digest` (or `repo@digest`): how Strata names the running image in its audit trail."""
    tag = image.get("tag")
    return f"{image['repository']}{f':{tag}' if tag else ''}@{image['digest']}"


# ---- generic checks on containers and secrets -----------------------------------------------------


def limits_problem(resources: Mapping[str, Any] | None) -> str | None:
    limits = (resources or {}).get("limits") or {}
    missing = [name for name in ("cpu", "memory") if not limits.get(name)]
    return f"no resource limit for {' and '.join(missing)}" if missing else None


def non_root(*contexts: Mapping[str, Any] | None) -> str | None:
    """A container is non-root if some level sets runAsNonRoot: true and none sets runAsUser: 0 or
    runAsNonRoot: false (the container's settings override the pod's)."""
    contexts = tuple(c or {} for c in contexts)
    if any(c.get("runAsUser") == 0 for c in contexts):
        return "runs as root (runAsUser: 0)"
    if any(c.get("runAsNonRoot") is False for c in contexts):
        return "may run as root (runAsNonRoot: false)"
    if not any(c.get("runAsNonRoot") is True for c in contexts):
        return "may run as root: set securityContext.runAsNonRoot: true"
    return None


def literal_secrets(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(place, message) for every literal secret in a parsed YAML document."""
    if isinstance(node, Mapping):
        # Kubernetes env entries: {name: X_PASSWORD, value: ...} is a literal, valueFrom is not.
        name = node.get("name")
        if (
            isinstance(name, str)
            and SECRET_KEY.search(name)
            and not SECRET_NAME_KEY.search(name)
            and node.get("value") not in (None, "")
        ):
            yield f"{where}.value", f"literal value for secret variable {name}; use valueFrom/envSecrets or Vault"
        for key, value in node.items():
            place = f"{where}.{key}" if where else str(key)
            if (
                isinstance(key, str)
                and SECRET_KEY.search(key)
                and not SECRET_NAME_KEY.search(key)
                and not isinstance(value, bool | Mapping | list)
                and value not in (None, "")
            ):
                yield place, f"literal secret in {key}; reference an existing Secret or Vault instead"
            else:
                yield from literal_secrets(value, place)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from literal_secrets(item, f"{where}[{index}]")
    elif isinstance(node, str):
        if URL_CREDENTIALS.search(node):
            yield where, "credentials inside a URL; keep the URL in a Secret"
        flag = re.match(r"--([\w-]+)=(.+)", node)
        if flag and SECRET_KEY.search(flag.group(1)) and not SECRET_NAME_KEY.search(flag.group(1)):
            yield where, f"literal secret in argument --{flag.group(1)}; pass it from a Secret (env valueFrom)"


# ---- Dockerfiles ----------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    instructions: list[tuple[int, str, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if not buffer:
            start = number
        buffer += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            keyword, _, arguments = buffer.strip().partition(" ")
            instructions.append((start, keyword.upper(), arguments.strip()))
            buffer = ""
    return instructions


def substitute(value: str, variables: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), value)


def check_dockerfile(text: str, file: str) -> list[Violation]:
    violations: list[Violation] = []
    variables: dict[str, str] = {}
    stages: set[str] = set()
    final_user: str | None = None
    for line, keyword, arguments in dockerfile_instructions(text):
        where = f"line {line}"
        if keyword in ("ARG", "ENV"):
            for assignment in shlex.split(arguments):
                name, equals, value = assignment.partition("=")
                if equals and keyword == "ARG":
                    variables.setdefault(name, value)
                if equals and SECRET_KEY.search(name) and value:
                    violations.append(Violation(file, where, f"{keyword} {name} holds a literal secret"))
        elif keyword == "FROM":
            words = arguments.split()
            words = [w for w in words if not w.startswith("--")]
            image = substitute(words[0], variables)
            if image not in stages and image != "scratch":
                problem = image_problem(image)
                if problem:
                    violations.append(Violation(file, where, f"FROM {problem}"))
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2])
            final_user = None  # a new stage starts without a USER of its own
        elif keyword == "USER":
            final_user = arguments.split(":")[0].strip()
        elif keyword == "ADD" and re.search(r"(^|\s)(https?|ftp)://", arguments):
            violations.append(Violation(file, where, "ADD of a remote URL; download in a pinned, checked step"))
        elif keyword == "RUN":
            violations.extend(Violation(file, where, problem) for problem in unpinned_installs(arguments))
        elif keyword in ("COPY", "ADD") and re.search(r"(^|\s|/)\.env(\s|$)|id_rsa|\.pem(\s|$)", arguments):
            violations.append(Violation(file, where, f"{keyword} of a secret file"))
    if final_user is None:
        violations.append(Violation(file, "final stage", "no USER: the image would run as root"))
    elif final_user in ("root", "0"):
        violations.append(Violation(file, "final stage", f"USER {final_user}: the image would run as root"))
    return violations


def unpinned_installs(command: str) -> Iterator[str]:
    for part in re.split(r"&&|;|\|\|", command):
        words = part.split()
        if "pip" in words and "install" in words and "--require-hashes" not in words:
            yield "pip install without --require-hashes (install from `uv export --frozen` with hashes)"
        if "uv" in words and "sync" in words and not {"--frozen", "--locked"} & set(words):
            yield "uv sync without --frozen: the lock file would be re-resolved"
        if "uv" in words and "pip" in words and "install" in words:
            yield "uv pip install bypasses uv.lock; use uv sync --frozen"


# ---- Helm values ----------------------------------------------------------------------------------


def _at(document: Mapping[str, Any], path: Iterable[str]) -> Any:
    node: Any = document
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def value_components(values: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every container-running component of the chart values, by a readable place name."""
    components = {name: _at(values, path) for name, path in VALUES_COMPONENTS.items()}
    for index, deployment in enumerate(_at(values, ("dagster-user-deployments", "deployments")) or []):
        components[f"dagster-user-deployments.deployments[{index}]({deployment.get('name')})"] = deployment
    return {name: component for name, component in components.items() if isinstance(component, Mapping)}


def find_chart_images(node: Any, where: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            place = f"{where}.{key}" if where else str(key)
            if key == "image" and isinstance(value, Mapping) and "repository" in value:
                yield place, value
            else:
                yield from find_chart_images(value, place)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from find_chart_images(item, f"{where}[{index}]")


def env_value(env: Any, name: str) -> str | None:
    if isinstance(env, Mapping):
        return env.get(name)
    for entry in env or []:
        if entry.get("name") == name:
            return entry.get("value")
    return None


def check_values(values: Mapping[str, Any], file: str) -> list[Violation]:
    violations = [Violation(file, place, message) for place, message in literal_secrets(values)]
    for place, image in find_chart_images(values):
        problem = chart_image_problem(image)
        if problem:
            violations.append(Violation(file, place, problem))
    for name, component in value_components(values).items():
        problem = limits_problem(component.get("resources"))
        if problem:
            violations.append(Violation(file, f"{name}.resources", problem))
        problem = non_root(component.get("podSecurityContext"), component.get("securityContext"))
        if problem:
            violations.append(Violation(file, f"{name}.securityContext", problem))
    for index, deployment in enumerate(_at(values, ("dagster-user-deployments", "deployments")) or []):
        image = deployment.get("image") or {}
        if image.get("digest"):
            declared = env_value(deployment.get("env"), "STRATA_IMAGE")
            expected = chart_image_reference(image)
            if declared != expected:
                violations.append(
                    Violation(
                        file,
                        f"dagster-user-deployments.deployments[{index}].env.STRATA_IMAGE",
                        f"STRATA_IMAGE is {declared!r} but the deployment runs {expected!r}",
                    )
                )
    launcher = _at(values, RUN_LAUNCHER)
    if isinstance(launcher, Mapping):
        where = ".".join(RUN_LAUNCHER)
        problem = limits_problem(launcher.get("resources"))
        if problem:
            violations.append(Violation(file, f"{where}.resources", problem))
        pod_context = _at(launcher, ("runK8sConfig", "podSpecConfig", "securityContext"))
        problem = non_root(pod_context, launcher.get("securityContext"))
        if problem:
            violations.append(Violation(file, f"{where}.securityContext", problem))
    return violations


def check_executor(config: Mapping[str, Any], file: str) -> list[Violation]:
    """helm/k8s-executor.yaml: the default step size and every per-step size need limits."""
    violations = [Violation(file, place, message) for place, message in literal_secrets(config)]
    sizes = {"step_k8s_config": config.get("step_k8s_config") or {}}
    sizes.update({f"per_step_k8s_config.{op}": c for op, c in (config.get("per_step_k8s_config") or {}).items()})
    for place, k8s_config in sizes.items():
        problem = limits_problem(_at(k8s_config, ("container_config", "resources")))
        if problem:
            violations.append(Violation(file, f"{place}.container_config.resources", problem))
    return violations


# ---- Kubernetes manifests -------------------------------------------------------------------------


def pod_spec(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    kind = manifest.get("kind")
    if kind == "Pod":
        return manifest.get("spec")
    if kind == "CronJob":
        return _at(manifest, ("spec", "jobTemplate", "spec", "template", "spec"))
    if kind in WORKLOAD_KINDS:
        return _at(manifest, ("spec", "template", "spec"))
    return None


def check_manifest(manifest: Mapping[str, Any], file: str) -> list[Violation]:
    name = f"{manifest.get('kind')}/{_at(manifest, ('metadata', 'name'))}"
    if manifest.get("kind") == "Secret":
        return [Violation(file, name, "a Secret object in the repository; create it from Vault in the cluster")]
    violations = [Violation(file, f"{name}: {place}", message) for place, message in literal_secrets(manifest)]
    spec = pod_spec(manifest)
    if spec is None:
        return violations
    containers = [("containers", c) for c in spec.get("containers") or []]
    containers += [("initContainers", c) for c in spec.get("initContainers") or []]
    for group, container in containers:
        where = f"{name}: {group}[{container.get('name')}]"
        problem = image_problem(str(container.get("image", "")))
        if problem:
            violations.append(Violation(file, where, problem))
        problem = limits_problem(container.get("resources"))
        if problem:
            violations.append(Violation(file, where, problem))
        problem = non_root(spec.get("securityContext"), container.get("securityContext"))
        if problem:
            violations.append(Violation(file, where, problem))
    return violations


# ---- the repository -------------------------------------------------------------------------------


def policy_files(root: Path = REPO_ROOT) -> list[Path]:
    return sorted(
        [
            *root.glob("images/*/Dockerfile"),
            *root.glob("helm/values-*.yaml"),
            *root.glob("helm/k8s-executor.yaml"),
            *root.glob("helm/extras/*.yaml"),
        ]
    )


def check_file(path: Path, root: Path = REPO_ROOT) -> list[Violation]:
    import yaml

    file = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    text = path.read_text()
    if path.name == "Dockerfile" or path.suffix == ".Dockerfile":
        return check_dockerfile(text, file)
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    if path.name.startswith("values-"):
        return [v for d in documents for v in check_values(d, file)]
    if path.name == "k8s-executor.yaml":
        return [v for d in documents for v in check_executor(d, file)]
    return [v for d in documents for v in check_manifest(d, file)]


def check_repository(root: Path = REPO_ROOT, files: Iterable[Path] | None = None) -> list[Violation]:
    return [v for path in (files if files is not None else policy_files(root)) for v in check_file(path, root)]


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    files = [Path(a).resolve() for a in arguments] if arguments else policy_files()
    if not files:
        print("deployment policy: no files to check", file=sys.stderr)
        return 1
    violations = check_repository(REPO_ROOT, files)
    for violation in violations:
        print(violation, file=sys.stderr)
    print(f"deployment policy: {len(files)} files, {len(violations)} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
