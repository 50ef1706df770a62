"""Asset jobs, one per code location and partitioning: a run (and a single-run backfill) spans one
partition set of one location (jobs/locations.py), so every job ships with the code it runs.

The hourly OLTP refresh used to be one job from Bronze to the unpartitioned models; split by location, the
schedule runs `extract_oltp` (ingestion) and the unpartitioned Silver/Gold models follow it by automation
(transforms), as the daily models and the forecast follow their inputs. `refresh_unpartitioned` and
`forecast_daily` remain as jobs for backfills and manual runs.

Assets with a clock of their own get a dedicated job (`DEDICATED_JOBS`) and are left out of their
partitioning's job:
- the 15-minute weather fetch, so the hourly refresh never waits on, or fails with, an outside API;
- the 02:00 retraining of the demand model, so a backfill of the daily models does not retrain a model
  per day;
- the nightly Iceberg table maintenance, so no data run waits on upkeep;
- the daily SLO report, which reads the event log, not the data.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import dagster as dg

from assets.maintenance.iceberg_tables import MAINTENANCE_TABLES
from jobs.locations import location_by_key, location_of
from jobs.policies import ML_RETRAINING, priority_tags

# (code location, partitioning) -> (job name, description)
JOB_BY_PARTITIONING: dict[tuple[str, str | None], tuple[str, str]] = {
    ("ingestion", None): ("extract_oltp", "Hourly: incremental extraction of the OLTP tables into Bronze."),
    ("ingestion", "hourly"): ("load_hourly", "Hourly partitions: the Bronze file-drop feeds from landing-zone drops."),
    ("transforms", None): ("refresh_unpartitioned", "The unpartitioned Silver/Gold models (views, dimensions)."),
    ("transforms", "daily"): ("build_daily", "Daily partitions: incremental Silver/Gold models for a date window."),
    ("analytics", "daily"): ("forecast_daily", "Daily partitions: the demand forecast of a date window."),
    ("analytics", "weekly"): ("publish_weekly_report", "Weekly partitions: the executive report of an ISO week."),
}

# The default executor's choice of running every step in the run worker's process, as a job's default run
# config: a person launching the job can still pick `multiprocess` (or pass `in_process` settings).
IN_PROCESS_RUN_CONFIG = {"execution": {"config": {"in_process": {}}}}

# job name -> (the assets it owns, with their checks; description)
DEDICATED_JOBS: dict[str, tuple[dg.AssetSelection, str]] = {
    "fetch_weather": (
        dg.AssetSelection.assets(["bronze", "weather_forecasts"]),
        "Weather forecasts from the weather API into Bronze (every 15 minutes).",
    ),
    "retrain_demand_model": (
        ML_RETRAINING,
        "Daily 02:00: training features, a candidate demand model, its promotion gate and the promotion.",
    ),
    "maintain_tables": (
        dg.AssetSelection.assets(MAINTENANCE_TABLES),
        "Iceberg table maintenance: compaction, snapshot expiry, orphan files (daily, its own clock).",
    ),
    "report_slo": (
        dg.AssetSelection.groups("platform"),
        "Daily 06:30: the SLO figures of the previous day's runs per asset group, published (its own clock).",
    ),
}


def partitioning_of(asset: dg.AssetsDefinition) -> str | None:
    pdef = asset.partitions_def
    if pdef is None:
        return None
    if isinstance(pdef, dg.TimeWindowPartitionsDefinition):
        _minute, hour, _day, _month, weekday = pdef.cron_schedule.split()
        return "hourly" if hour == "*" else "weekly" if weekday != "*" else "daily"
    raise ValueError(f"asset {asset.key.to_user_string()} has unsupported partitions {pdef}")


def job_of(asset: dg.AssetsDefinition, owner: dict[dg.AssetKey, str]) -> str:
    """The name of the job that holds `asset`: its location's job for its partitioning."""
    slot = (location_of(asset, owner), partitioning_of(asset))
    if slot not in JOB_BY_PARTITIONING:
        raise ValueError(f"no job for {asset.node_def.name}: add {slot} to JOB_BY_PARTITIONING")
    return JOB_BY_PARTITIONING[slot][0]


def build_jobs(
    assets: Sequence[dg.AssetsDefinition],
    exclude_checks: Sequence[dg.AssetCheckKey] = (),
    in_process: Collection[str] = (),
) -> list[dg.UnresolvedAssetJobDefinition]:
    """One job per code location and partitioning; `exclude_checks` are checks no job runs (the partition
    freshness checks, which the freshness sensor evaluates at its own clock). The jobs named in
    `in_process` run their steps in the run worker's process by default (jobs/policies.py IN_PROCESS_JOBS)."""
    by_job: dict[str, list[dg.AssetKey]] = {}
    owner = location_by_key(assets)
    materialized = {key for asset in assets for key in asset.keys}
    owned = {
        name: selection.resolve(assets, allow_missing=True) & materialized
        for name, (selection, _) in DEDICATED_JOBS.items()
    }
    dedicated = set().union(*owned.values())
    for asset in assets:
        keys = [k for k in asset.keys if k not in dedicated]
        if keys:
            by_job.setdefault(job_of(asset, owner), []).extend(keys)
    excluded = dg.AssetSelection.checks(*exclude_checks)
    dedicated_jobs = [
        dg.define_asset_job(name, selection=selection - excluded, description=text, tags=priority_tags(name))
        for name, (selection, text) in DEDICATED_JOBS.items()
        if owned[name]
    ]
    return dedicated_jobs + [
        dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*by_job[name]) - excluded,
            description=text,
            tags=priority_tags(name),
            config=IN_PROCESS_RUN_CONFIG if name in in_process else None,
        )
        for name, text in JOB_BY_PARTITIONING.values()
        if name in by_job
    ]
