"""The dbt wrapper answers dagster-dbt's per-run `dbt --version` itself, with dbt's own answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from resources.environment import dbt_executable

VERSION = re.compile(r"installed:\s*(\d+\.\d+\.\d+)")


def version_line(command: list[str]) -> tuple[str, float]:
    began = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    found = VERSION.search(out)
    assert found, out
    return found.group(1), time.perf_counter() - began


def test_the_wrapper_reports_the_version_dbt_reports_without_starting_dbt():
    wrapper = dbt_executable()
    assert Path(wrapper).name == "dbt_dies_with_parent.py"
    real, real_seconds = version_line([str(Path(sys.executable).with_name("dbt")), "--version"])
    answered, answered_seconds = version_line([sys.executable, wrapper, "--version"])
    assert answered == real
    # Answered from package metadata: dbt itself (3-4 s of imports) is never started.
    assert answered_seconds < real_seconds


def test_every_other_argument_still_reaches_dbt():
    out = subprocess.run(
        [sys.executable, dbt_executable(), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "Usage: dbt" in out, out


def test_the_wrapper_started_by_another_python_runs_dbt_under_the_platforms():
    """`.venv/bin/dagster dev` without an activated venv: the wrapper's `#!/usr/bin/env python3` finds some other
    python3 on PATH, one without dbt. The platform names its own interpreter and the wrapper re-runs under it."""
    other = sys._base_executable  # the interpreter this venv was made from: dbt is not installed there
    assert Path(other) != Path(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "STRATA_DBT_PYTHON"}
    env["PATH"] = f"{Path(other).parent}:/usr/bin:/bin"  # no venv on PATH

    lost = subprocess.run([other, dbt_executable(), "--help"], capture_output=True, text=True, env=env)
    assert lost.returncode != 0 and f"no dbt next to {other}" in lost.stderr, lost.stderr

    env["STRATA_DBT_PYTHON"] = sys.executable
    found = subprocess.run([other, dbt_executable(), "--help"], capture_output=True, text=True, env=env)
    assert found.returncode == 0 and "Usage: dbt" in found.stdout, found.stderr


def test_configuring_dbt_names_this_interpreter_for_the_wrapper(monkeypatch):
    monkeypatch.delenv("STRATA_DBT_PYTHON", raising=False)
    dbt_executable()
    assert os.environ["STRATA_DBT_PYTHON"] == sys.executable
