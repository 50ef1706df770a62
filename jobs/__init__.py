"""Asset jobs, one per partitioning: a run (and a single-run backfill) spans one partition set."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from assets.maintenance.iceberg_tables import MAINTENANCE_GROUP
from jobs.policies import priority_tags

JOB_BY_PARTITIONING = {
    None: ("refresh_unpartitioned", "OLTP extraction into Bronze and the unpartitioned Silver/Gold models."),
    "hourly": ("load_hourly", "Hourly partitions: Bronze telemetry from landing-zone drops."),
    "daily": ("build_daily", "Daily partitions: incremental Silver/Gold models for a date window."),
    MAINTENANCE_GROUP: ("maintain_tables", "Iceberg table maintenance: compaction, snapshot expiry, orphan files."),
}


def partitioning_of(asset: dg.AssetsDefinition) -> str | None:
    """The job an asset belongs to: by partitioning, except upkeep, which runs on its own clock."""
    if set(asset.group_names_by_key.values()) == {MAINTENANCE_GROUP}:
        return MAINTENANCE_GROUP
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
    for asset in assets:
        by_partitioning.setdefault(partitioning_of(asset), []).extend(asset.keys)
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
    ]
