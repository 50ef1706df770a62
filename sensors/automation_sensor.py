"""The sensor that evaluates the assets' automation conditions (jobs/policies.py AUTOMATION_CONDITIONS).

Dagster would create a default one that starts stopped; ours runs from the first `make dev`, so a
drop that completes a day's telemetry carries on through Silver, Gold and ML by itself, and every
evaluation (requested or held back, and why) is visible on the asset's Automation tab.
"""

from __future__ import annotations

import dagster as dg

AUTOMATION_SENSOR = "quality_gated_automation_sensor"


def build_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Requests Silver, Gold and ML partitions whose inputs updated and passed their blocking checks.",
    )
