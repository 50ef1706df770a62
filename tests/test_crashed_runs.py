"""A run killed mid-step must not block the platform: its pool slot is given back and the next run of the
same job completes, with nobody clicking anything.

The run goes the way `dagster dev` runs it: submitted to the run queue (QueuedRunCoordinator from the
repository's dagster.yaml), dequeued by the run-queue daemon's iteration, launched by the
DefaultRunLauncher in a real `dagster api grpc` code server, whose run worker and step are separate
processes. The daemons' iterations are called directly instead of waiting for their intervals.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from resources import dbt_forkserver
from resources.settings import REPO_ROOT
from resources.warehouse import WAREHOUSE_POOL
from tests.crashed_run_code import HOLD_ENV
from tests.support import AFTER_SLOW_DBT_MODEL, dbt_forkserver_pids, private_dbt_forkserver, slow_dbt_python_model

LOGGER = logging.getLogger("strata.tests.crashed_runs")
LOCATION = "crashed_run_code"
TIMEOUT_S = 90.0


def shipped_dagster_yaml() -> dict:
    return yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())


def test_dagster_yaml_turns_on_run_monitoring(tmp_path):
    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled  # the MONITORING daemon runs
        settings = instance.run_monitoring_settings
        assert settings["free_slots_after_run_end_seconds"] == 30
        assert settings["max_runtime_seconds"] == 6 * 3600  # the fallback when the code server died too
        assert settings["max_resume_run_attempts"] == 0  # the DefaultRunLauncher cannot resume
        assert settings["cancel_timeout_seconds"] > 25  # dagster-dbt gives dbt 25 s to stop on SIGINT
        assert instance.run_monitoring_start_timeout_seconds == 180


def wait_for(what: str, condition: Callable[[], object], timeout: float = TIMEOUT_S) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children first listed before their own children)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def alive(pid: int) -> bool:
    """Whether any thread of `pid` still runs. The main thread of an exiting process turns zombie before its
    other threads (DuckDB's workers) are gone, and the file locks they hold go only with the last one."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            return True
    return False


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    """The repository's dagster.yaml, except that slots are freed 1 s after a run ends instead of 30 s
    (test_dagster_yaml_turns_on_run_monitoring pins the shipped value)."""
    config = shipped_dagster_yaml()
    config["run_monitoring"]["free_slots_after_run_end_seconds"] = 1
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


class CodeServers:
    """Starts `dagster api grpc` serving tests/crashed_run_code.py on one port, again after a crash."""

    def __init__(self, dagster_home: Path, hold: Path):
        self.port = free_port()
        self.hold = hold
        self.env = {**os.environ, "DAGSTER_HOME": str(dagster_home), HOLD_ENV: str(hold), "PYTHONPATH": str(REPO_ROOT)}
        self.started: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        from dagster._grpc.client import DagsterGrpcClient

        server = subprocess.Popen(
            [Path(sys.executable).with_name("dagster"), "api", "grpc", "--python-file", "tests/crashed_run_code.py",
             "--working-directory", str(REPO_ROOT), "--host", "127.0.0.1", "--port", str(self.port),
             "--location-name", LOCATION],
            cwd=REPO_ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.started.append(server)
        client = DagsterGrpcClient(port=self.port, host="127.0.0.1")

        def answers() -> bool:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                client.ping("ready?")
            except Exception:
                return False
            return True

        wait_for("the code server", answers)
        return server

    def stop(self) -> None:
        for server in self.started:
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=30)


@pytest.fixture
def code_servers(dagster_home, tmp_path) -> Iterator[CodeServers]:
    servers = CodeServers(dagster_home, tmp_path / "hold")
    try:
        yield servers
    finally:
        servers.hold.unlink(missing_ok=True)
        servers.stop()


def run_queue_iteration(workspace) -> None:
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    for error in QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(workspace):
        assert error is None, error


def monitoring_iteration(workspace) -> None:
    from dagster._daemon.daemon import MonitoringDaemon

    for error in MonitoringDaemon(interval_seconds=1).run_iteration(workspace):
        assert error is None, error


def submit(instance: dg.DagsterInstance, workspace, tags: dict[str, str] | None = None) -> str:
    """Submit a run of `pooled_job` to the run queue, as a schedule or the UI does."""
    from tests.crashed_run_code import defs

    request = workspace.create_request_context()
    repository = next(iter(request.get_code_location(LOCATION).get_repositories().values()))
    remote_job = repository.get_full_job("pooled_job")
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def("pooled_job"),
        tags=tags,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
    )
    instance.submit_run(run.run_id, request)
    return run.run_id


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def claimed_by(instance: dg.DagsterInstance) -> list[str]:
    """Run ids holding a `warehouse` slot."""
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots]


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    """The run worker's pid, from the code server's engine event 'Started process for run (pid: N).'"""
    import re

    from dagster._core.events import DagsterEventType

    for event in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        match = re.search(r"Started process for run \(pid: (\d+)\)", event.message or "")
        if match:
            return int(match.group(1))
    raise AssertionError(f"no run worker pid in the engine events of {run_id}")


def kill_mid_step(
    instance: dg.DagsterInstance, workspace, servers: CodeServers, *, with_code_server: bool = False, tags=None
) -> str:
    """Start a run and SIGKILL its run worker, step process and the step's child (and the code server if
    asked) while the step holds the `warehouse` slot, as the OOM killer or a `kill -9` would."""
    servers.hold.touch()
    run_id = submit(instance, workspace, tags)
    run_queue_iteration(workspace)
    pids_file = servers.hold.with_suffix(".pids")
    pids = json.loads(wait_for("the pooled step", lambda: pids_file.exists() and pids_file.read_text()))
    assert claimed_by(instance) == [run_id]

    worker = run_worker_pid(instance, run_id)
    tree = [worker, *descendants(worker)]
    assert {pids["step"], pids["child"]} <= set(tree)
    if with_code_server:
        tree.insert(0, servers.started[-1].pid)
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    wait_for("the run's processes to die", lambda: not any(alive(pid) for pid in tree), timeout=10)
    servers.hold.unlink()
    pids_file.unlink()
    return run_id


def assert_next_run_waits_then_completes(instance: dg.DagsterInstance, workspace, crashed: str) -> None:
    """The failed run's slot blocks the queue until one monitoring iteration frees it; the next run of the
    same job then gets the slot and completes."""
    assert status(instance, crashed) == dg.DagsterRunStatus.FAILURE
    assert claimed_by(instance) == [crashed]  # failing the run did not give its slot back

    # The queue holds a run whose steps cannot get a slot: without monitoring it would wait forever.
    following = submit(instance, workspace)
    run_queue_iteration(workspace)
    assert status(instance, following) == dg.DagsterRunStatus.QUEUED

    time.sleep(1.5)  # free_slots_after_run_end_seconds (1 s here) after the end of the failed run
    monitoring_iteration(workspace)
    assert claimed_by(instance) == []

    run_queue_iteration(workspace)
    wait_for("the next run to succeed", lambda: status(instance, following) == dg.DagsterRunStatus.SUCCESS)
    assert claimed_by(instance) == []


def daemon_workspace(instance: dg.DagsterInstance, servers: CodeServers):
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import GrpcServerTarget

    target = GrpcServerTarget(host="127.0.0.1", port=servers.port, socket=None, location_name=LOCATION)
    return create_test_daemon_workspace_context(target, instance)


@pytest.mark.slow
def test_a_run_whose_processes_are_killed_mid_step_gives_its_slot_back(dagster_home, code_servers):
    """The code server notices its run worker died and fails the run; monitoring frees the slot."""
    server = code_servers.start()
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        daemon_workspace(instance, code_servers) as workspace,
    ):
        crashed = kill_mid_step(instance, workspace, code_servers)
        wait_for("the crashed run to fail", lambda: status(instance, crashed) == dg.DagsterRunStatus.FAILURE)
        messages = "\n".join(event.message or "" for event in instance.all_logs(crashed))
        assert "terminated by signal 9 (SIGKILL)" in messages
        assert_next_run_waits_then_completes(instance, workspace, crashed)
        assert server.poll() is None


@pytest.mark.slow
def test_a_run_killed_with_its_code_server_is_failed_after_its_max_runtime(dagster_home, code_servers):
    """With the code server dead too, nothing notices the dead worker: the run stays STARTED until its max
    runtime has passed (here the `dagster/max_runtime` tag, 10 s; dagster.yaml's `max_runtime_seconds` for
    every run), then a monitoring iteration fails it and frees its slot once the code server is back."""
    code_servers.start()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        with daemon_workspace(instance, code_servers) as workspace:
            crashed = kill_mid_step(
                instance, workspace, code_servers, with_code_server=True, tags={"dagster/max_runtime": "10"}
            )
            time.sleep(2)
            assert status(instance, crashed) == dg.DagsterRunStatus.STARTED  # nobody noticed
            assert claimed_by(instance) == [crashed]

            started = instance.get_run_record_by_id(crashed).start_time
            time.sleep(max(0.0, started + 10.5 - time.time()))
            monitoring_iteration(workspace)
            assert status(instance, crashed) == dg.DagsterRunStatus.FAILURE
            messages = "\n".join(event.message or "" for event in instance.all_logs(crashed))
            assert "Canceling due to exceeding maximum runtime of 10 seconds." in messages, messages[-2000:]

        code_servers.start()  # the code server comes back (dagster dev restarted, the pod rescheduled)
        with daemon_workspace(instance, code_servers) as workspace:
            assert_next_run_waits_then_completes(instance, workspace, crashed)


# --- dbt ends with its step ---------------------------------------------------------------------------------

STEP = """
from dagster_dbt import DbtCliResource
from resources.environment import dbt_executable
dbt = DbtCliResource(project_dir={project!r}, profiles_dir={project!r}, dbt_executable=dbt_executable())
dbt.cli(["run"], raise_on_error=False).wait()
"""


# A model dbt cannot cancel: its query waits in a Python function for an hour, and DuckDB looks at a cancel
# only between chunks, so dbt, closing its connections after Ctrl-C, waits for the query. The same happens
# to a query whose cancel arrived before it began (DuckDB drops such a cancel), which CI met now and then.
UNCANCELLABLE_DBT_MODEL = """
def model(dbt, session):
    import os, time
    from duckdb.sqltypes import BIGINT

    def stall(x):
        time.sleep(3600)
        return x

    session.create_function("stall", stall, [BIGINT], BIGINT)
    with open({pid_path}, "w") as out:
        out.write(str(os.getpid()))
    session.execute("select stall(1)").fetchall()
    return session.sql("select 1 as x")
"""


def slow_dbt_project(root: Path, slow_model: str | None = None) -> Path:
    """A dbt-duckdb project whose first model runs for hours (by default a query dbt can cancel), and a
    second model after it."""
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text("name: slow\nversion: '1.0'\nprofile: slow\n")
    profile = {"type": "duckdb", "path": str(root / "warehouse.duckdb"), "threads": 1}
    (root / "profiles.yml").write_text(yaml.safe_dump({"slow": {"target": "dev", "outputs": {"dev": profile}}}))
    pid_path = repr(str(root / "dbt.pid"))
    model = slow_model.format(pid_path=pid_path) if slow_model else slow_dbt_python_model(pid_path)
    (root / "models" / "slow.py").write_text(model)
    (root / "models" / "after.py").write_text(AFTER_SLOW_DBT_MODEL)
    return root


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux-only")
@pytest.mark.parametrize("forkserver", [False, True], ids=["exec", "forkserver"])
def test_dbt_stops_when_its_step_process_is_killed(tmp_path, forkserver):
    """SIGKILL of the process that runs dbt through DbtCliResource (as a step does) ends dbt too (it gets
    Ctrl-C, and at the latest the stop grace ends it) and nothing more is written: no table, and the model
    after the slow one never starts. Without the wrapper dbt would live on,
    reparented to init, and go on to build `after`. With the forkserver dbt is the server's child, and
    the wrapper (the step's child) dies with the step, which stops dbt through the closed connection."""
    import duckdb

    project = slow_dbt_project(tmp_path / "project")
    with private_dbt_forkserver() as forkserver_dir:
        step = subprocess.Popen(
            [sys.executable, "-c", STEP.format(project=str(project))],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), dbt_forkserver.SWITCH_ENV: str(int(forkserver))},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        dbt_stopped_with_step(project, step, forkserver_dir if forkserver else None)
    [log] = project.glob("target/*/dbt.log")  # dagster-dbt gives each invocation its own target folder
    # Which way dbt went down depends on where Ctrl-C found its main thread (most often it cancels the query
    # and logs so, sometimes it closes the connection straight away); either way `after` never began.
    assert "main.after" not in log.read_text() and "main.slow" in log.read_text()
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as warehouse:
        tables = {name for (name,) in warehouse.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert tables == set()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux-only")
@pytest.mark.parametrize("forkserver", [False, True], ids=["exec", "forkserver"])
def test_a_dbt_that_does_not_stop_on_ctrl_c_is_ended_after_the_grace(tmp_path, forkserver):
    """A query dbt cannot cancel (here one waiting in a Python function; in life one whose cancel came
    before it began) keeps dbt from stopping on Ctrl-C. Once its step is killed, dbt is ended after the stop grace
    (3 s here, 20 s by default) instead of holding the warehouse for the hour the model would take, and the
    model after it is never built."""
    import duckdb

    project = slow_dbt_project(tmp_path / "project", UNCANCELLABLE_DBT_MODEL)
    with private_dbt_forkserver() as forkserver_dir:
        step = subprocess.Popen(
            [sys.executable, "-c", STEP.format(project=str(project))],
            cwd=REPO_ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(REPO_ROOT),
                dbt_forkserver.SWITCH_ENV: str(int(forkserver)),
                dbt_forkserver.STOP_GRACE_ENV: "3",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        dbt_stopped_with_step(project, step, forkserver_dir if forkserver else None)  # within 60 s, not an hour
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as warehouse:
        tables = {name for (name,) in warehouse.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert tables == set()


def dbt_stopped_with_step(project: Path, step: subprocess.Popen, forkserver_dir: Path | None) -> None:
    """Wait for dbt to run the slow model, check whose child it is, SIGKILL the step, and wait for dbt to end."""
    dbt_pid = None
    try:

        def dbt_started() -> str | None:
            assert step.poll() is None, step.stderr.read().decode()[-3000:]
            return (project / "dbt.pid").exists() and (project / "dbt.pid").read_text()

        dbt_pid = int(wait_for("dbt to run the slow model", dbt_started))
        status_lines = Path(f"/proc/{dbt_pid}/status").read_text().splitlines()
        if forkserver_dir is None:
            assert f"PPid:\t{step.pid}" in status_lines  # dbt is the step's own child (the wrapper became dbt)
        else:
            [server] = dbt_forkserver_pids(forkserver_dir)
            assert f"PPid:\t{server}" in status_lines  # dbt is a child of the forkserver
        assert "Name:\tdbt" in status_lines

        os.kill(step.pid, signal.SIGKILL)
        step.wait()
        # SIGINT makes dbt cancel its query and exit; on a loaded 2-core machine that can take a while.
        wait_for("dbt to end", lambda: not alive(dbt_pid), timeout=60)
    finally:
        if dbt_pid and alive(dbt_pid):
            os.kill(dbt_pid, signal.SIGKILL)
