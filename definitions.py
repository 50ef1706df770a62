"""The single place that assembles Strata's Definitions for the current environment."""

from __future__ import annotations

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
from jobs.partition_freshness import build_partition_freshness_checks, check_keys, resolve_rules
from jobs.policies import (
    PARTITION_FRESHNESS,
    TABLE_RETENTION,
    apply_global_policies,
    schema_change_severities,
    volume_policies,
)
from jobs.schedules import build_schedules
from resources.environment import build_dbt_project, build_resources
from resources.settings import StrataSettings, load_settings
from sensors.alert_sensors import (
    build_check_failure_alert_sensor,
    build_not_run_alert_sensor,
    build_run_failure_alert_sensor,
)
from sensors.audit_sensor import build_audit_sensor
from sensors.automation_sensor import build_automation_sensors
from sensors.freshness_sensor import build_freshness_alert_sensor
from sensors.lineage_sensor import build_lineage_sensor
from sensors.metrics_sensor import build_metrics_sensor
from sensors.telemetry_drop_sensor import build_telemetry_drop_sensor


def build_definitions(settings: StrataSettings) -> dg.Definitions:
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
    partition_freshness = resolve_rules(PARTITION_FRESHNESS, assets)
    jobs = build_jobs(assets, exclude_checks=check_keys(partition_freshness))
    return dg.Definitions(
        assets=assets,
        asset_checks=[
            *build_quality_checks(partitions_by_asset),
            *build_parity_checks(partitions_by_asset),
            *build_partition_freshness_checks(partition_freshness, assets),
            *retraining_checks,
            *build_forecast_checks(),
            *build_schema_change_checks(schema_change_severities(assets)),
            *build_volume_anomaly_checks(volume_policies(assets), partitions_by_asset),
        ],
        jobs=jobs,
        schedules=build_schedules(jobs),
        sensors=[
            *(build_telemetry_drop_sensor(feed.key.path[-1], feed) for feed in drop_feeds),
            build_audit_sensor(),
            build_lineage_sensor(),
            build_metrics_sensor(),
            *build_automation_sensors(assets),
            build_freshness_alert_sensor(partition_rules=partition_freshness),
            build_run_failure_alert_sensor(),
            build_not_run_alert_sensor(),
            build_check_failure_alert_sensor(),
        ],
        resources=build_resources(settings, dbt_project),
        executor=build_executor(settings),
    )


defs = build_definitions(load_settings())
