"""The READY-marker sensor: completed drops in the landing zone start `bronze/telemetry` runs.

Each tick lists the landing zone incrementally: keys sort by time (`telemetry/dt=YYYY-MM-DD/hour=HH/`),
so the listing starts `LOOKBACK` (72 h) before the newest drop seen, never at the top of
the bucket. The lookback lets a producer re-deliver a recent hour. A drop version is identified by
its prefix and its manifest's etag (md5), read from the listing itself: no manifest is fetched here.
A version already in the ledger of loaded drops is never requested again (an identical re-delivery).
Any other delivery (a new version, or the same bytes re-delivered after a quarantine) is requested
once: the cursor remembers the deliveries requested inside the lookback, and the run key
(prefix@etag@_READY time) lets Dagster drop a request made twice.

The sensor targets the `load_hourly` job, not an implicit asset job, and every request carries that
job's priority tag, so drop runs queue under the same rules as any other `load_hourly` run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dagster as dg

from assets.drops.ledger import loaded_drop_versions
from assets.drops.protocol import MANIFEST_NAME, READY_NAME, drop_prefix, partition_key
from jobs import JOB_BY_PARTITIONING
from jobs.policies import priority_tags
from resources.iceberg import IcebergCatalog
from resources.landing import LandedObject, LandingZone

LOOKBACK = timedelta(hours=72)
# A tick lists at most this many objects (10 S3 pages) and carries on where it stopped next tick, so
# a large backlog never runs into Dagster's 60 s tick timeout.
MAX_OBJECTS_PER_TICK = 10_000
DROP_PATH = re.compile(r"^(?P<dataset>[^/]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/$")


@dataclass(frozen=True)
class ReadyDrop:
    prefix: str
    manifest_etag: str  # "" when the manifest is missing: verification will quarantine the drop
    ready_modified: str  # when _READY was written: one delivery of this drop version
    hour_start: datetime

    @property
    def delivery(self) -> str:
        """The drop version plus its delivery: the run key, so each delivery is requested once."""
        return f"{self.prefix}@{self.manifest_etag or 'no-manifest'}@{self.ready_modified}"


@dataclass
class Listing:
    objects: int = 0
    ready: list[ReadyDrop] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # drop prefixes without _READY yet
    unrecognised: list[str] = field(default_factory=list)  # keys outside the drop layout
    resume_after: str | None = None  # set when the listing stopped early: the next tick starts here


def list_drops(landing: LandingZone, dataset: str, start_after: str | None, limit: int) -> Listing:
    """List at most `limit` objects after `start_after`, whole drops only.

    When more objects follow, the last drop seen may be cut off (`_READY` sorts before the manifest),
    so its objects are left for the next tick, which resumes after the last complete drop.
    """
    objects: list[LandedObject] = []
    truncated = False
    for obj in landing.list_objects(f"{dataset}/", start_after=start_after):
        if len(objects) == limit:
            truncated = True
            break
        objects.append(obj)
    resume_after = None
    if truncated:
        last_prefix = objects[-1].key.rpartition("/")[0] + "/"
        while len(objects) > 1 and objects[-1].key.startswith(last_prefix):
            objects.pop()
        resume_after = objects[-1].key
    listing = group_drops(objects)
    listing.resume_after = resume_after
    return listing


def group_drops(objects: Iterable[LandedObject]) -> Listing:
    """Group a sorted listing into drops: READY ones (with their manifest etag) and incomplete ones."""
    listing = Listing()
    seen: dict[str, dict[str, LandedObject]] = {}
    for obj in objects:
        listing.objects += 1
        prefix, _, name = obj.key.rpartition("/")
        prefix += "/"
        if not DROP_PATH.match(prefix):
            listing.unrecognised.append(obj.key)
            continue
        seen.setdefault(prefix, {})[name] = obj
    for prefix, names in seen.items():
        match = DROP_PATH.match(prefix)
        hour_start = datetime.fromisoformat(f"{match['dt']}T{match['hour']}:00:00")
        if READY_NAME in names:
            manifest = names.get(MANIFEST_NAME)
            etag = manifest.etag if manifest else ""
            listing.ready.append(ReadyDrop(prefix, etag, names[READY_NAME].modified, hour_start))
        else:
            listing.incomplete.append(prefix)
    return listing


@dataclass(frozen=True)
class SensorCursor:
    """Where the next listing starts, and the drop versions requested inside the lookback window."""

    list_after: str = ""
    requested: dict[str, str] = field(default_factory=dict)  # drop prefix -> delivery requested

    @classmethod
    def parse(cls, raw: str | None) -> SensorCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(data.get("list_after", ""), dict(data.get("requested", {})))

    def serialize(self) -> str:
        return json.dumps({"list_after": self.list_after, "requested": self.requested}, sort_keys=True)


def list_after_for(dataset: str, newest: datetime) -> str:
    """The `start_after` key that makes a listing begin at the lookback window's first hour."""
    return drop_prefix(dataset, newest - LOOKBACK).rstrip("/")


def partition_bounds(partitions: dg.PartitionsDefinition) -> tuple[datetime, datetime]:
    """[first hour, end of the last hour) of the hourly partitions, naive UTC: a bounds check per drop
    instead of materialising every partition key each tick."""
    first = partitions.start.replace(tzinfo=None)
    last = partitions.get_last_partition_window()
    return first, (last.end.replace(tzinfo=None) if last else first)


@dataclass
class TickPlan:
    requests: list[dg.RunRequest]
    cursor: SensorCursor
    summary: str


def plan_tick(
    dataset: str,
    listing: Listing,
    cursor: SensorCursor,
    loaded: set[tuple[str, str]],
    partitions: dg.PartitionsDefinition,
    asset_key: dg.AssetKey,
    run_tags: Mapping[str, str] | None = None,
) -> TickPlan:
    """Decide which drops to request; pure, so tests can check every branch without a sensor."""
    first_hour, end = partition_bounds(partitions)
    requests, already_loaded, already_requested, outside = [], [], [], []
    requested = dict(cursor.requested)
    for drop in listing.ready:
        key = partition_key(drop.hour_start)
        if (drop.prefix, drop.manifest_etag) in loaded:
            already_loaded.append(drop.prefix)
        elif requested.get(drop.prefix) == drop.delivery:
            already_requested.append(drop.prefix)
        elif not first_hour <= drop.hour_start < end:
            outside.append(drop.prefix)
        else:
            requested[drop.prefix] = drop.delivery
            requests.append(
                dg.RunRequest(
                    run_key=drop.delivery,
                    partition_key=key,
                    asset_selection=[asset_key],
                    tags={
                        **(run_tags or {}),
                        "strata/drop": drop.prefix,
                        "strata/drop_version": drop.manifest_etag or "none",
                    },
                )
            )
    if listing.resume_after:
        list_after = listing.resume_after
    else:
        newest = max((d.hour_start for d in listing.ready), default=None)
        list_after = max(list_after_for(dataset, newest) if newest else "", cursor.list_after)
    kept = {p: e for p, e in requested.items() if p > list_after}
    summary = (
        f"listed {listing.objects} object(s) after '{cursor.list_after or dataset + '/'}': "
        f"{len(listing.ready)} READY drop(s) -> {len(requests)} requested, {len(already_loaded)} already loaded, "
        f"{len(already_requested)} already requested, {len(outside)} outside the partitions; "
        f"{len(listing.incomplete)} incomplete drop(s) without {READY_NAME}"
    )
    if listing.incomplete:
        summary += f" (e.g. {listing.incomplete[0]})"
    if outside:
        summary += f"; outside the partitions: {outside[:3]}"
    if listing.resume_after:
        summary += f"; stopped after {listing.objects} objects, the next tick resumes after '{list_after}'"
    return TickPlan(requests, SensorCursor(list_after, kept), summary)


LOAD_JOB = JOB_BY_PARTITIONING["hourly"][0]


def build_telemetry_drop_sensor(
    dataset: str, asset: dg.AssetsDefinition, job_name: str = LOAD_JOB
) -> dg.SensorDefinition:
    partitions = asset.partitions_def
    asset_key = asset.key
    run_tags = priority_tags(job_name)

    @dg.sensor(
        name=f"{dataset}_drop_sensor",
        job_name=job_name,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts a {asset_key.to_user_string()} run for every new READY drop under {dataset}/.",
    )
    def telemetry_drop_sensor(
        context: dg.SensorEvaluationContext, landing: LandingZone, iceberg: IcebergCatalog
    ) -> dg.SensorResult:
        cursor = SensorCursor.parse(context.cursor)
        listing = list_drops(landing, dataset, cursor.list_after or None, MAX_OBJECTS_PER_TICK)
        plan = plan_tick(
            dataset, listing, cursor, loaded_drop_versions(iceberg, dataset), partitions, asset_key, run_tags
        )
        context.log.info(plan.summary)
        return dg.SensorResult(
            run_requests=plan.requests,
            cursor=plan.cursor.serialize(),
            skip_reason=None if plan.requests else dg.SkipReason(plan.summary),
        )

    return telemetry_drop_sensor
