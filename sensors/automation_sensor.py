"""The sensors that evaluate the assets' automation conditions (jobs/policies.py AUTOMATION_CONDITIONS).

Dagster would create a default one that starts stopped; ours run from the first `make dev`, so a
drop that completes a day's telemetry carries on through Silver, Gold and ML by itself, and every
evaluation (requested or held back, and why) is visible on the asset's Automation tab.

Runs started by automation use Dagster's implicit asset job, so they would not get the tags of the
job the assets belong to. There is one sensor per job instead (`jobs.JOB_BY_PARTITIONING`: the daily
models of `build_daily`, the unpartitioned ones of `refresh_unpartitioned`, the forecast of
`forecast_daily`), each stamping its runs with that job's `dagster/priority`: an automated daily build
queues exactly like a `build_daily` run. A job belongs to one code location, so each sensor targets its
own location's assets only; the daemon still evaluates their conditions on the whole workspace graph,
so an input in another location (Bronze for the models, Gold for the forecast) counts as usual.
Pools are set on the assets' ops, so they hold in any job. The sensors request runs, not backfills
(`emit_backfills=False`): a backfill would count against the run queue's backfill limit meant for
people's backfills, and its runs' tags are not the sensor's to set.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from jobs import job_of
from jobs.locations import location_by_key
from jobs.policies import priority_tags

AUTOMATION_SENSOR_PREFIX = "quality_gated_automation"


def automation_sensor_name(job_name: str) -> str:
    return f"{AUTOMATION_SENSOR_PREFIX}_{job_name}"


def build_automation_sensors(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AutomationConditionSensorDefinition]:
    """One running automation sensor per job that holds assets with an automation condition."""
    keys_by_job: dict[str, list[dg.AssetKey]] = {}
    owner = location_by_key(assets)
    for asset in assets:
        automated = [spec.key for spec in asset.specs if spec.automation_condition is not None]
        if automated:
            keys_by_job.setdefault(job_of(asset, owner), []).extend(automated)
    return [
        dg.AutomationConditionSensorDefinition(
            automation_sensor_name(job_name),
            target=dg.AssetSelection.assets(*keys),
            run_tags=priority_tags(job_name),
            emit_backfills=False,
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=60,
            description=(
                f"Requests the {job_name} assets whose inputs are complete, updated and passed their blocking "
                f"checks; its runs carry the {job_name} priority."
            ),
        )
        for job_name, keys in sorted(keys_by_job.items())
    ]
