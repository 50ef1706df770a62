"""Code locations as data: which assets each deployable unit owns.

Strata ships as three code locations, each its own code server and image, so that a change to the ML
code redeploys (and can roll back) ML alone while ingestion keeps loading. The asset keys do not
change with the split: a location depends on another's assets by key, and Dagster joins the three
into one lineage graph in the UI and in the automation daemon.

Every location is cut from the same whole graph (the global policies applied once to every asset),
so an asset gets the same policy whichever process loads it. Jobs, schedules and sensors are then
built per location from its own assets only: a job or sensor never targets another location's
assets. The sensors that read the whole instance (audit record, run-failure, not-run, blocking-check
and freshness alerts) belong to exactly one location, `PLATFORM_SENSORS_LOCATION`, so each run is
recorded and alerted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from jobs.policies import BRONZE, DBT_MODELS, ML, REPORTS


@dataclass(frozen=True)
class CodeLocation:
    name: str
    assets: dg.AssetSelection
    purpose: str

    @property
    def module_path(self) -> str:
        """The file its code server loads (workspace.yaml locally, the chart's user deployment in prod)."""
        return f"locations/{self.name}.py"


CODE_LOCATIONS: list[CodeLocation] = [
    CodeLocation(
        "ingestion",
        BRONZE | dg.AssetSelection.groups("maintenance"),
        "Source systems into Bronze: OLTP extraction, verified telemetry drops, the weather API; Iceberg upkeep.",
    ),
    CodeLocation("transforms", DBT_MODELS, "The dbt project: Silver and Gold models and their tests."),
    CodeLocation(
        "analytics",
        ML | REPORTS | dg.AssetSelection.groups("platform"),
        "ML (features, retraining, forecast), the weekly report and the SLO report.",
    ),
]
# The most stable location (it changes least, so it restarts least) watches the whole instance.
PLATFORM_SENSORS_LOCATION = "ingestion"
LOCATION_NAMES = [location.name for location in CODE_LOCATIONS]


def location_by_key(assets: Sequence[dg.AssetsDefinition]) -> dict[dg.AssetKey, str]:
    """Asset key -> the location that owns it; an asset in no location or in two is a configuration error."""
    owner: dict[dg.AssetKey, str] = {}
    for location in CODE_LOCATIONS:
        for key in location.assets.resolve(assets, allow_missing=True):
            if key in owner:
                raise ValueError(f"{key.to_user_string()} is in two code locations: {owner[key]} and {location.name}")
            owner[key] = location.name
    if unplaced := sorted(key.to_user_string() for asset in assets for key in asset.keys if key not in owner):
        raise ValueError(f"assets in no code location (jobs/locations.py): {', '.join(unplaced)}")
    return owner


def location_of(asset: dg.AssetsDefinition, owner: dict[dg.AssetKey, str]) -> str:
    """The one location of a (multi-)asset: its op runs in one code server, so all its keys must agree."""
    names = {owner[key] for key in asset.keys}
    if len(names) != 1:
        raise ValueError(f"{asset.node_def.name} spans code locations {sorted(names)}; split it or move its assets")
    return names.pop()


def assets_in(location: str, assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    if location not in LOCATION_NAMES:
        raise ValueError(f"unknown code location {location!r}; the locations are {', '.join(LOCATION_NAMES)}")
    owner = location_by_key(assets)
    return [asset for asset in assets if asset.keys and location_of(asset, owner) == location]
