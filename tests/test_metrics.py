"""Prometheus metrics: the metrics sensor's textfile, parsed as Prometheus parses it, holds the run counts,
durations, rows, check outcomes and freshness lag of a small real history; and the example alert rules
parse and use only metrics that are exposed."""

import re
from pathlib import Path

import dagster as dg
import pytest
import yaml

from resources.metrics import MetricsTextfile
from resources.settings import REPO_ROOT
from sensors.metrics_sensor import SENSOR_NAME, build_metrics_sensor

RULES = REPO_ROOT / "docs" / "alerting" / "prometheus-rules.yml"


def history_definitions(rows: list[int], fail_on: int) -> dg.Definitions:
    """`bronze/trips` reports the next row count per run and fails on run `fail_on`; `gold/summary` follows
    it; a blocking check on the trips' rows passes only above 100."""
    calls = iter(range(100))

    @dg.asset(key=["bronze", "trips"], group_name="bronze")
    def trips() -> dg.MaterializeResult:
        call = next(calls)
        if call == fail_on:
            raise dg.Failure("source down", allow_retries=False)
        return dg.MaterializeResult(metadata={"dagster/row_count": rows[call]})

    @dg.asset(key=["gold", "summary"], deps=[trips], group_name="gold")
    def summary() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"dagster/row_count": 3})

    @dg.asset_check(asset=trips, name="enough_rows", blocking=False)
    def enough_rows(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        latest = context.instance.get_latest_materialization_event(dg.AssetKey(["bronze", "trips"]))
        count = latest.asset_materialization.metadata["dagster/row_count"].value
        return dg.AssetCheckResult(passed=count > 100, severity=dg.AssetCheckSeverity.WARN)

    return dg.Definitions(
        assets=[trips, summary],
        asset_checks=[enough_rows],
        jobs=[
            dg.define_asset_job("load", selection=[trips]),
            dg.define_asset_job("publish", selection=[summary]),
        ],
        sensors=[build_metrics_sensor()],
    )


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_textfile_holds_the_numbers_of_a_real_history(tmp_path: Path):
    defs = history_definitions(rows=[120, 150, 0, 40], fail_on=2)
    path = tmp_path / "textfile" / "strata.prom"
    with dg.instance_for_test() as instance:
        load = defs.resolve_job_def("load")
        results = [load.execute_in_process(instance=instance, raise_on_error=False) for _ in range(4)]
        assert [r.success for r in results] == [True, True, False, True]
        assert defs.resolve_job_def("publish").execute_in_process(instance=instance).success
        sensor = defs.resolve_sensor_def(SENSOR_NAME)
        with dg.build_sensor_context(
            instance=instance,
            repository_def=defs.get_repository_def(),
            resources={"metrics": MetricsTextfile(path=str(path))},
        ) as context:
            outcome = sensor(context)
        last_load = instance.get_run_record_by_id(results[-1].run_id)
        trips = instance.get_latest_materialization_event(dg.AssetKey(["bronze", "trips"]))

    assert "lines written" in outcome.skip_message
    metrics = parse(path.read_text())

    def value(name: str, **labels: str) -> float:
        return metrics[(name, frozenset(labels.items()))]

    assert value("strata_runs_total", job="load", status="SUCCESS") == 3
    assert value("strata_runs_total", job="load", status="FAILURE") == 1
    assert value("strata_runs_total", job="load", status="CANCELED") == 0
    assert value("strata_runs_total", job="publish", status="SUCCESS") == 1
    assert value("strata_job_last_run_success", job="load") == 1
    assert value("strata_job_last_run_duration_seconds", job="load") == pytest.approx(
        last_load.end_time - last_load.start_time
    )
    assert value("strata_job_last_run_end_timestamp_seconds", job="load") == pytest.approx(last_load.end_time)
    # Rows of the latest materialization: the fourth call's 40, not the failed third's.
    assert value("strata_asset_rows", asset="bronze/trips") == 40
    assert value("strata_asset_rows", asset="gold/summary") == 3
    # The check ran after every successful load; its latest evaluation saw 40 rows and failed.
    assert value("strata_asset_check_passed", asset="bronze/trips", check="enough_rows", severity="WARN") == 0
    generated = value("strata_metrics_generated_timestamp_seconds")
    assert value("strata_asset_last_materialization_timestamp_seconds", asset="bronze/trips") == trips.timestamp
    assert value("strata_asset_freshness_lag_seconds", asset="bronze/trips") == pytest.approx(
        generated - trips.timestamp
    )
    assert not list(path.parent.glob(".*.tmp"))  # the temporary file was renamed, none left behind


def test_off_by_default_the_sensor_writes_nothing(tmp_path: Path):
    defs = history_definitions(rows=[1], fail_on=-1)
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance, repository_def=defs.get_repository_def(), resources={"metrics": MetricsTextfile()}
        ) as context,
    ):
        outcome = defs.resolve_sensor_def(SENSOR_NAME)(context)
    assert outcome.skip_message == "Metrics are off: set STRATA_METRICS_TEXTFILE"


def test_the_example_alert_rules_parse_and_use_exposed_metrics():
    rules = yaml.safe_load(RULES.read_text())
    groups = {group["name"]: group["rules"] for group in rules["groups"]}
    assert set(groups) == {"strata-runs", "strata-freshness", "strata-quality", "strata-exporter"}
    exposed = {
        "strata_runs_total",
        "strata_job_last_run_duration_seconds",
        "strata_job_last_run_success",
        "strata_job_last_run_end_timestamp_seconds",
        "strata_asset_rows",
        "strata_asset_last_materialization_timestamp_seconds",
        "strata_asset_freshness_lag_seconds",
        "strata_asset_check_passed",
        "strata_metrics_generated_timestamp_seconds",
        "strata_metrics_collect_seconds",
    }
    for name, group in groups.items():
        assert group, name
        for rule in group:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            used = set(re.findall(r"\bstrata_[a-z_]+", rule["expr"]))
            assert used and used <= exposed, (rule["alert"], used - exposed)
