"""The local instance's event log (resources/local_event_log.py): pooled SQLite connections that lose
nothing another process (the webserver, the daemon, a run worker) expects to see."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.dagster_run import DagsterRun

from resources.local_event_log import PooledSqliteEventLogStorage

REPO = Path(__file__).resolve().parent.parent
RUN_ID = "11111111-2222-3333-4444-555555555555"
CHECK = dg.AssetCheckKey(dg.AssetKey(["bronze", "telemetry"]), "vehicle_id_not_null")


def check_result(hour: int, passed: bool = True) -> DagsterEvent:
    return DagsterEvent(
        event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
        job_name="load_hourly",
        event_specific_data=dg.AssetCheckEvaluation(
            asset_key=CHECK.asset_key,
            check_name=CHECK.name,
            passed=passed,
            partition=f"2026-11-{1 + hour // 24:02d}-{hour % 24:02d}:00",
            metadata={"rows_validated": 400 + hour},
        ),
    )


def local_instance(home: Path) -> dg.DagsterInstance:
    """An instance configured by the repository's dagster.yaml, as `make dev` sets it up."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


def write_results(home: str, hours: list[int]) -> None:
    """A run worker's part: record check results on the run (run in another process)."""
    with dg.DagsterInstance.from_config(home) as instance:
        for hour in hours:
            instance.report_dagster_event(check_result(hour), run_id=RUN_ID)


def test_the_local_instance_keeps_its_event_log_where_dagster_does(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with local_instance(home) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        instance.add_run(DagsterRun(job_name="load_hourly", run_id=RUN_ID))
        instance.report_dagster_event(check_result(0), run_id=RUN_ID)
        assert (home / "history" / "runs" / f"{RUN_ID}.db").exists()
        assert (home / "history" / "runs" / "index.db").exists()


def test_the_event_log_follows_the_instance_directory_not_dagster_home(tmp_path: Path, monkeypatch) -> None:
    """An instance opened from a directory (tests, `make dev`'s DAGSTER_HOME) and a run worker opened from
    its reference write and read the same files, whatever DAGSTER_HOME says in either process."""
    home, elsewhere = tmp_path / "instance", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(elsewhere))
    with local_instance(home) as instance:
        instance.add_run(DagsterRun(job_name="load_hourly", run_id=RUN_ID))
        with dg.DagsterInstance.from_ref(instance.get_ref()) as worker:
            worker.report_dagster_event(check_result(3), run_id=RUN_ID)
        [record] = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=10)
        assert record.partition == "2026-11-01-03:00"
    assert (home / "history" / "runs" / f"{RUN_ID}.db").exists()
    assert not list(elsewhere.rglob("*.db"))


def test_a_run_of_many_results_opens_a_bounded_number_of_connections(tmp_path: Path, monkeypatch) -> None:
    """Dagster's default storage opens about six connections per result; pooled, a run's results share
    one connection per file, however many there are."""
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    opened: list[int] = []

    def count(*_args) -> None:
        opened.append(1)

    with local_instance(home) as instance:
        instance.add_run(DagsterRun(job_name="load_hourly", run_id=RUN_ID))
        instance.report_dagster_event(check_result(0), run_id=RUN_ID)  # shards created and opened
        sa.event.listen(sa.engine.Engine, "connect", count)
        try:
            for hour in range(1, 121):
                instance.report_dagster_event(check_result(hour, passed=hour != 7), run_id=RUN_ID)
        finally:
            sa.event.remove(sa.engine.Engine, "connect", count)
        assert len(opened) <= 2, f"{len(opened)} connections opened for 120 check results"
        history = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=500)
        assert len(history) == 121
        failed = [record for record in history if record.status == AssetCheckExecutionRecordStatus.FAILED]
        assert [record.partition for record in failed] == ["2026-11-01-07:00"]


def test_another_process_reads_what_an_open_connection_wrote(tmp_path: Path, monkeypatch) -> None:
    """The writer keeps its connection (and the WAL) open; a reader in another process, here with
    Dagster's own storage class, sees every event and every partition's check status."""
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with local_instance(home) as instance:
        instance.add_run(DagsterRun(job_name="load_hourly", run_id=RUN_ID))
        for hour in range(24):
            instance.report_dagster_event(check_result(hour, passed=hour != 5), run_id=RUN_ID)
        reader = (
            "from dagster._core.storage.event_log import SqliteEventLogStorage\n"
            "from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as S\n"
            "import dagster as dg, sys\n"
            f"s = SqliteEventLogStorage({str(home / 'history' / 'runs')!r})\n"
            f"records = s.get_records_for_run({RUN_ID!r}, limit=1000).records\n"
            "key = dg.AssetCheckKey(dg.AssetKey(['bronze', 'telemetry']), 'vehicle_id_not_null')\n"
            "history = s.get_asset_check_execution_history(key, limit=100)\n"
            "print(len(records), sorted(r.partition for r in history if r.status == S.FAILED))\n"
        )
        out = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, check=True, cwd=REPO)
        assert out.stdout.split("\n")[0] == "24 ['2026-11-01-05:00']"


def test_the_webserver_follows_a_run_written_by_another_process(tmp_path: Path, monkeypatch) -> None:
    """The UI's live run log watches the run's shard; the run worker's events land in its WAL."""
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with local_instance(home) as webserver:
        webserver.add_run(DagsterRun(job_name="load_hourly", run_id=RUN_ID))
        webserver.report_dagster_event(check_result(0), run_id=RUN_ID)  # the shard exists before the watch
        seen: list[int] = []
        all_seen = threading.Event()

        def on_event(entry, _cursor) -> None:
            seen.append(entry.dagster_event.event_specific_data.metadata["rows_validated"].value)
            if len(seen) == 6:
                all_seen.set()

        webserver.event_log_storage.watch(RUN_ID, None, on_event)
        worker = multiprocessing.get_context("spawn").Process(target=write_results, args=(str(home), [1, 2, 3, 4, 5]))
        worker.start()
        worker.join(60)
        assert worker.exitcode == 0
        assert all_seen.wait(30), f"the watch saw {seen}"
        assert seen == [400, 401, 402, 403, 404, 405]


def test_a_forked_child_opens_its_own_connections(tmp_path: Path, monkeypatch) -> None:
    """A forked run worker must not use its parent's open SQLite connections (SQLite forbids it);
    both go on writing afterwards and nothing is lost."""
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with local_instance(home) as instance:
        instance.add_run(DagsterRun(job_name="load_hourly", run_id=RUN_ID))
        instance.report_dagster_event(check_result(0), run_id=RUN_ID)

        def child() -> None:
            for hour in (1, 2, 3):
                instance.report_dagster_event(check_result(hour), run_id=RUN_ID)

        forked = multiprocessing.get_context("fork").Process(target=child)
        forked.start()
        forked.join(60)
        assert forked.exitcode == 0
        instance.report_dagster_event(check_result(4), run_id=RUN_ID)
        history = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=100)
        assert sorted(record.partition for record in history) == [f"2026-11-01-0{h}:00" for h in range(5)]


def test_a_finished_run_leaves_one_file(tmp_path: Path, monkeypatch) -> None:
    """The run's shard is closed when the run ends: its WAL is folded back and removed."""
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    @dg.asset
    def stations() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"dagster/row_count": 5})

    with local_instance(home) as instance:
        result = dg.materialize([stations], instance=instance)
        assert result.success
        shard = home / "history" / "runs" / f"{result.run_id}.db"
        assert shard.exists()
        assert not Path(f"{shard}-wal").exists()
        assert not Path(f"{shard}-shm").exists()
        [event] = instance.fetch_materializations(stations.key, limit=1).records
        assert event.asset_materialization.metadata["dagster/row_count"].value == 5


def test_a_storage_is_collectable_once_its_instance_is_disposed(tmp_path: Path, monkeypatch) -> None:
    """A code server opens an instance for every run it launches: none of them may be kept alive (by the
    hook that closes connections at exit, for instance) after it is disposed."""
    import gc
    import weakref

    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with local_instance(home) as instance:
        instance.add_run(DagsterRun(job_name="load_hourly", run_id=RUN_ID))
        storages = []
        for hour in range(5):
            with dg.DagsterInstance.from_ref(instance.get_ref()) as worker:
                worker.report_dagster_event(check_result(hour), run_id=RUN_ID)
                storages.append(weakref.ref(worker.event_log_storage))
        del worker
        gc.collect()
        assert [storage() for storage in storages] == [None] * 5
        assert len(instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=10)) == 5


EXIT_WITHOUT_CLOSING = """
import sys
import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun
from tests.test_local_event_log import RUN_ID, check_result

instance = dg.DagsterInstance.from_config(sys.argv[1])
instance.add_run(DagsterRun(job_name="load_hourly", run_id=RUN_ID))
instance.report_dagster_event(check_result(0), run_id=RUN_ID)
"""


def test_a_process_that_exits_without_closing_leaves_no_wal(tmp_path: Path, monkeypatch) -> None:
    """A process that never disposes its instance (a script, a crashed-but-exiting worker) still closes its
    connections at exit: the shard's WAL is folded back and removed."""
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    local_instance(home).dispose()
    subprocess.run([sys.executable, "-c", EXIT_WITHOUT_CLOSING, str(home)], cwd=REPO, check=True, timeout=120)
    shard = home / "history" / "runs" / f"{RUN_ID}.db"
    assert shard.exists()
    assert not Path(f"{shard}-wal").exists()
    with local_instance(home) as instance:
        [record] = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=10)
        assert record.partition == "2026-11-01-00:00"
