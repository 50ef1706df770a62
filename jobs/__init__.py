"""Asset jobs, one per partitioning: a run (and a single-run backfill) spans one partition set.

An asset with a clock of its own gets a job of its own (`OWN_JOBS`): the 15-minute weather fetch, so the
hourly refresh of the unpartitioned models never waits on, or fails with, an outside API; the nightly
table maintenance, so no data run waits on upkeep."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from assets.maintenance.iceberg_tables import MAINTENANCE_TABLES
from jobs.policies import priority_tags

JOB_BY_PARTITIONING = {
    None: ("refresh_unpartitioned", "OLTP extraction into Bronze and the unpartitioned Silver/Gold models."),
    "hourly": ("load_hourly", "Hourly partitions: Bronze telemetry from landing-zone drops."),
    "daily": ("build_daily", "Daily partitions: incremental Silver/Gold models for a date window."),
    "weekly": ("publish_weekly_report", "Weekly partitions: the executive report of an ISO week, published."),
}
OWN_JOBS: dict[dg.AssetKey, tuple[str, str]] = {
    dg.AssetKey(["bronze", "weather_forecasts"]): (
        "fetch_weather",
        "Weather forecasts from the weather API into Bronze (every 15 minutes).",
    ),
    MAINTENANCE_TABLES: (
        "maintain_tables",
        "Iceberg table maintenance: compaction, snapshot expiry, orphan files (daily, its own clock).",
    ),
}


def partitioning_of(asset: dg.AssetsDefinition) -> str | None:
    """The job an asset belongs to, by partitioning (assets in `OWN_JOBS` aside)."""
    pdef = asset.partitions_def
    if pdef is None:
        return None
    if isinstance(pdef, dg.TimeWindowPartitionsDefinition):
        _minute, hour, _day, _month, weekday = pdef.cron_schedule.split()
        return "hourly" if hour == "*" else "weekly" if weekday != "*" else "daily"
    raise ValueError(f"asset {asset.key.to_user_string()} has unsupported partitions {pdef}")


def build_jobs(
    assets: Sequence[dg.AssetsDefinition], exclude_checks: Sequence[dg.AssetCheckKey] = ()
) -> list[dg.UnresolvedAssetJobDefinition]:
    """One job per partitioning; `exclude_checks` are checks no job runs (the partition freshness checks,
    which the freshness sensor evaluates at its own clock)."""
    by_partitioning: dict[str | None, list[dg.AssetKey]] = {}
    own: list[tuple[str, str, dg.AssetKey]] = []
    for asset in assets:
        for key in asset.keys:
            if key in OWN_JOBS:
                own.append((*OWN_JOBS[key], key))
            else:
                by_partitioning.setdefault(partitioning_of(asset), []).append(key)
    excluded = dg.AssetSelection.checks(*exclude_checks)
    return [
        dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*by_partitioning[kind]) - excluded,
            description=text,
            tags=priority_tags(name),
        )
        for kind, (name, text) in JOB_BY_PARTITIONING.items()
        if kind in by_partitioning
    ] + [
        dg.define_asset_job(name, selection=dg.AssetSelection.assets(key), description=text, tags=priority_tags(name))
        for name, text, key in own
    ]
