"""The metrics sensor: the platform's Prometheus metrics (audit/metrics.py), written to a textfile each tick.

A run emits nothing: the numbers are read back from the instance after the fact, in a few queries per
tick, so the cost to a run is nil and a missed tick loses nothing (the next one reads the same storage).
With no textfile configured (the default) a tick reads nothing and skips.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg

from audit.metrics import render_metrics, scope_of
from resources.metrics import MetricsTextfile

SENSOR_NAME = "prometheus_metrics_sensor"


def build_metrics_sensor(
    minimum_interval_seconds: int = 60, repository: Callable[[], dg.RepositoryDefinition] | None = None
) -> dg.SensorDefinition:
    """`repository`: the definitions whose jobs, assets and checks are reported, when they are not the
    sensor's own code location's (it runs in one location and reports all of them)."""

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Writes run counts and durations, rows, check outcomes and freshness lag per asset in the "
            "Prometheus text format to STRATA_METRICS_TEXTFILE (node-exporter's textfile collector). "
            "Off (skips) when it is not set. Launches no runs."
        ),
    )
    def prometheus_metrics_sensor(context: dg.SensorEvaluationContext, metrics: MetricsTextfile) -> dg.SkipReason:
        if not metrics.enabled:
            return dg.SkipReason("Metrics are off: set STRATA_METRICS_TEXTFILE")
        began = time.perf_counter()
        text = render_metrics(context.instance, scope_of(repository() if repository else context.repository_def))
        metrics.write(text)
        return dg.SkipReason(f"{text.count(chr(10))} lines written in {time.perf_counter() - began:.2f} s")

    return prometheus_metrics_sensor
