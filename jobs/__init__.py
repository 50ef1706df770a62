"""Asset jobs, one per partitioning: a run (and a single-run backfill) spans one partition set.

Assets a dedicated job owns (`DEDICATED_JOBS`: the 02:00 retraining of the demand model) are left out
of their partitioning's job, so a backfill of the daily models does not retrain a model per day.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from jobs.policies import ML_RETRAINING, priority_tags

JOB_BY_PARTITIONING = {
    None: ("refresh_unpartitioned", "OLTP extraction into Bronze and the unpartitioned Silver/Gold models."),
    "hourly": ("load_hourly", "Hourly partitions: Bronze telemetry from landing-zone drops."),
    "daily": ("build_daily", "Daily partitions: incremental Silver/Gold models for a date window."),
}

# job name -> (the assets it owns, with their checks; description)
DEDICATED_JOBS: dict[str, tuple[dg.AssetSelection, str]] = {
    "retrain_demand_model": (
        ML_RETRAINING,
        "Daily 02:00: training features, a candidate demand model, its promotion gate and the promotion.",
    ),
}


def partitioning_of(asset: dg.AssetsDefinition) -> str | None:
    pdef = asset.partitions_def
    if pdef is None:
        return None
    if isinstance(pdef, dg.TimeWindowPartitionsDefinition):
        return "hourly" if pdef.cron_schedule.startswith("0 * ") else "daily"
    raise ValueError(f"asset {asset.key.to_user_string()} has unsupported partitions {pdef}")


def build_jobs(
    assets: Sequence[dg.AssetsDefinition], exclude_checks: Sequence[dg.AssetCheckKey] = ()
) -> list[dg.UnresolvedAssetJobDefinition]:
    """One job per partitioning; `exclude_checks` are checks no job runs (the partition freshness checks,
    which the freshness sensor evaluates at its own clock)."""
    by_partitioning: dict[str | None, list[dg.AssetKey]] = {}
    dedicated = {
        key for selection, _ in DEDICATED_JOBS.values() for key in selection.resolve(assets, allow_missing=True)
    }
    for asset in assets:
        by_partitioning.setdefault(partitioning_of(asset), []).extend(k for k in asset.keys if k not in dedicated)
    excluded = dg.AssetSelection.checks(*exclude_checks)
    dedicated_jobs = [
        dg.define_asset_job(name, selection=selection - excluded, description=text, tags=priority_tags(name))
        for name, (selection, text) in DEDICATED_JOBS.items()
        if selection.resolve(assets, allow_missing=True)
    ]
    return dedicated_jobs + [
        dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*by_partitioning[kind]) - excluded,
            description=text,
            tags=priority_tags(name),
        )
        for kind, (name, text) in JOB_BY_PARTITIONING.items()
        if kind in by_partitioning
    ]
