"""The READY-marker sensor of a file-drop feed: completed drops in the landing zone start runs of its
Bronze asset (one sensor per feed, `<feed>_drop_sensor`; the examples below use `telemetry`).

Each tick lists the landing zone incrementally: keys sort by time (`telemetry/dt=YYYY-MM-DD/hour=HH/`),
so the listing starts `LOOKBACK` (72 h) before the newest drop of an existing partition, never at
the top of the bucket. The lookback lets a producer re-deliver (or finish) a recent hour; the cursor
moves only over keys that can no longer change, so a drop dated in the future is listed again until
its hour exists instead of pulling the cursor past today's drops. Landed keys are outside input: a
key that is not `<dataset>/dt=YYYY-MM-DD/hour=HH/<file>` is skipped and reported in the tick
summary, never an error that stops the sensor. A drop version is identified by
its prefix and its manifest's etag (md5), read from the listing itself: no manifest is fetched here.
A version already in the ledger of loaded drops is never requested again (an identical re-delivery).
Any other delivery (a new version, or the same bytes re-delivered after a quarantine) is requested
once: the cursor remembers the deliveries requested inside the lookback, and the run key
(prefix@etag@_READY time) lets Dagster drop a request made twice.

The sensor targets the `load_hourly` job, not an implicit asset job, and every request carries that
job's priority tag, so drop runs queue under the same rules as any other `load_hourly` run. Each request
names the checks it runs: those of the job on the asset. A request naming only its asset would run every
check of the asset, the partition-freshness check too, which the job leaves out (the freshness sensor
judges it at its own clock; a drop run would judge it against the run's wall clock).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dagster as dg

from assets.drops.ledger import loaded_drop_versions
from assets.drops.protocol import (
    DROP_LAYOUT,
    MANIFEST_NAME,
    READY_NAME,
    DropKeyError,
    drop_prefix,
    parse_drop_prefix,
    partition_key,
)
from jobs import JOB_BY_PARTITIONING
from jobs.policies import priority_tags
from resources.iceberg import IcebergCatalog
from resources.landing import LandedObject, LandingZone

LOOKBACK = timedelta(hours=72)
# A tick lists at most this many objects (10 S3 pages) and carries on where it stopped next tick, so
# a large backlog never runs into Dagster's 60 s tick timeout.
MAX_OBJECTS_PER_TICK = 10_000
OFF_LAYOUT_EXAMPLES = 3  # folders named in the tick summary; the count covers every key


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


@dataclass(frozen=True)
class OffLayoutKey:
    """A listed key that is no file of a drop folder, and why: reported so its producer can be fixed."""

    key: str
    reason: str


@dataclass
class Listing:
    objects: int = 0
    ready: list[ReadyDrop] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # drop prefixes without _READY yet
    unrecognised: list[OffLayoutKey] = field(default_factory=list)  # keys outside the drop layout
    resume_after: str | None = None  # set when the listing stopped early: the next tick starts here


def list_drops(landing: LandingZone, dataset: str, start_after: str | None, limit: int) -> Listing:
    """List at most `limit` objects after `start_after`, whole drops only.

    When more objects follow, the last drop seen may be cut off (`_READY` sorts before the manifest),
    so its objects are left for the next tick, which resumes after the last complete drop. Only a drop
    folder is kept whole: a key outside every drop (a stray file at the top of the dataset, whose
    folder holds every key) cuts nothing, and a drop too big for one tick is listed in parts.
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
        cut = enclosing_drop(objects[-1].key)
        if cut and not objects[0].key.startswith(cut):
            while objects[-1].key.startswith(cut):
                objects.pop()
        resume_after = objects[-1].key
    listing = group_drops(objects)
    listing.resume_after = resume_after
    return listing


def enclosing_drop(key: str) -> str | None:
    """The drop folder holding `key` (directly or in a sub-folder), None for a key outside every drop."""
    parts = key.split("/", 3)
    if len(parts) < 4:
        return None
    prefix = "/".join(parts[:3]) + "/"
    try:
        parse_drop_prefix(parts[0], prefix)
    except DropKeyError:
        return None
    return prefix


def group_drops(objects: Iterable[LandedObject]) -> Listing:
    """Group a sorted listing into drops: READY ones (with their manifest etag) and incomplete ones.

    Each folder is parsed once; keys of folders outside the layout are set aside with the reason.
    """
    listing = Listing()
    drops: dict[str, tuple[datetime, dict[str, LandedObject]]] = {}
    off_layout: dict[str, str] = {}  # folder -> why it holds no drop
    for obj in objects:
        listing.objects += 1
        prefix, _, name = obj.key.rpartition("/")
        prefix += "/"
        if prefix not in drops and prefix not in off_layout:
            try:  # the dataset is the first segment: the listing is under `<dataset>/`
                drops[prefix] = (parse_drop_prefix(prefix.partition("/")[0], prefix), {})
            except DropKeyError as error:
                off_layout[prefix] = error.reason
        if prefix in off_layout:
            listing.unrecognised.append(OffLayoutKey(obj.key, off_layout[prefix]))
        else:
            drops[prefix][1][name] = obj
    for prefix, (hour_start, names) in drops.items():
        if READY_NAME in names:
            manifest = names.get(MANIFEST_NAME)
            etag = manifest.etag if manifest else ""
            listing.ready.append(ReadyDrop(prefix, etag, names[READY_NAME].modified, hour_start))
        else:
            listing.incomplete.append(prefix)
    return listing


@dataclass(frozen=True)
class SensorCursor:
    """Where the next listing starts, and the drop versions requested inside the lookback window.

    `list_after` is the start of the lookback window: every key up to it is final. `resume_after`
    is where a listing cut off by `MAX_OBJECTS_PER_TICK` carries on; once a listing reaches the end,
    the next one starts again at `list_after`, so drops skipped on the way (dated in the future, not
    READY yet) are listed again.
    """

    list_after: str = ""
    requested: dict[str, str] = field(default_factory=dict)  # drop prefix -> delivery requested
    resume_after: str | None = None

    @property
    def start_after(self) -> str:
        """The key the next listing starts after ("" for the top of the dataset)."""
        return max(self.resume_after or "", self.list_after)

    @classmethod
    def parse(cls, raw: str | None) -> SensorCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(data.get("list_after", ""), dict(data.get("requested", {})), data.get("resume_after"))

    def serialize(self) -> str:
        data = {"list_after": self.list_after, "requested": self.requested}
        if self.resume_after:
            data["resume_after"] = self.resume_after
        return json.dumps(data, sort_keys=True)


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
    check_keys: Sequence[dg.AssetCheckKey] | None = None,
) -> TickPlan:
    """Decide which drops to request; pure, so tests can check every branch without a sensor."""
    first_hour, end = partition_bounds(partitions)
    requests, already_loaded, already_requested, outside = [], [], [], []
    requested = dict(cursor.requested)
    newest = None  # the newest READY drop of an existing partition: it anchors the lookback window
    for drop in listing.ready:
        in_partitions = first_hour <= drop.hour_start < end
        if in_partitions:
            newest = drop.hour_start if newest is None else max(newest, drop.hour_start)
        if (drop.prefix, drop.manifest_etag) in loaded:
            already_loaded.append(drop.prefix)
        elif requested.get(drop.prefix) == drop.delivery:
            already_requested.append(drop.prefix)
        elif not in_partitions:
            outside.append(drop.prefix)
        else:
            requested[drop.prefix] = drop.delivery
            requests.append(
                dg.RunRequest(
                    run_key=drop.delivery,
                    partition_key=partition_key(drop.hour_start),
                    asset_selection=[asset_key],
                    asset_check_keys=check_keys,
                    tags={
                        **(run_tags or {}),
                        "strata/drop": drop.prefix,
                        "strata/drop_version": drop.manifest_etag or "none",
                    },
                )
            )
    # The window moves only with drops of existing partitions, so a drop dated after them is listed
    # again until its hour exists. A window past the lookback before the last partition can only come
    # from an older version that followed a future drop: it is distrusted and the listing starts over
    # (as for a lost cursor; the ledger and run keys keep the requests exactly once).
    list_after = cursor.list_after
    if list_after > list_after_for(dataset, end - timedelta(hours=1)):
        list_after = ""
    if newest is not None:
        list_after = max(list_after, list_after_for(dataset, newest))
    kept = {p: e for p, e in requested.items() if p > list_after}
    summary = (
        f"listed {listing.objects} object(s) after '{cursor.start_after or dataset + '/'}': "
        f"{len(listing.ready)} READY drop(s) -> {len(requests)} requested, {len(already_loaded)} already loaded, "
        f"{len(already_requested)} already requested, {len(outside)} outside the partitions; "
        f"{len(listing.incomplete)} incomplete drop(s) without {READY_NAME}"
    )
    if listing.incomplete:
        summary += f" (e.g. {listing.incomplete[0]})"
    if outside:
        summary += f"; outside the partitions: {outside[:3]}"
    if listing.unrecognised:
        summary += "; " + off_layout_summary(dataset, listing.unrecognised)
    if listing.resume_after:
        summary += f"; stopped after {listing.objects} objects, the next tick resumes after '{listing.resume_after}'"
    return TickPlan(requests, SensorCursor(list_after, kept, listing.resume_after), summary)


def off_layout_summary(dataset: str, keys: list[OffLayoutKey]) -> str:
    """The count of keys outside the layout and one example key per folder, for the first few folders."""
    examples: dict[str, OffLayoutKey] = {}
    for off in keys:
        examples.setdefault(off.key.rpartition("/")[0], off)
    named = ", ".join(f"'{off.key}' ({off.reason})" for off in list(examples.values())[:OFF_LAYOUT_EXAMPLES])
    more = f" and {len(examples) - OFF_LAYOUT_EXAMPLES} more folder(s)" if len(examples) > OFF_LAYOUT_EXAMPLES else ""
    return f"{len(keys)} key(s) outside the layout {dataset}/{DROP_LAYOUT}<file>, skipped: {named}{more}"


LOAD_JOB = JOB_BY_PARTITIONING[("ingestion", "hourly")][0]


def checks_of_job(
    repository: dg.RepositoryDefinition | None, job_name: str, asset_key: dg.AssetKey
) -> list[dg.AssetCheckKey] | None:
    """The checks on `asset_key` that a run of `job_name` executes; None without a repository (a sensor
    evaluated on its own, in a unit test), i.e. every check of the asset."""
    if repository is None:
        return None
    checks = repository.get_job(job_name).asset_layer.asset_graph.asset_check_keys
    return sorted((key for key in checks if key.asset_key == asset_key), key=lambda key: key.name)


def build_drop_sensor(dataset: str, asset: dg.AssetsDefinition, job_name: str = LOAD_JOB) -> dg.SensorDefinition:
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
    def drop_sensor(
        context: dg.SensorEvaluationContext, landing: LandingZone, iceberg: IcebergCatalog
    ) -> dg.SensorResult:
        cursor = SensorCursor.parse(context.cursor)
        listing = list_drops(landing, dataset, cursor.start_after or None, MAX_OBJECTS_PER_TICK)
        checks = checks_of_job(context.repository_def, job_name, asset_key)
        loaded = loaded_drop_versions(iceberg, dataset)
        plan = plan_tick(dataset, listing, cursor, loaded, partitions, asset_key, run_tags, checks)
        # A producer writing outside the layout is an operator's problem: a warning, not routine info.
        (context.log.warning if listing.unrecognised else context.log.info)(plan.summary)
        return dg.SensorResult(
            run_requests=plan.requests,
            cursor=plan.cursor.serialize(),
            skip_reason=None if plan.requests else dg.SkipReason(plan.summary),
        )

    return drop_sensor
