"""Prometheus metrics of the platform, read from the Dagster instance (runs, materializations, checks).

Exposed in the Prometheus text format by the metrics sensor (sensors/metrics_sensor.py), which writes
them to a file for node-exporter's textfile collector. Nothing is counted inside a run: every number is
read back from storage in a handful of queries per tick, so a run pays nothing and the numbers survive
restarts (a counter here is the count in storage, not a process's tally).

What is exposed (label values are job names, asset keys `layer/table`, check names):
- `strata_runs_total{job,status}`: finished runs (SUCCESS, FAILURE, CANCELED) of each job;
- `strata_job_last_run_duration_seconds{job}`, `strata_job_last_run_success{job}` (1/0) and
  `strata_job_last_run_end_timestamp_seconds{job}`: each job's latest finished run;
- `strata_asset_rows{asset}`: the table's rows at its latest materialization (`dagster/row_count`);
- `strata_asset_last_materialization_timestamp_seconds{asset}` and
  `strata_asset_freshness_lag_seconds{asset}` (now minus that time);
- `strata_asset_check_passed{asset,check,severity}`: the latest evaluation of each check (1/0);
- `strata_metrics_generated_timestamp_seconds`, `strata_metrics_collect_seconds`: the exporter itself, so
  a stale file can be alerted on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dagster as dg

FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


@dataclass(frozen=True)
class MetricsScope:
    """What to report on: the code location's jobs, assets and checks."""

    jobs: Sequence[str]
    assets: Sequence[dg.AssetKey]
    checks: Sequence[dg.AssetCheckKey]


def scope_of(repository: dg.RepositoryDefinition) -> MetricsScope:
    graph = repository.asset_graph
    return MetricsScope(
        jobs=sorted(job.name for job in repository.get_all_jobs()),
        assets=sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()),
        checks=sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)),
    )


def _families(instance: dg.DagsterInstance, scope: MetricsScope, now: float) -> Iterator[object]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    runs = CounterMetricFamily("strata_runs", "Finished runs of each job by status", labels=["job", "status"])
    duration = GaugeMetricFamily(
        "strata_job_last_run_duration_seconds", "Wall time of the job's latest finished run", labels=["job"]
    )
    success = GaugeMetricFamily("strata_job_last_run_success", "1 if the latest finished run succeeded", labels=["job"])
    ended = GaugeMetricFamily(
        "strata_job_last_run_end_timestamp_seconds", "End time of the job's latest finished run", labels=["job"]
    )
    for job in scope.jobs:
        for status in FINISHED:
            count = instance.get_runs_count(dg.RunsFilter(job_name=job, statuses=[status]))
            runs.add_metric([job, status.value], count)
        latest = instance.get_run_records(
            dg.RunsFilter(job_name=job, statuses=list(FINISHED)), limit=1, order_by="update_timestamp", ascending=False
        )
        if latest and latest[0].start_time and latest[0].end_time:
            record = latest[0]
            duration.add_metric([job], record.end_time - record.start_time)
            success.add_metric([job], 1.0 if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS else 0.0)
            ended.add_metric([job], record.end_time)
    yield from (runs, duration, success, ended)

    rows = GaugeMetricFamily("strata_asset_rows", "Rows of the table at its latest materialization", labels=["asset"])
    last = GaugeMetricFamily(
        "strata_asset_last_materialization_timestamp_seconds", "Time of the latest materialization", labels=["asset"]
    )
    lag = GaugeMetricFamily(
        "strata_asset_freshness_lag_seconds", "Seconds since the latest materialization", labels=["asset"]
    )
    for key, entry in instance.get_latest_materialization_events(scope.assets).items():
        if entry is None or entry.asset_materialization is None:
            continue
        name = key.to_user_string()
        last.add_metric([name], entry.timestamp)
        lag.add_metric([name], max(0.0, now - entry.timestamp))
        value = getattr(entry.asset_materialization.metadata.get("dagster/row_count"), "value", None)
        if isinstance(value, int | float):
            rows.add_metric([name], value)
    yield from (rows, last, lag)

    passed = GaugeMetricFamily(
        "strata_asset_check_passed", "1 if the check's latest evaluation passed", labels=["asset", "check", "severity"]
    )
    latest_checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(scope.checks))
    for key in scope.checks:
        execution = latest_checks.get(key)
        evaluation = execution.evaluation if execution is not None else None
        if evaluation is None:  # planned or still running: no outcome yet
            continue
        labels = [key.asset_key.to_user_string(), key.name, evaluation.severity.value]
        passed.add_metric(labels, 1.0 if evaluation.passed else 0.0)
    yield passed


def render_metrics(instance: dg.DagsterInstance, scope: MetricsScope, now: float | None = None) -> str:
    """The Prometheus text exposition of the instance's state (see the module docstring)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    began = time.perf_counter()
    now = time.time() if now is None else now
    families = list(_families(instance, scope, now))
    generated = GaugeMetricFamily("strata_metrics_generated_timestamp_seconds", "When these metrics were read")
    generated.add_metric([], now)
    collect = GaugeMetricFamily("strata_metrics_collect_seconds", "Time taken to read these metrics from storage")
    collect.add_metric([], time.perf_counter() - began)

    class Snapshot:
        def collect(self) -> Iterator[object]:
            yield from (*families, generated, collect)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())
    return generate_latest(registry).decode()
