"""What a user does in the UI, through the same GraphQL API, against a real `dagster dev` on 127.0.0.1.

The partition launcher's backfill over `bronze/telemetry` hours plus the daily models must rebuild every
selected asset (the hourly -> daily chain maps hours to days), and each partitioned check must report its
latest evaluation for a partition that ran as passed, not "not evaluated".
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from definitions import build_definitions
from jobs.backfill import range_tags
from tests.conftest import TEST_START
from tests.support import generate_demo, refresh_unpartitioned

REPO = Path(__file__).resolve().parents[1]
DAYS = 2
pytestmark = pytest.mark.slow

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""
PARTITIONINGS = """
query { assetNodes { assetKey { path } dependencyKeys { path } partitionDefinition { type } } }"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill { status } }
}"""
CHECK_EXECUTIONS = """
query($assetKey: AssetKeyInput!, $checkName: String!, $partition: String) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, partition: $partition, limit: 1) {
    status partition evaluation { success }
  }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:  # the launcher's 500s carry the reason in the body
        raise AssertionError(f"HTTP {error.code}: {error.read().decode()[:2000]}") from error
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture
def dagster_dev(settings, tmp_path) -> Iterator[tuple[int, dg.Definitions, Path]]:
    """Demo data, the unpartitioned models built, then `dagster dev` (webserver + daemon) on a free port."""
    generate_demo(settings, TEST_START, DAYS)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    # The instance's automation stays off: with it on, the daemon builds the same days the moment they are
    # complete, racing the backfills under test. The drop sensor stays on and finds nothing new to load.
    with (home / "dagster.yaml").open("a") as config:
        config.write("\nauto_materialize:\n  enabled: false\n")
    defs = build_definitions(settings)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Every hour loaded once (one run: the job's single-run backfill policy), so every view over Bronze
        # exists and the drop sensor's ledger holds every drop; then the unpartitioned models.
        last_hour = f"{TEST_START + timedelta(days=DAYS - 1):%Y-%m-%d}-23:00"
        loaded = defs.resolve_job_def("load_hourly").execute_in_process(
            instance=instance, tags=range_tags(f"{TEST_START:%Y-%m-%d}-00:00", last_hour)
        )
        assert loaded.success
        assert refresh_unpartitioned(defs, instance).success
    port = free_port()
    log = (tmp_path / "dagster_dev.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "dagster_dev.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "dagster dev did not start within 180 s"
                time.sleep(2)
        yield port, defs, home
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        log.close()


@pytest.mark.timeout(2400)  # two backfills through the real daemon; the global 900 s is too tight when loaded
def test_ui_backfills_of_bronze_hours_with_their_daily_models_and_of_the_daily_models_alone(dagster_dev):
    """The two slices a user launches: every daily model alone (roots: the days), then the hourly Bronze with
    the daily models downstream of it (roots: the hours). Dagster refuses a backfill whose roots have
    different partitionings (hours of `bronze/telemetry` beside the days of `gold/fct_bookings`, which no
    hourly asset feeds); the two launches together cover the whole partitioned graph."""
    port, defs, home = dagster_dev
    graph = defs.resolve_asset_graph()
    telemetry = dg.AssetKey(["bronze", "telemetry"])
    # The daily data assets: those of the daily build and the forecast, two code locations in one backfill
    # (the model retraining is daily too, but a decision on its own 02:00 clock, not data a backfill rebuilds).
    daily = sorted(
        key
        for job in ("build_daily", "forecast_daily")
        for key in defs.resolve_job_def(job).asset_layer.selected_asset_keys
        if isinstance(graph.get(key).partitions_def, dg.DailyPartitionsDefinition)
    )
    downstream_daily = sorted(set(daily) & dg.AssetSelection.assets(telemetry).downstream().resolve(graph))
    assert len(downstream_daily) >= 4 and len(downstream_daily) < len(daily)
    hours = [f"{TEST_START + timedelta(days=d):%Y-%m-%d}-{h:02d}:00" for d in range(DAYS) for h in range(24)]
    days = [f"{TEST_START + timedelta(days=d):%Y-%m-%d}" for d in range(DAYS)]

    nodes = {"/".join(n["assetKey"]["path"]): n for n in graphql(port, PARTITIONINGS, {})["assetNodes"]}
    served = {
        k.to_user_string(): (
            (nodes[k.to_user_string()]["partitionDefinition"] or {}).get("type"),
            sorted("/".join(d["path"]) for d in nodes[k.to_user_string()]["dependencyKeys"]),
        )
        for k in [telemetry, *daily]
    }
    expected = {
        k.to_user_string(): ("TIME_WINDOW", sorted(p.to_user_string() for p in graph.get(k).parent_keys))
        for k in [telemetry, *daily]
    }
    assert served == expected, "the webserver serves another graph than the definitions"

    # 1. The daily models alone, every one of them (roots: the days).
    backfill(port, daily, days)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        missing = {
            key.to_user_string(): sorted(set(days) - instance.get_materialized_partitions(key))
            for key in daily
            if set(days) - instance.get_materialized_partitions(key)
        }
        before = {key: latest_materializations(instance, key) for key in [telemetry, *daily]}
    assert missing == {}, f"daily assets the backfill left out: {missing}"

    # 2. Bronze hours plus the daily models downstream (roots: the hours, mapped onto their days): every
    # selected partition is materialized again, nothing else is.
    backfill(port, [telemetry, *downstream_daily], hours)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        after = {key: latest_materializations(instance, key) for key in [telemetry, *daily]}
    rebuilt = {
        key.to_user_string(): sorted(p for p, storage_id in after[key].items() if storage_id > before[key].get(p, 0))
        for key in [telemetry, *daily]
    }
    assert rebuilt == {
        key.to_user_string(): (hours if key == telemetry else days if key in downstream_daily else [])
        for key in [telemetry, *daily]
    }

    # Each partitioned check of a partition that ran reports its own result, for that partition.
    for key, check, partition in (
        (telemetry, "vehicle_id_not_null", hours[5]),
        (dg.AssetKey(["silver", "telemetry_clean"]), "vehicle_id_not_null", days[1]),
    ):
        executions = graphql(
            port, CHECK_EXECUTIONS, {"assetKey": {"path": key.path}, "checkName": check, "partition": partition}
        )["assetCheckExecutions"]
        assert [(e["status"], e["partition"], e["evaluation"]["success"]) for e in executions] == [
            ("SUCCEEDED", partition, True)
        ], (key.to_user_string(), check)


def latest_materializations(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, int]:
    """Partition -> storage id of its latest materialization (ids grow: a rebuild has a larger one)."""
    return dict(
        instance.event_log_storage.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION)
    )


def backfill(port: int, selection: list[dg.AssetKey], partitions: list[str]) -> None:
    """Launch what the UI's launcher launches, and wait until the daemon has run it all."""
    launched = graphql(
        port,
        LAUNCH,
        {"params": {"assetSelection": [{"path": k.path} for k in selection], "partitionNames": partitions}},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline = time.monotonic() + 900
    finished = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
    while (status := _status(port, launched["backfillId"])) not in finished:
        assert time.monotonic() < deadline, f"backfill still {status} after 900 s"
        time.sleep(5)
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), status


def _status(port: int, backfill_id: str) -> str:
    result = graphql(port, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    return result.get("status", result["__typename"])
