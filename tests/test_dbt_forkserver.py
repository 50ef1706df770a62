"""dbt through the forkserver (resources/dbt_forkserver.py) behaves as dbt started on its own: the same
exit codes, run results and JSON log lines, each call with its own environment, and no dbt left running
once the wrapper that dagster-dbt started is gone. Calls go through the wrapper as dagster-dbt makes them
(stdout piped, stderr into it, JSON logs, PYTHONUNBUFFERED)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from resources import dbt_forkserver
from resources.environment import dbt_executable
from tests.support import AFTER_SLOW_DBT_MODEL, dbt_forkserver_pids, private_dbt_forkserver, slow_dbt_python_model

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the forkserver is Linux-only")

PROBE = """
def model(dbt, session):
    import json, os
    with open(os.environ["PROBE_FILE"], "w") as out:
        json.dump({"pid": os.getpid(), "ppid": os.getppid(), "leak": os.environ.get("PROBE_LEAK")}, out)
    return session.sql("select 1 as x")
"""
SLOW = slow_dbt_python_model('os.environ["PROBE_FILE"]')
AFTER_SLOW = AFTER_SLOW_DBT_MODEL


def write_project(root: Path, models: dict[str, str]) -> Path:
    """A dbt-duckdb project whose warehouse path comes from the call's environment (PROBE_WAREHOUSE)."""
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text("name: probe\nversion: '1.0'\nprofile: probe\n")
    profile = {"type": "duckdb", "path": "{{ env_var('PROBE_WAREHOUSE') }}", "threads": 1}
    (root / "profiles.yml").write_text(yaml.safe_dump({"probe": {"target": "dev", "outputs": {"dev": profile}}}))
    for name, text in models.items():
        (root / "models" / name).write_text(text)
    (root / "models" / "schema.yml").write_text(
        yaml.safe_dump({"version": 2, "models": [{"name": "ok", "columns": [{"name": "n", "tests": ["not_null"]}]}]})
    )
    return root


def call_env(project: Path, name: str, forkserver: bool, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DBT_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_TARGET_PATH": str(project / "target" / name),
        "DBT_LOG_PATH": str(project / "target" / name),
        "PROBE_WAREHOUSE": str(project / f"{name}.duckdb"),
        "PROBE_FILE": str(project / f"{name}.json"),
        dbt_forkserver.SWITCH_ENV: "1" if forkserver else "0",
        **extra,
    }
    env.pop("PROBE_LEAK", None)
    env.update(extra)
    return env


def start_dbt(project: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [dbt_executable(), *args, "--project-dir", str(project), "--profiles-dir", str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=project,
    )


def run_dbt(project: Path, args: list[str], name: str, forkserver: bool, **extra: str) -> tuple[int, list[str], int]:
    """Exit code, stdout lines (stderr merged, as dagster-dbt reads them) and the wrapper's pid."""
    process = start_dbt(project, args, call_env(project, name, forkserver, **extra))
    out, _ = process.communicate(timeout=600)
    return process.returncode, out.decode().splitlines(), process.pid


def results(project: Path, name: str) -> dict[str, str]:
    run_results = json.loads((project / "target" / name / "run_results.json").read_text())
    return {result["unique_id"]: result["status"] for result in run_results["results"]}


def event_names(lines: list[str]) -> list[str]:
    """The dbt event of every line: each one must be a JSON log line (dagster-dbt parses them)."""
    return [json.loads(line)["info"]["name"] for line in lines]


def probe(project: Path, name: str) -> dict:
    return json.loads((project / f"{name}.json").read_text())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(what: str, condition, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def forkserver_dir() -> Iterator[Path]:
    with private_dbt_forkserver() as directory:
        yield directory


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(
        tmp_path / "probe",
        {"ok.sql": "select 1 as n", "probe.py": PROBE, "downstream.sql": "select n from {{ ref('ok') }}"},
    )


@pytest.mark.slow
def test_build_exit_codes_results_and_log_lines_are_those_of_plain_dbt(forkserver_dir: Path, project: Path):
    (project / "models" / "broken.sql").write_text("select * from no_such_table")
    (project / "models" / "after_broken.sql").write_text("select * from {{ ref('broken') }}")
    seen = {}
    for forkserver in (False, True):
        mode = "forkserver" if forkserver else "exec"
        passing = run_dbt(project, ["build", "--exclude", "broken", "after_broken"], f"ok-{mode}", forkserver)
        failing = run_dbt(project, ["build"], f"failing-{mode}", forkserver)
        usage_error = run_dbt(project, ["build", "--no-such-flag"], f"usage-{mode}", forkserver)
        seen[mode] = {
            "codes": (passing[0], failing[0], usage_error[0]),
            "results": (results(project, f"ok-{mode}"), results(project, f"failing-{mode}")),
            "events": (event_names(passing[1]), event_names(failing[1])),
            "usage": usage_error[1],
            "probe": probe(project, f"ok-{mode}"),
            "wrapper": passing[2],
        }
    assert seen["exec"]["codes"] == seen["forkserver"]["codes"] == (0, 1, 2)
    assert seen["forkserver"]["results"] == seen["exec"]["results"]
    statuses = {
        unique_id.split(".")[-1] if unique_id.startswith("model.") else "test": status
        for unique_id, status in seen["forkserver"]["results"][1].items()
    }
    assert statuses == {
        "ok": "success",
        "probe": "success",
        "downstream": "success",
        "test": "pass",
        "broken": "error",
        "after_broken": "skipped",
    }
    assert seen["forkserver"]["events"] == seen["exec"]["events"]
    assert seen["forkserver"]["usage"] == seen["exec"]["usage"]  # click's usage text, word for word
    [server] = dbt_forkserver_pids(forkserver_dir)
    assert seen["forkserver"]["probe"]["ppid"] == server  # dbt ran in a child of the server
    assert seen["exec"]["probe"]["pid"] == seen["exec"]["wrapper"]  # switched off: the wrapper became dbt


@pytest.mark.slow
def test_calls_reuse_the_server_and_each_has_only_its_own_environment(forkserver_dir: Path, project: Path):
    first = run_dbt(project, ["run"], "first", True, PROBE_LEAK="from the first call")
    [server] = dbt_forkserver_pids(forkserver_dir)
    second = run_dbt(project, ["run"], "second", True)
    assert (first[0], second[0]) == (0, 0)
    assert dbt_forkserver_pids(forkserver_dir) == [server]  # no new server, no new interpreter
    one, two = probe(project, "first"), probe(project, "second")
    assert one["ppid"] == two["ppid"] == server and one["pid"] != two["pid"]
    assert one["leak"] == "from the first call" and two["leak"] is None
    # profiles.yml's env_var() read each call's warehouse path; each holds the tables its call built.
    for name in ("first", "second"):
        with duckdb.connect(str(project / f"{name}.duckdb"), read_only=True) as warehouse:
            assert warehouse.execute("select n from ok").fetchall() == [(1,)]


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGINT], ids=["wrapper-killed", "sigint-forwarded"])
def test_dbt_stops_when_its_wrapper_is_killed_or_interrupted(forkserver_dir: Path, tmp_path: Path, kill):
    """SIGKILL of the wrapper closes the connection: the child stops as on Ctrl-C. SIGINT (how dagster-dbt
    cancels) is forwarded. Either way the model after the slow one is never built."""
    project = write_project(tmp_path / "slow", {"slow.py": SLOW, "after.py": AFTER_SLOW, "ok.sql": "select 1 as n"})
    wrapper = start_dbt(project, ["run", "--exclude", "ok"], call_env(project, "slow", True))
    try:
        dbt_pid = int(
            wait_for(
                "dbt to run the slow model",
                lambda: (project / "slow.json").exists() and (project / "slow.json").read_text(),
            )
        )
        assert dbt_pid != wrapper.pid and Path(f"/proc/{dbt_pid}/comm").read_text().strip() == "dbt"
        os.kill(wrapper.pid, kill)
        wrapper.wait(timeout=120)
        began = time.monotonic()
        wait_for("the dbt child to end", lambda: not alive(dbt_pid), timeout=60)
        stopped_after = time.monotonic() - began
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
    if kill == signal.SIGINT:
        assert wrapper.returncode != 0  # dbt's own answer to Ctrl-C, passed on
        assert stopped_after < 5  # the wrapper waited for dbt to end
    log = (project / "target" / "slow" / "dbt.log").read_text()
    assert "main.slow" in log and "main.after" not in log  # stopped in the slow model: nothing after it began
    with duckdb.connect(str(project / "slow.duckdb"), read_only=True) as warehouse:
        tables = {name for (name,) in warehouse.execute("select table_name from information_schema.tables").fetchall()}
    assert tables == set()


@pytest.mark.slow
def test_a_stale_socket_gets_a_new_server(forkserver_dir: Path, project: Path):
    assert run_dbt(project, ["run", "--select", "ok"], "warm", True)[0] == 0
    [old] = dbt_forkserver_pids(forkserver_dir)
    os.kill(old, signal.SIGKILL)
    wait_for("the server to die", lambda: not alive(old))
    [socket_file] = forkserver_dir.glob("*.sock")  # left behind: nobody listens on it
    assert dbt_forkserver_pids(forkserver_dir) == []
    assert run_dbt(project, ["run"], "after-restart", True)[0] == 0
    [new] = dbt_forkserver_pids(forkserver_dir)
    assert new != old and probe(project, "after-restart")["ppid"] == new
    assert socket_file.exists()


@pytest.mark.slow
def test_racing_wrappers_start_one_server(tmp_path: Path):
    with private_dbt_forkserver() as directory:
        projects = [write_project(tmp_path / f"p{i}", {"ok.sql": "select 1 as n", "probe.py": PROBE}) for i in range(3)]
        calls = [start_dbt(p, ["run"], call_env(p, "race", True)) for p in projects]
        assert [call.wait(timeout=600) for call in calls] == [0, 0, 0]
        [server] = dbt_forkserver_pids(directory)
        assert {probe(p, "race")["ppid"] for p in projects} == {server}
        log = next(directory.glob("*.log")).read_text()
        assert log.count("serving ") == 1, log


def test_exit_status_is_what_sys_exit_gives():
    assert [dbt_forkserver.exit_status(code) for code in (None, 0, 1, 2, 256 + 3, -1, True)] == [0, 0, 1, 2, 3, 255, 1]


environments = st.dictionaries(
    st.text(st.characters(blacklist_characters="=\x00", blacklist_categories=("Cs",)), min_size=1, max_size=8),
    st.text(st.characters(blacklist_characters="\x00"), max_size=20),
    max_size=5,
)


@given(argv=st.lists(st.text(max_size=10), min_size=1, max_size=4), env=environments, umask=st.integers(0, 0o777))
def test_requests_survive_the_wire(argv, env, umask):
    request = {"argv": argv, "env": env, "cwd": "/tmp", "umask": umask}
    assert dbt_forkserver.decode_request(dbt_forkserver.encode_request(request)) == request


@given(st.binary(max_size=64))
def test_any_malformed_request_is_refused_with_value_error(data):
    with pytest.raises(ValueError):
        dbt_forkserver.decode_request(dbt_forkserver.HEADER.pack(len(data)) + data + b"trailing")
    with contextlib.suppress(ValueError):  # anything else (KeyError, TypeError, ...) fails the test
        request = dbt_forkserver.decode_request(data)
        assert isinstance(request, dict)
