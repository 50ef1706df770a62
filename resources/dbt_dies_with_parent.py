#!/usr/bin/env python3
"""Runs dbt so that it ends when the process that started it dies (Linux), even by SIGKILL.

dagster-dbt starts dbt as a plain child process and stops it only cooperatively (SIGINT when the step
is interrupted). A step process killed outright (SIGKILL, the OOM killer) cannot do that, and dbt
would keep running on its own, reparented to init, writing the warehouse while the run is marked
failed and its pool slot is given to the next run. This wrapper asks the kernel for a parent-death
signal (prctl PR_SET_PDEATHSIG) and then becomes dbt (running dbt's console script in this interpreter),
so dbt receives SIGINT the moment its parent dies and cancels its open queries as on Ctrl-C. A dbt that
has not stopped 20 s after a SIGINT (`STRATA_DBT_STOP_GRACE_SECONDS`; a query that missed its cancel, a
Python model) is ended outright (resources/dbt_forkserver.py `interrupt_with_deadline`).

`DbtCliResource(dbt_executable=...)` points here (resources/environment.py `dbt_executable`); every
argument goes to dbt unchanged, except a bare `--version`. dagster-dbt asks `dbt --version` once per
resource instance, that is once per run, and dbt needs 3-4 s to import itself and its adapters only to
print a number. The wrapper answers it from the installed package's metadata instead (the same
version: dbt reads it from there too), in the `Core: - installed: X.Y.Z` form dagster-dbt parses.
Standard library only: it may start under any `python3` on PATH. It then re-runs itself under the
platform's interpreter (`STRATA_DBT_PYTHON`, set by the process that configures dbt) and finds dbt next to
that interpreter, else on PATH.

When dbt sits next to this interpreter, the call runs in a child forked by the dbt forkserver
(resources/dbt_forkserver.py, started on demand), which has dbt imported already: a call then costs a
fork instead of an interpreter start and dbt's imports. This process stays dbt's stand-in for the step: it
keeps the parent-death signal, forwards SIGINT/SIGTERM to the child, and exits as the child did; if it is
killed outright, the closed connection makes the child stop as on Ctrl-C. `STRATA_DBT_FORKSERVER=0`, or a
server that cannot start (one log line), runs dbt in this process instead. A dbt found elsewhere on PATH
(another interpreter's) is `execv`'d, with the parent-death signal but without the stop deadline.
"""

import ctypes
import importlib.util
import os
import shutil
import signal
import sys
import types
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The interpreter of the process that configured dbt (resources/environment.py sets it). The shebang finds
# `python3` on PATH, which is another interpreter when the platform's venv is not activated
# (`.venv/bin/dagster dev`); dbt and its forkserver belong to the platform's.
PLATFORM_PYTHON_ENV = "STRATA_DBT_PYTHON"
# SIGINT, not SIGKILL: dbt turns it into KeyboardInterrupt and cancels the adapter's open connections.
DEATH_SIGNAL = signal.SIGINT


def real_dbt() -> str:
    beside = Path(sys.executable).with_name("dbt")
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("dbt")
    if not found:
        sys.exit(f"{Path(__file__).name}: no dbt next to {sys.executable} nor on PATH")
    return found


def die_with_parent() -> None:
    """Have the kernel send DEATH_SIGNAL when the parent dies; exit now if it already has."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    if os.getppid() != parent:  # the parent died between fork and prctl: nobody would signal us
        sys.exit(f"{Path(__file__).name}: parent process {parent} is gone, not starting dbt")


def installed_dbt_core() -> str | None:
    """dbt-core's version as installed beside this interpreter, or None if it is not installed here."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dbt-core")
    except PackageNotFoundError:
        return None


def load_forkserver() -> types.ModuleType:
    """resources/dbt_forkserver.py, loaded by path: this script's folder is not a package, and may not be on
    sys.path (PYTHONSAFEPATH)."""
    spec = importlib.util.spec_from_file_location(
        "strata_dbt_forkserver", Path(__file__).with_name("dbt_forkserver.py")
    )
    forkserver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(forkserver)
    return forkserver


def run_beside(dbt: str) -> None:
    """Run the call in a forked child of the dbt forkserver and exit as it did, or else become dbt in this
    process; never returns."""
    forkserver = load_forkserver()
    if forkserver.forkserver_wanted(os.environ):
        outcome = forkserver.run_in_server([dbt, *sys.argv[1:]], sys.executable)
        if outcome is not None:
            forkserver.end_like(outcome)
    forkserver.run_here(dbt, sys.argv[1:], str(Path(__file__).resolve().parent))


def use_platform_interpreter() -> None:
    """Re-run this script under the platform's interpreter if this one is another; returns if it is this one."""
    wanted = os.environ.get(PLATFORM_PYTHON_ENV)
    if not wanted or Path(wanted) == Path(sys.executable) or not os.access(wanted, os.X_OK):
        return
    os.execv(wanted, [wanted, str(Path(__file__).resolve()), *sys.argv[1:]])


def main() -> None:
    use_platform_interpreter()
    if sys.argv[1:] == ["--version"] and (core := installed_dbt_core()):
        print(f"Core:\n  - installed: {core}")
        return
    dbt = real_dbt()
    if sys.platform.startswith("linux"):
        die_with_parent()
        if Path(dbt).parent == Path(sys.executable).parent:  # dbt runs in this interpreter: the server's too
            run_beside(dbt)
    os.execv(dbt, [dbt, *sys.argv[1:]])


if __name__ == "__main__":
    main()
