"""Lineage out: a real two-day run of the whole graph, its OpenLineage events sent by the lineage sensor to
a local HTTP receiver. Every event validates against the OpenLineage schema (tests/openlineage_schema.py),
every run and every asset partition gets exactly one START and one COMPLETE, and the datasets and
partitions in the events are exactly the tables and partitions the runs materialized, with their rows.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import dagster as dg
import pytest

from audit.lineage import child_run_id
from resources.lineage import LineageRefused, OpenLineageSink, build_lineage_sink
from resources.secrets import SecretsResource
from resources.settings import StrataSettings, load_settings
from sensors.lineage_sensor import SENSOR_NAME
from tests.conftest import TEST_START
from tests.local_http import QuietHandler, serve_http
from tests.openlineage_schema import schema_errors
from tests.support import backfilled_platform

pytestmark = pytest.mark.slow  # one whole-graph two-day backfill for the module

DAYS = [TEST_START, TEST_START + timedelta(days=1)]


@dataclass
class Receiver:
    """What the stand-in OpenLineage endpoint received; `status` is what it answers."""

    events: list[dict] = field(default_factory=list)
    paths: set[str] = field(default_factory=set)
    authorizations: set[str | None] = field(default_factory=set)
    status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)


def receiver_handler(receiver: Receiver) -> type[QuietHandler]:
    class LineageHandler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if receiver.status == 200:
                with receiver.lock:
                    receiver.events.append(json.loads(body))
                    receiver.paths.add(self.path)
                    receiver.authorizations.add(self.headers.get("Authorization"))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return LineageHandler


@dataclass
class TwoDays:
    settings: StrataSettings
    defs: dg.Definitions
    instance: dg.DagsterInstance
    run_ids: dict[str, str]  # job -> run id


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoDays]:
    with backfilled_platform(tmp_path_factory.mktemp("openlineage"), DAYS) as (settings, defs, instance, summary):
        yield TwoDays(settings, defs, instance, {job: run_id for job, run_id, _, _ in summary.runs})


def sink(**fields) -> OpenLineageSink:
    return OpenLineageSink(secrets=SecretsResource(), **fields)


def tick(two_days: TwoDays, sink: OpenLineageSink, cursor: str | None = None):
    sensor = two_days.defs.get_sensor_def(SENSOR_NAME)
    resources = {
        "lineage": sink,
        "iceberg": two_days.defs.resources["iceberg"],
        "warehouse": two_days.defs.resources["warehouse"],
    }
    with dg.build_sensor_context(
        instance=two_days.instance,
        cursor=cursor,
        repository_def=two_days.defs.get_repository_def(),
        resources=resources,
    ) as context:
        return sensor(context)


def materialized(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str | None], dict]:
    """(asset, partition) -> metadata values of every materialization of the run."""
    out = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.dagster_event.event_specific_data.materialization
        out[(mat.asset_key.to_user_string(), mat.partition)] = {k: v.value for k, v in mat.metadata.items()}
    return out


def test_off_by_default_the_sensor_sends_nothing(two_days: TwoDays):
    result = tick(two_days, sink())
    assert isinstance(result, dg.SkipReason)
    assert "OpenLineage is off" in result.skip_message


def test_every_event_of_a_two_day_run_validates_and_names_the_runs_datasets_and_partitions(two_days: TwoDays):
    receiver = Receiver(status=503)
    with serve_http(receiver_handler(receiver)) as server:
        http = sink(url=f"http://127.0.0.1:{server.server_address[1]}")
        # The endpoint is down: the tick fails and keeps no cursor, so nothing is lost.
        with pytest.raises(Exception, match="503"):
            tick(two_days, http)
        receiver.status = 200
        result = tick(two_days, http)
        again = tick(two_days, http, cursor=result.cursor)
    assert receiver.paths == {"/api/v1/lineage"}
    assert receiver.authorizations == {None}  # no key named, no Authorization header
    assert "0 OpenLineage event(s) sent" in again.skip_reason.skip_message  # the cursor moved past the runs

    events = receiver.events
    for event in events:
        assert schema_errors(event) == [], (event["job"]["name"], event["eventType"])

    by_run: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_run[event["run"]["runId"]].append(event)
    # Each OpenLineage run (a Dagster run, or an asset partition of one) has one START and one COMPLETE.
    for run_id, run_events in by_run.items():
        assert Counter(e["eventType"] for e in run_events) == {"START": 1, "COMPLETE": 1}, run_id
        start, complete = sorted(run_events, key=lambda e: e["eventType"] != "START")
        assert start["eventTime"] <= complete["eventTime"]

    iceberg_namespace = two_days.defs.resources["iceberg"].warehouse
    warehouse_namespace = f"duckdb://{two_days.settings.duckdb_path}"
    for job, run_id in two_days.run_ids.items():
        assert [e["job"] for e in by_run[run_id]] == [
            {"namespace": "strata", "name": job, "facets": by_run[run_id][0]["job"]["facets"]}
        ] * 2
        expected = materialized(two_days.instance, run_id)
        children = [
            e
            for e in events
            if e["eventType"] == "COMPLETE"
            and e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") == run_id
        ]
        # The datasets and partitions in the events are exactly those the run materialized, with their rows.
        seen = {}
        for event in children:
            (output,) = event["outputs"]
            subset = output["outputFacets"].get("subset")
            partition = subset["outputCondition"]["partitions"][0]["identifier"] if subset else None
            asset = event["job"]["name"]
            assert event["run"]["runId"] == child_run_id(run_id, asset, partition)
            seen[(asset, partition)] = output
        assert set(seen) == set(expected), job
        for (asset, partition), output in seen.items():
            meta = expected[(asset, partition)]
            layer = asset.split("/")[0]
            namespace = warehouse_namespace if layer in ("silver", "gold", "gold_restricted") else iceberg_namespace
            assert (output["namespace"], output["name"]) == (namespace, meta["dagster/table_name"]), asset
            # A partition's own rows, never the table's total (a daily view of both days has no per-day count).
            rows = meta.get("dagster/partition_row_count") if partition else meta.get("dagster/row_count")
            statistics = output["outputFacets"].get("outputStatistics")
            assert (statistics["rowCount"] if statistics else None) == rows, (asset, partition)
            columns = [f["name"] for f in output["facets"]["schema"]["fields"]]
            assert columns == [c.name for c in meta["dagster/column_schema"].columns], asset

    # The two-day range run: every daily model and the forecast, for both days and no other.
    daily = {
        (e["job"]["name"], e["outputs"][0]["outputFacets"]["subset"]["outputCondition"]["partitions"][0]["identifier"])
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"] == "gold/kpi_daily"
    }
    assert daily == {("gold/kpi_daily", f"{d:%Y-%m-%d}") for d in DAYS}
    hours = {
        e["outputs"][0]["outputFacets"]["subset"]["outputCondition"]["partitions"][0]["identifier"]
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"] == "bronze/telemetry"
    }
    assert len(hours) == 48 and min(hours) == f"{DAYS[0]:%Y-%m-%d}-00:00"

    # A dbt model's job carries its SQL, its inputs are its upstream tables, and the code version is tagged.
    kpi = next(e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == "gold/kpi_daily")
    assert kpi["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 1  # one KPI row a day
    assert "fct_bookings" in kpi["job"]["facets"]["sql"]["query"]
    assert kpi["job"]["facets"]["sql"]["dialect"] == "duckdb"
    assert {(i["namespace"], i["name"]) for i in kpi["inputs"]} == {
        (warehouse_namespace, "gold.fct_bookings"),
        (warehouse_namespace, "gold.fleet_health_daily"),
        (warehouse_namespace, "silver.stg_payments"),
    }
    tags = {t["key"]: t["value"] for t in kpi["run"]["facets"]["tags"]["tags"]}
    assert tags["code_version"] and tags["git_sha"]
    assert kpi["run"]["facets"]["nominalTime"]["nominalStartTime"].startswith(f"{DAYS[0]:%Y-%m-%d}T00:00") or kpi[
        "run"
    ]["facets"]["nominalTime"]["nominalStartTime"].startswith(f"{DAYS[1]:%Y-%m-%d}T00:00")


def test_a_file_target_gets_the_same_events(two_days: TwoDays, tmp_path):
    path = tmp_path / "lineage" / "events.jsonl"
    tick(two_days, sink(file_path=str(path)))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines and all(schema_errors(event) == [] for event in lines)
    assert {e["run"]["runId"] for e in lines} >= set(two_days.run_ids.values())


def test_the_api_key_is_read_by_name_at_send_time_and_sent_only_as_a_bearer_header(
    two_days: TwoDays, monkeypatch: pytest.MonkeyPatch
):
    key = "ol-key-" + "7f3a9c" * 4
    monkeypatch.setenv("STRATA_SECRET_OPENLINEAGE__API_KEY", key)
    receiver = Receiver()
    with serve_http(receiver_handler(receiver)) as server:
        monkeypatch.setenv("STRATA_OPENLINEAGE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("STRATA_OPENLINEAGE_API_KEY_SECRET", "openlineage/api_key")
        settings = load_settings()
        http = build_lineage_sink(settings, two_days.defs.resources["secrets"])
        assert key not in repr(http) and http.api_key_secret == "openlineage/api_key"
        tick(two_days, http)
    assert receiver.events and receiver.authorizations == {f"Bearer {key}"}


@pytest.mark.parametrize(
    ("url", "dropped"),
    [
        ("https://svc:pa55-w0rd-x9@marquez.example:5000/", "user info"),
        ("https://tok-3c1d9e8f7a6b@marquez.example", "user info"),
        ("https://marquez.example/?api_key=k-3c1d9e8f7a6b&env=prod", "query parameter api_key"),
    ],
)
def test_credentials_in_the_url_never_reach_resource_config_and_nothing_is_sent(
    two_days: TwoDays, url: str, dropped: str
):
    planted = {"pa55-w0rd-x9", "tok-3c1d9e8f7a6b", "k-3c1d9e8f7a6b"}
    settings = load_settings({"STRATA_OPENLINEAGE_URL": url})
    http = build_lineage_sink(settings, SecretsResource())
    config = json.dumps(http._convert_to_config_dictionary())  # what Dagster stores and shows as its config
    assert [value for value in planted if value in config] == []
    assert http.url.startswith("https://marquez.example") and http.dropped_url_credentials == dropped
    with pytest.raises(LineageRefused, match="STRATA_OPENLINEAGE_API_KEY_SECRET") as refused:
        tick(two_days, http)
    assert dropped in str(refused.value) and not any(value in str(refused.value) for value in planted)
