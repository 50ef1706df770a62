"""Names and paths of the file-drop protocol (DESIGN.md section 5), shared by producers and loaders.

A drop for one hour lives under `<dataset>/dt=YYYY-MM-DD/hour=HH/`; the producer writes the data
files, then `_manifest.json`, then `_READY` last. Kept free of heavy imports: sensors import it.
"""

from __future__ import annotations

from datetime import datetime

MANIFEST_NAME = "_manifest.json"
READY_NAME = "_READY"
ERROR_NAME = "_ERROR.json"
HOURLY_PARTITION_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's HourlyPartitionsDefinition key format


def drop_prefix(dataset: str, hour_start: datetime) -> str:
    """Key prefix (ending in '/') of the drop holding `dataset` for the hour starting at `hour_start`."""
    return f"{dataset}/dt={hour_start:%Y-%m-%d}/hour={hour_start:%H}/"


def manifest_partition(hour_start: datetime) -> dict[str, str]:
    """The `partition` object a manifest must carry for that hour."""
    return {"dt": f"{hour_start:%Y-%m-%d}", "hour": f"{hour_start:%H}"}


def partition_key(hour_start: datetime) -> str:
    return hour_start.strftime(HOURLY_PARTITION_FORMAT)
