"""The single place that assembles Strata's Definitions for the current environment.

Strata deploys as three code locations (jobs/locations.py), each loaded by its own file under
`locations/`. All of them are cut here from one platform: the whole asset graph with the global
policies applied once, its checks, resources and executor. `build_definitions` is the single-location
view, the merge of the three: the same assets, jobs, schedules and sensors in one Definitions, for the
tests, the benchmarks and the backfill CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import dagster as dg

from assets.bronze.oltp import build_oltp_assets
from assets.bronze.telemetry import build_drop_assets
from assets.bronze.weather import weather_forecasts
from assets.maintenance.iceberg_tables import build_table_maintenance_asset
from assets.ml.demand_forecast import build_demand_forecast_asset, build_forecast_checks
from assets.ml.training import build_retraining_assets
from assets.partitions import daily_partitions, hourly_partitions, weekly_partitions
from assets.quality.checks import build_quality_checks
from assets.quality.parity_checks import build_parity_checks
from assets.quality.schema_change import build_schema_change_checks
from assets.quality.volume_anomaly import build_volume_anomaly_checks
from assets.reports.slo import build_slo_report_asset
from assets.reports.weekly import build_weekly_report_asset
from assets.transform.dbt_models import build_dbt_assets
from jobs import build_jobs
from jobs.executor import build_executor
from jobs.locations import LOCATION_NAMES, PLATFORM_SENSORS_LOCATION, assets_in, location_by_key
from jobs.partition_freshness import (
    PartitionRule,
    build_partition_freshness_checks,
    check_keys,
    resolve_rules,
)
from jobs.policies import (
    IN_PROCESS_JOBS,
    PARTITION_FRESHNESS,
    TABLE_RETENTION,
    apply_global_policies,
    schema_change_severities,
    volume_policies,
)
from jobs.schedules import SCHEDULES, build_schedules
from resources.environment import build_dbt_project, build_resources
from resources.settings import StrataSettings, load_settings
from sensors.alert_sensors import (
    build_check_failure_alert_sensor,
    build_not_run_alert_sensor,
    build_run_failure_alert_sensor,
)
from sensors.audit_sensor import build_audit_sensor
from sensors.automation_sensor import build_automation_sensors
from sensors.drop_sensor import build_drop_sensor
from sensors.freshness_sensor import build_freshness_alert_sensor
from sensors.lineage_sensor import build_lineage_sensor
from sensors.metrics_sensor import build_metrics_sensor


@dataclass(frozen=True)
class Platform:
    """What every code location is cut from. One object per resource and one executor, so that the
    locations built from one Platform merge into the single-location view."""

    assets: list[dg.AssetsDefinition]
    checks: list[dg.AssetChecksDefinition]  # the partition freshness checks are built per location
    partition_freshness: dict[dg.AssetKey, PartitionRule]
    drop_feeds: list[dg.AssetsDefinition]  # one hourly Bronze asset per file-drop feed of the contracts
    resources: dict[str, object]
    executor: dg.ExecutorDefinition

    def all_check_keys(self) -> list[dg.AssetCheckKey]:
        """Every check of every location: the dbt tests on the models, the suites, the freshness checks."""
        return [
            *(key for asset in self.assets for key in asset.check_keys),
            *(key for checks in self.checks for key in checks.check_keys),
            *check_keys(self.partition_freshness),
        ]

    def freshness_policies(self) -> dict[dg.AssetKey, dg.FreshnessPolicy]:
        return {
            spec.key: spec.freshness_policy
            for asset in self.assets
            for spec in asset.specs
            if spec.freshness_policy is not None
        }


def build_platform(settings: StrataSettings) -> Platform:
    dbt_project = build_dbt_project(settings)
    drop_feeds = build_drop_assets(hourly_partitions(settings.start_date))
    daily = daily_partitions(settings.start_date)
    retraining, retraining_checks = build_retraining_assets(daily)
    assets = apply_global_policies(
        [
            *build_oltp_assets(),
            *drop_feeds,
            weather_forecasts,
            build_table_maintenance_asset(TABLE_RETENTION),
            *build_dbt_assets(dbt_project, daily, settings.dbt_docs_url),
            *retraining,
            build_demand_forecast_asset(daily),
            build_weekly_report_asset(weekly_partitions(settings.start_date)),
            build_slo_report_asset(daily),
        ]
    )
    partitions_by_asset = {key: asset.partitions_def for asset in assets for key in asset.keys}
    return Platform(
        assets=assets,
        checks=[
            *build_quality_checks(partitions_by_asset),
            *build_parity_checks(partitions_by_asset),
            *retraining_checks,
            *build_forecast_checks(),
            *build_schema_change_checks(schema_change_severities(assets)),
            # A multi-asset check runs in one code server: one per location of the assets it covers.
            *build_volume_anomaly_checks(volume_policies(assets), partitions_by_asset, location_by_key(assets)),
        ],
        partition_freshness=resolve_rules(PARTITION_FRESHNESS, assets),
        drop_feeds=drop_feeds,
        resources=build_resources(settings, dbt_project),
        executor=build_executor(settings),
    )


def checks_in(
    location: str, checks: list[dg.AssetChecksDefinition], owner: dict[dg.AssetKey, str]
) -> list[dg.AssetChecksDefinition]:
    """The check definitions on `location`'s assets; one spanning two locations has no code server to run in."""
    found = []
    for definition in checks:
        locations = {owner[key.asset_key] for key in definition.check_keys}
        if len(locations) > 1:
            raise ValueError(f"the checks {definition.node_def.name} span code locations {sorted(locations)}")
        if locations == {location}:
            found.append(definition)
    return found


def build_location(location: str, settings: StrataSettings, platform: Platform | None = None) -> dg.Definitions:
    """One code location: its own assets and their checks, and the jobs, schedules and sensors that target
    them; the location named by PLATFORM_SENSORS_LOCATION also runs the sensors that watch every location."""
    platform = platform or build_platform(settings)
    owner = location_by_key(platform.assets)
    assets = assets_in(location, platform.assets)
    keys = {key for asset in assets for key in asset.keys}
    freshness = {key: rule for key, rule in platform.partition_freshness.items() if key in keys}
    # In Kubernetes each step keeps its own pod; elsewhere the jobs whose steps take turns run in one process.
    in_process = IN_PROCESS_JOBS if settings.executor != "k8s" else {}
    jobs = build_jobs(assets, exclude_checks=check_keys(freshness), in_process=in_process)
    job_names = {job.name for job in jobs}
    sensors: list[dg.SensorDefinition] = [*build_automation_sensors(assets)]
    sensors += [build_drop_sensor(feed.key.path[-1], feed) for feed in platform.drop_feeds if feed.key in keys]
    if location == PLATFORM_SENSORS_LOCATION:
        whole = whole_platform(settings, platform)
        sensors += [
            build_audit_sensor(),
            build_lineage_sensor(whole),
            build_metrics_sensor(repository=whole),
            build_freshness_alert_sensor(
                partition_rules=platform.partition_freshness, policies=platform.freshness_policies()
            ),
            build_run_failure_alert_sensor(),
            build_not_run_alert_sensor(),
            build_check_failure_alert_sensor(check_keys=platform.all_check_keys()),
        ]
    return dg.Definitions(
        assets=assets,
        asset_checks=[
            *checks_in(location, platform.checks, owner),
            *build_partition_freshness_checks(freshness, assets, name=f"{location}_partition_freshness_checks"),
        ],
        jobs=jobs,
        schedules=build_schedules(jobs, [policy for policy in SCHEDULES if policy.job in job_names]),
        sensors=sensors,
        resources=platform.resources,
        executor=platform.executor,
    )


def whole_platform(settings: StrataSettings, platform: Platform) -> Callable[[], dg.RepositoryDefinition]:
    """Every location's definitions as one repository, built on first use: the lineage and metrics sensors
    run in one location but name the tables, jobs and checks of all of them."""

    @cache
    def repository() -> dg.RepositoryDefinition:
        return dg.Definitions.merge(
            *(build_location(name, settings, platform) for name in LOCATION_NAMES)
        ).get_repository_def()

    return repository


def build_definitions(settings: StrataSettings) -> dg.Definitions:
    """The single-location view: every code location merged into one Definitions."""
    platform = build_platform(settings)
    return dg.Definitions.merge(*(build_location(name, settings, platform) for name in LOCATION_NAMES))


def __getattr__(name: str) -> dg.Definitions:
    """`defs`, the single-location view, built on first use (`dagster ... -m definitions`, the tests): a code
    location's entry file imports this module for `build_location` only and so never builds the merge."""
    if name != "defs":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    defs = globals()["defs"] = build_definitions(load_settings())
    return defs


def __dir__() -> list[str]:
    return sorted([*globals(), "defs"])  # Dagster's module loader finds `defs` by listing the module
