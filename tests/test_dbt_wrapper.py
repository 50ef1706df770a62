"""The dbt wrapper answers dagster-dbt's per-run `dbt --version` itself, with dbt's own answer."""

from __future__ import annotations

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
