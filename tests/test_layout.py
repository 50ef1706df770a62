"""The folders show the architecture: imports flow one way, from `definitions.py` down to `resources/`.

Layers, bottom first: resources -> audit -> assets -> demo, jobs -> sensors -> definitions -> locations
(the code locations' entry files, each cut from definitions.py). A module may import its own package and
any package of a lower layer, never one of its own layer or above (the demo simulator and the jobs are
siblings that must not know each other). Imports inside functions count too: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"resources": 0, "audit": 1, "assets": 2, "demo": 3, "jobs": 3, "sensors": 4, "definitions": 5, "locations": 6}


def strata_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of a Strata package in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in LAYERS]
    return found


def layered_modules() -> list[Path]:
    modules = [REPO / "definitions.py"]
    for package in LAYERS:
        if (REPO / package).is_dir():
            modules += sorted((REPO / package).rglob("*.py"))
    return modules


def test_every_strata_package_is_placed_in_a_layer():
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()} - {"tests"}
    assert packages <= set(LAYERS), f"packages without a layer: {sorted(packages - set(LAYERS))}"


@pytest.mark.parametrize("module", layered_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_flow_downwards(module: Path):
    package = module.relative_to(REPO).parts[0].removesuffix(".py")
    upward = [
        f"line {line}: {package} (layer {LAYERS[package]}) imports {target} (layer {LAYERS[target]})"
        for line, target in strata_imports(module)
        if target != package and LAYERS[target] >= LAYERS[package]
    ]
    assert not upward, "\n".join(upward)
