"""Retries (backoff and jitter for network errors, none for deterministic failures), pools, priorities,
and the global policy table applied to the real asset graph."""

import itertools
import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from assets.bronze.conform import ContractViolation
from jobs.policies import (
    BRONZE,
    GOLD_DAILY_DEADLINE,
    JOB_PRIORITIES,
    NETWORK_RETRY,
    apply_global_policies,
    priority_tags,
    with_op_policies,
)
from resources.settings import REPO_ROOT
from tests.support import create_database

TINY_RETRY = dg.RetryPolicy(max_retries=3, delay=0.2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
TINY_RETRIES = [("test: tiny delays", BRONZE, TINY_RETRY)]


# --- retries ------------------------------------------------------------------------------------------------


def test_network_retry_backs_off_exponentially_with_jitter():
    random.seed(1)
    for attempt, (low, high) in enumerate([(0, 4), (4, 8), (12, 16)], start=1):
        delays = [NETWORK_RETRY.calculate_delay(attempt) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high, attempt
        assert max(delays) - min(delays) > 2, "jitter spreads the retries of many runs"


class FlakySource(dg.ConfigurableResource):
    """Fails the first `failures` reads like a dropped connection; every attempt is logged to a file."""

    log_path: str
    failures: int = 2

    def read(self) -> int:
        log = Path(self.log_path)
        attempts = log.read_text().splitlines() if log.exists() else []
        with log.open("a") as out:
            out.write(f"{time.monotonic()}\n")
        if len(attempts) < self.failures:
            raise ConnectionResetError("connection reset by peer")
        return 42


@dg.asset(key=["bronze", "customers"], group_name="bronze")
def flaky_extract(source: FlakySource) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": source.read()})


def test_a_source_that_fails_twice_is_retried_with_growing_delays(tmp_path):
    random.seed(3)  # Dagster draws its jitter from the global random generator: fixed delays, no flakes
    [asset] = apply_global_policies([flaky_extract], retries=TINY_RETRIES)
    log = tmp_path / "attempts.log"
    result = dg.materialize([asset], resources={"source": FlakySource(log_path=str(log))}, raise_on_error=False)

    assert result.success
    starts = [float(line) for line in log.read_text().splitlines()]
    assert len(starts) == 3
    waits = [e.step_retry_data.seconds_to_wait for e in result.all_events if e.is_step_up_for_retry]
    assert len(waits) == 2
    assert 0 <= waits[0] <= 0.4 and 0.4 <= waits[1] <= 0.8  # 1x and 3x the base delay, +/- one base delay
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= wait - 0.01 for gap, wait in zip(gaps, waits, strict=True)), (gaps, waits)
    assert gaps[1] > gaps[0], (gaps, waits)


@dg.asset(key=["bronze", "customers"], group_name="bronze")
def contract_breaking_extract(source: FlakySource) -> None:
    source.read()
    try:
        raise ContractViolation("source table customers: column signup_date is text, contract says date")
    except ContractViolation as violation:
        # The change recommended for assets/bronze/oltp.py: the same bytes fail the same way every time.
        raise dg.Failure(description=str(violation), allow_retries=False) from violation


def test_a_deterministic_failure_is_attempted_once(tmp_path):
    [asset] = apply_global_policies([contract_breaking_extract], retries=TINY_RETRIES)
    assert asset.op.retry_policy == TINY_RETRY
    log = tmp_path / "attempts.log"
    result = dg.materialize(
        [asset], resources={"source": FlakySource(log_path=str(log), failures=0)}, raise_on_error=False
    )
    assert not result.success
    assert len(log.read_text().splitlines()) == 1
    assert not any(e.is_step_up_for_retry for e in result.all_events)


@dg.asset(
    key=["bronze", "payments"],
    group_name="bronze",
    check_specs=[dg.AssetCheckSpec("amount_not_negative", asset=["bronze", "payments"], blocking=True)],
)
def payments_with_check(source: FlakySource) -> Iterator:
    source.read()
    yield dg.Output(None)
    yield dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description="3 negative amounts")


@dg.asset(key=["bronze", "stations"], group_name="bronze")
def stations(source: FlakySource) -> None:
    source.read()


@dg.asset_check(asset=["bronze", "stations"], blocking=True)
def station_ids_unique() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="duplicate station ids")


@pytest.mark.parametrize("assets", [[payments_with_check], [stations, station_ids_unique]], ids=["in-op", "separate"])
def test_a_failed_blocking_check_is_not_retried(tmp_path, assets):
    checks = [a for a in assets if isinstance(a, dg.AssetChecksDefinition)]
    policied = apply_global_policies([a for a in assets if a not in checks], retries=TINY_RETRIES)
    log = tmp_path / "attempts.log"
    result = dg.materialize(
        [*policied, *checks], resources={"source": FlakySource(log_path=str(log), failures=0)}, raise_on_error=False
    )
    assert not result.success
    assert [e.passed for e in result.get_asset_check_evaluations()] == [False]
    assert len(log.read_text().splitlines()) == 1
    assert not any(e.is_step_up_for_retry for e in result.all_events)


# --- pools --------------------------------------------------------------------------------------------------


def count_events(path: Path, event: str) -> int:
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(json.loads(line)["event"] == event for line in lines)


def record_step(log_path: str, until: str) -> None:
    """Log the step's start and end, holding the step until `until` is true (at most 60 s), not for a fixed
    time: on a loaded machine the second run process may take longer to start than any fixed sleep.
    `until` is "second run started" (pooled: the first step holds the slot while the other run waits) or
    "second step started" (unpooled: only an overlap lets it happen)."""
    steps = Path(log_path)
    runs = steps.with_suffix(".runs")
    with open(steps, "a") as out:
        out.write(json.dumps({"event": "start", "t": time.time()}) + "\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if until == "second run started" and count_events(runs, "run_start") >= 2:
            break
        if until == "second step started" and count_events(steps, "start") >= 2:
            break
        time.sleep(0.1)
    time.sleep(0.5)  # the other run is under way: give a wrongly granted slot time to show as an overlap
    with open(steps, "a") as out:
        out.write(json.dumps({"event": "end", "t": time.time()}) + "\n")


class StepLog(dg.Config):
    log_path: str


@dg.asset(key=["bronze", "customers"], group_name="bronze", pool="source_db")
def pooled_extract(config: StepLog) -> None:
    record_step(config.log_path, until="second run started")


@dg.asset(key=["bronze", "customers"], group_name="bronze")
def unpooled_extract(config: StepLog) -> None:
    record_step(config.log_path, until="second step started")


def run_pool_worker(asset_name: str, log_path: str, run_log_path: str) -> None:
    """Entry point of one run worker process: a run on the instance in $DAGSTER_HOME."""
    asset = globals()[asset_name]
    with open(run_log_path, "a") as out:
        out.write(json.dumps({"event": "run_start", "t": time.time()}) + "\n")
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [asset],
            instance=instance,
            run_config={"ops": {asset.op.name: {"config": {"log_path": log_path}}}},
        )
    assert result.success


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    """A DAGSTER_HOME with the repository's own dagster.yaml (run queue, pools), on SQLite."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Create the SQLite storages and the pool rows once: run workers starting together would race to.
        instance.event_log_storage.initialize_concurrency_limit_to_default("source_db")
    return home


@pytest.fixture
def postgres_dagster_home(tmp_path, postgres_url) -> Path:
    """A DAGSTER_HOME with dagster.yaml's run queue and pools on PostgreSQL storage, as deployed. Pool slots
    are claimed with `SELECT ... FOR UPDATE SKIP LOCKED`; Dagster's SQLite storage (local `dagster dev`)
    has no row locks, so two processes claiming the last slot at the same instant can both get it."""
    import uuid

    import yaml

    url = create_database(postgres_url, f"dagster_pools_{uuid.uuid4().hex[:8]}")
    home = tmp_path / "dagster_home_pg"
    home.mkdir()
    local = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    storage = {"postgres": {"postgres_url": url.replace("postgresql://", "postgresql+psycopg2://", 1)}}
    instance_yaml = {"storage": storage, "concurrency": local["concurrency"], "telemetry": {"enabled": False}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.initialize_concurrency_limit_to_default("source_db")
    return home


def run_two_workers(dagster_home: Path, tmp_path: Path, asset_name: str) -> list[tuple[float, float]]:
    """Two run processes at once, like two launched runs; returns the (start, end) of each step body."""
    steps, runs = tmp_path / f"{asset_name}.steps", tmp_path / f"{asset_name}.runs"
    env = {**__import__("os").environ, "DAGSTER_HOME": str(dagster_home), "PYTHONPATH": str(REPO_ROOT)}
    code = (
        "from tests.test_retries_and_pools import run_pool_worker; "
        f"run_pool_worker({asset_name!r}, {str(steps)!r}, {str(runs)!r})"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE) for _ in "ab"
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr.decode()[-3000:]
    events = [json.loads(line) for line in steps.read_text().splitlines()]
    starts = sorted(e["t"] for e in events if e["event"] == "start")
    ends = sorted(e["t"] for e in events if e["event"] == "end")
    run_starts = sorted(json.loads(line)["t"] for line in runs.read_text().splitlines())
    assert len(starts) == len(ends) == 2
    # Both runs were under way before the first step finished: any serialisation is the pool's doing.
    assert run_starts[1] < ends[0]
    return list(zip(starts, ends, strict=True))


def test_two_runs_needing_a_pool_of_one_never_overlap(postgres_dagster_home, tmp_path):
    (_, first_end), (second_start, _) = run_two_workers(postgres_dagster_home, tmp_path, "pooled_extract")
    assert second_start >= first_end, "the second step ran while the first held the only source_db slot"
    with dg.DagsterInstance.from_config(str(postgres_dagster_home)) as instance:
        limit = instance.event_log_storage.get_concurrency_info("source_db")
        assert limit.slot_count == 1 and limit.active_slot_count == 0


def test_without_a_pool_the_same_runs_overlap(dagster_home, tmp_path):
    """The control: the measurement above can see an overlap when there is one."""
    (_, first_end), (second_start, _) = run_two_workers(dagster_home, tmp_path, "unpooled_extract")
    assert second_start < first_end


def test_dagster_yaml_sets_the_run_queue_and_pool_limits(dagster_home):
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()  # what the run queue daemon reads
        assert concurrency.run_queue_config.max_concurrent_runs == 4
        limits = {limit["key"]: limit["limit"] for limit in concurrency.run_queue_config.tag_concurrency_limits}
        assert limits == {"dagster/backfill": 2}
        assert concurrency.run_queue_config.should_block_op_concurrency_limited_runs
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity.value == "op"
        assert instance.freshness_enabled


# --- priorities ---------------------------------------------------------------------------------------------


def test_gold_runs_are_dequeued_first():
    from dagster._core.storage.tags import PRIORITY_TAG
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    assert priority_tags("build_daily") == {PRIORITY_TAG: "10"}
    assert priority_tags("some_ad_hoc_job") == {PRIORITY_TAG: "0"}
    queued = [dg.DagsterRun(job_name=name, run_id=name, tags=priority_tags(name)) for name in JOB_PRIORITIES]
    ordered = QueuedRunCoordinatorDaemon(interval_seconds=1)._priority_sort(reversed(queued))
    expected = [
        {"build_daily", "forecast_daily"},
        {"extract_oltp", "refresh_unpartitioned"},
        {"retrain_demand_model"},
        {"load_hourly"},
        {"maintain_tables"},
    ]
    names = [run.job_name for run in ordered]
    assert [set(names[:2]), set(names[2:4]), *({name} for name in names[4:])] == expected


# --- the policy table on the real graph -------------------------------------------------------------------


def test_global_policies_on_the_real_assets(settings):
    from assets.bronze.oltp import build_oltp_assets
    from assets.bronze.telemetry import build_telemetry_asset
    from assets.partitions import daily_partitions, hourly_partitions
    from assets.transform.dbt_models import build_dbt_assets
    from jobs import build_jobs
    from resources.environment import build_dbt_project, build_resources

    project = build_dbt_project(settings)
    raw = [
        *build_oltp_assets(),
        build_telemetry_asset(hourly_partitions(settings.start_date)),
        *build_dbt_assets(project, daily_partitions(settings.start_date)),
    ]
    assets = apply_global_policies(raw)
    defs = dg.Definitions(assets=assets, jobs=build_jobs(assets), resources=build_resources(settings, project))
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if not graph.get(key).is_materializable:
            continue  # a dbt source whose asset is not in this list (bronze/weather_forecasts)
        layer, name = key.path
        policy = graph.get(key).freshness_policy
        if layer == "gold" and graph.get(key).partitions_def is None:
            assert policy == GOLD_DAILY_DEADLINE, key
        else:  # partitioned tables are judged on their partitions (tests/test_freshness.py)
            assert policy is None, key
        assert graph.get(key).pools == (
            {"warehouse"} if layer != "bronze" else {"source_db"} if name != "telemetry" else set()
        )

    for before, after in zip(raw, assets, strict=True):
        is_bronze = all(key.path[0] == "bronze" for key in after.keys)
        assert after.op.retry_policy == (NETWORK_RETRY if is_bronze else None), after.op.name
        # The rebuilt op keeps everything else.
        assert after.op.name == before.op.name
        assert after.required_resource_keys == before.required_resource_keys
        assert after.check_keys == before.check_keys
        assert after.partitions_def == before.partitions_def
        assert after.backfill_policy == before.backfill_policy
    for job in defs.jobs:
        defs.resolve_job_def(job.name)  # every job still builds


def test_op_level_policies_must_cover_a_whole_multi_asset():
    @dg.multi_asset(specs=[dg.AssetSpec(["bronze", "a"], group_name="bronze"), dg.AssetSpec(["silver", "b"])])
    def mixed(): ...

    with pytest.raises(ValueError, match="part of the multi-asset mixed"):
        apply_global_policies([mixed])
    with pytest.raises(ValueError, match="already uses pool 'source_db'"):
        with_op_policies(pooled_extract, pool="warehouse")


# --- retries of the real Bronze assets under the global policies ----------------------------------------------


def attempts(result: dg.ExecuteInProcessResult) -> int:
    """How many times the (only) step ran, from the event log: one plus one per STEP_RESTARTED."""
    restarts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    retries = [e for e in result.all_events if e.is_step_up_for_retry]
    assert len(restarts) == len(retries)
    return 1 + len(restarts)


def test_a_bad_telemetry_drop_is_attempted_once(tmp_path):
    from assets.bronze.telemetry import build_telemetry_asset
    from assets.drops.protocol import partition_key
    from assets.partitions import hourly_partitions
    from tests.test_bronze_telemetry import FIRST_HOUR, hour_rows, land, resources

    [asset] = apply_global_policies([build_telemetry_asset(hourly_partitions(FIRST_HOUR.date()))])
    assert asset.op.retry_policy == NETWORK_RETRY
    data_file = land(tmp_path / "landing", FIRST_HOUR, hour_rows(FIRST_HOUR)) / "part-00000.parquet"
    corrupted = bytearray(data_file.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF
    data_file.write_bytes(bytes(corrupted))

    result = dg.materialize(
        [asset], resources=resources(tmp_path), partition_key=partition_key(FIRST_HOUR), raise_on_error=False
    )
    assert not result.success
    assert attempts(result) == 1
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "sha256 check failed" in failure.step_failure_data.error.cause.message
    # Quarantined once, by the only attempt.
    assert len(list((tmp_path / "landing" / "quarantine").rglob("part-00000.parquet"))) == 1


def stations_source(postgres_url: str, capacity_type: str) -> None:
    from tests.test_bronze_oltp import CREATE, execute, row

    execute(
        postgres_url,
        "DROP TABLE IF EXISTS stations",
        CREATE.format(ts="TIMESTAMP").replace("capacity BIGINT", f"capacity {capacity_type}"),
        row(1, "Bellecour", "2026-10-01 08:00:00.000000"),
        row(2, "Part-Dieu", "2026-10-01 09:00:00.000000"),
    )


def materialize_stations(url: str, root: Path) -> dg.ExecuteInProcessResult:
    from assets.bronze.contracts import oltp_contracts
    from assets.bronze.oltp import build_oltp_asset
    from resources.ingestion_guard import IngestionGuard
    from resources.source_db import SourceDatabase
    from tests.test_bronze_oltp import catalog_at

    [asset] = apply_global_policies([build_oltp_asset(oltp_contracts()["stations"])])
    assert asset.op.retry_policy == NETWORK_RETRY
    return dg.materialize(
        [asset],
        resources={
            "source_db": SourceDatabase(url=url),
            "guard": IngestionGuard(data_path=str(root)),
            "iceberg": catalog_at(root),
        },
        raise_on_error=False,
    )


def test_a_source_table_breaking_its_contract_is_attempted_once(tmp_path, postgres_url):
    stations_source(postgres_url, "DOUBLE PRECISION")  # the contract says int64: no lossless cast
    result = materialize_stations(postgres_url, tmp_path)
    assert not result.success
    assert attempts(result) == 1
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "stations" in message and "capacity" in message, message


def postgres_socket(url: str) -> str:
    """The Unix socket the embedded server listens on (its URL is `postgresql://postgres:@/postgres?host=DIR`)."""
    from urllib.parse import parse_qs, urlsplit

    [socket_dir] = parse_qs(urlsplit(url).query)["host"]
    [path] = Path(socket_dir).glob(".s.PGSQL.*[0-9]")
    return str(path)


def test_a_source_lost_mid_extraction_is_retried_and_the_load_completes(tmp_path, postgres_url):
    """The guard's probe finds the source up; the connection is reset as the extraction query is sent. The
    retry (probe and extraction again, on new connections) loads every row once."""
    from tests.tcp_faults import ResettingProxy
    from tests.test_bronze_oltp import bronze_rows

    stations_source(postgres_url, "BIGINT")
    proxy = ResettingProxy(postgres_socket(postgres_url), trigger=b"FROM stations")
    with proxy.running():
        result = materialize_stations(f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres", tmp_path)
    assert result.success
    assert proxy.resets == 1
    assert attempts(result) == 2
    [retry] = [e for e in result.all_events if e.is_step_up_for_retry]
    cause = retry.step_retry_data.error.cause
    assert cause.cls_name == "OperationalError"
    assert "server closed the connection unexpectedly" in cause.message
    assert bronze_rows(tmp_path) == {
        1: ("Bellecour", "2026-10-01 08:00:00"),
        2: ("Part-Dieu", "2026-10-01 09:00:00"),
    }
