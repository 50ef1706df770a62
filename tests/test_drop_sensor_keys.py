"""The drop sensor's handling of landed keys, which are outside input: a key outside the layout is
reported and skipped (never an error), a drop dated in the future never moves the cursor past today's
drops, and over arbitrary generated key sets each complete drop of an existing partition is requested
exactly once. Local landing zone under tmp (fast); the S3 variant of the bad-key case is in
tests/test_drop_sensor.py."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.bronze.telemetry import build_telemetry_asset
from assets.drops.protocol import MANIFEST_NAME, READY_NAME, DropKeyError, drop_prefix, parse_drop_prefix
from assets.partitions import hourly_partitions
from resources.iceberg import IcebergCatalog
from resources.landing import LandingZone
from sensors.drop_sensor import LOOKBACK, SensorCursor, build_drop_sensor, list_drops, plan_tick

DATASET = "telemetry"
START = datetime(2026, 10, 1, 0)
FUTURE = datetime(2099, 1, 1, 7)


# --- the key layout -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("telemetry/dt=2026-10-01/hour=24/", "hour='24' is not an hour 00..23"),
        ("telemetry/dt=2026-10-01/hour=5/", "hour='5' is not an hour 00..23"),
        ("telemetry/dt=2026-10-01/hour=19h/", "hour='19h' is not an hour 00..23"),
        ("telemetry/dt=2026-10-01/hour=\u0660\u0665/", "hour='\u0660\u0665' is not an hour 00..23"),  # Arabic-Indic
        ("telemetry/dt=2026-13-01/hour=05/", "dt='2026-13-01' is not a date YYYY-MM-DD"),
        ("telemetry/dt=2026-02-30/hour=05/", "dt='2026-02-30' is not a date YYYY-MM-DD"),
        ("telemetry/dt=20261001/hour=05/", "dt='20261001' is not a date YYYY-MM-DD"),
        ("telemetry/dt=0000-01-01/hour=05/", "dt='0000-01-01' is not a date YYYY-MM-DD"),
        ("telemetry/", "not in a telemetry/dt=YYYY-MM-DD/hour=HH/ folder"),
        ("telemetry/dt=2026-10-01/", "not in a telemetry/dt=YYYY-MM-DD/hour=HH/ folder"),
        ("telemetry/dt=2026-10-01/hour=05/sub/", "not in a telemetry/dt=YYYY-MM-DD/hour=HH/ folder"),
        ("telemetry/DT=2026-10-01/hour=05/", "not in a telemetry/dt=YYYY-MM-DD/hour=HH/ folder"),
        ("bookings/dt=2026-10-01/hour=05/", "not in a telemetry/dt=YYYY-MM-DD/hour=HH/ folder"),
    ],
)
def test_a_folder_outside_the_layout_is_refused_with_the_part_that_is_wrong(prefix: str, reason: str) -> None:
    with pytest.raises(DropKeyError) as refused:
        parse_drop_prefix(DATASET, prefix)
    assert (refused.value.prefix, refused.value.reason) == (prefix, reason)
    assert str(refused.value) == f"{prefix!r}: {reason}"


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23)))
def test_parsing_a_drop_prefix_inverts_writing_it(moment: datetime) -> None:
    hour = moment.replace(minute=0, second=0, microsecond=0)
    assert parse_drop_prefix(DATASET, drop_prefix(DATASET, hour)) == hour


@given(st.text(max_size=12), st.text(max_size=6))
def test_a_folder_is_either_refused_or_exactly_the_layout_of_its_hour(day: str, hour: str) -> None:
    prefix = f"{DATASET}/dt={day}/hour={hour}/"
    try:
        parsed = parse_drop_prefix(DATASET, prefix)
    except DropKeyError:
        return
    assert drop_prefix(DATASET, parsed) == prefix


# --- the sensor on a local landing zone -----------------------------------------------------------


def put(landing: LandingZone, prefix: str, ready: bool = True) -> None:
    """A drop folder with a manifest (content unique to the folder) and, if `ready`, `_READY`."""
    landing.write_bytes(prefix + MANIFEST_NAME, prefix.encode())
    if ready:
        landing.write_bytes(prefix + READY_NAME, b"")


@pytest.fixture
def local(tmp_path: Path):
    landing = LandingZone(root=str(tmp_path / "landing"))
    iceberg = IcebergCatalog(uri=f"sqlite:///{tmp_path / 'cat.db'}", warehouse=f"file://{tmp_path / 'wh'}")
    sensor = build_drop_sensor(DATASET, build_telemetry_asset(hourly_partitions(START.date())))

    def tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"landing": landing, "iceberg": iceberg}
        )
        return sensor(context)

    return landing, tick


def summary_of(result: dg.SensorResult) -> str:
    return result.skip_reason.skip_message if result.skip_reason else ""


def test_keys_outside_the_layout_are_reported_and_skipped_and_later_drops_still_load(local) -> None:
    landing, tick = local
    put(landing, drop_prefix(DATASET, START))
    put(landing, "telemetry/dt=2026-10-01/hour=24/")  # READY: used to make every tick raise
    put(landing, "telemetry/dt=2026-13-01/hour=05/")
    put(landing, "telemetry/dt=2026-10-02/hour=19h/", ready=False)
    landing.write_bytes("telemetry/notes.txt", b"a stray file at the top")
    put(landing, drop_prefix(DATASET, START + timedelta(days=1, hours=3)))
    with dg.instance_for_test() as instance:
        first = tick(instance)
        assert sorted(r.partition_key for r in first.run_requests) == ["2026-10-01-00:00", "2026-10-02-03:00"]
        assert first.skip_reason is None  # requests were made; the summary went to the tick log

        second = tick(instance, first.cursor)
        assert second.run_requests == []
        assert summary_of(second).endswith(
            "; 6 key(s) outside the layout telemetry/dt=YYYY-MM-DD/hour=HH/<file>, skipped: "
            "'telemetry/dt=2026-10-01/hour=24/_READY' (hour='24' is not an hour 00..23), "
            "'telemetry/dt=2026-10-02/hour=19h/_manifest.json' (hour='19h' is not an hour 00..23), "
            "'telemetry/dt=2026-13-01/hour=05/_READY' (dt='2026-13-01' is not a date YYYY-MM-DD) "
            "and 1 more folder(s)"
        )
        assert "2 READY drop(s) -> 0 requested, 0 already loaded, 2 already requested" in summary_of(second)

        # A drop of a later hour is still requested: the bad keys stopped nothing.
        put(landing, drop_prefix(DATASET, START + timedelta(days=1, hours=4)))
        assert [r.partition_key for r in tick(instance, second.cursor).run_requests] == ["2026-10-02-04:00"]


def test_a_drop_dated_in_the_future_does_not_blind_the_sensor_to_todays_drops(local) -> None:
    landing, tick = local
    put(landing, drop_prefix(DATASET, START))
    put(landing, drop_prefix(DATASET, FUTURE))
    with dg.instance_for_test() as instance:
        first = tick(instance)
        assert [r.partition_key for r in first.run_requests] == ["2026-10-01-00:00"]
        # The window is anchored on the newest drop of an existing partition, not on the future one.
        assert SensorCursor.parse(first.cursor).list_after == drop_prefix(DATASET, START - LOOKBACK).rstrip("/")

        put(landing, drop_prefix(DATASET, START + timedelta(hours=1)))
        second = tick(instance, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["2026-10-01-01:00"]

        third = tick(instance, second.cursor)
        assert third.run_requests == []
        assert "1 outside the partitions" in summary_of(third)
        assert "outside the partitions: ['telemetry/dt=2099-01-01/hour=07/']" in summary_of(third)


def test_a_cursor_an_older_version_moved_past_today_is_mended(local) -> None:
    landing, tick = local
    put(landing, drop_prefix(DATASET, START))
    poisoned = SensorCursor(list_after=drop_prefix(DATASET, FUTURE - LOOKBACK).rstrip("/")).serialize()
    with dg.instance_for_test() as instance:
        first = tick(instance, poisoned)
        assert first.run_requests == []  # this tick still listed after the old cursor
        assert SensorCursor.parse(first.cursor).list_after == ""  # distrusted: the next listing starts over
        assert [r.partition_key for r in tick(instance, first.cursor).run_requests] == ["2026-10-01-00:00"]


def test_a_listing_cut_at_a_stray_file_keeps_the_drops_before_it_whole(tmp_path: Path) -> None:
    """The folder of a file at the top of the dataset holds every key: it must not cut the drops."""
    landing = LandingZone(root=str(tmp_path))
    hours = [START, START + timedelta(hours=1)]
    for hour in hours:
        put(landing, drop_prefix(DATASET, hour))
    landing.write_bytes("telemetry/notes.txt", b"stray")
    landing.write_bytes("telemetry/zz.txt", b"stray")
    listing = list_drops(landing, DATASET, None, limit=5)
    assert [(d.prefix, d.manifest_etag) for d in listing.ready] == [
        (drop_prefix(DATASET, h), hashlib.md5(drop_prefix(DATASET, h).encode()).hexdigest()) for h in hours
    ]
    assert listing.resume_after == "telemetry/notes.txt"
    assert [off.key for off in listing.unrecognised] == ["telemetry/notes.txt"]


def test_a_drop_too_big_for_one_tick_is_listed_in_parts_not_one_object_a_tick(tmp_path: Path) -> None:
    landing = LandingZone(root=str(tmp_path))
    prefix = drop_prefix(DATASET, START)
    put(landing, prefix)
    for i in range(4):
        landing.write_bytes(f"{prefix}part-{i:05d}.parquet", b"rows")
    first = list_drops(landing, DATASET, None, limit=4)
    assert [d.prefix for d in first.ready] == [prefix]
    assert first.resume_after == f"{prefix}part-00001.parquet"
    rest = list_drops(landing, DATASET, first.resume_after, limit=4)
    assert (rest.objects, rest.resume_after, rest.incomplete) == (2, None, [prefix])


# --- property: arbitrary key sets -----------------------------------------------------------------

HOURS = st.integers(min_value=-12, max_value=24 * 7)  # hours after START; negative: before the partitions
SEGMENT = st.text(alphabet="adhortxyz=-_019٣é", min_size=1, max_size=14)  # never '.', '/', or empty
BAD_HOUR = st.sampled_from(["24", "99", "5", "19h", "", "0x", "\u0660\u0665", "005"])
BAD_DATE = st.sampled_from(["2026-13-01", "2026-02-30", "2026-1-01", "20261001", "0000-01-01", "2026-10-01x"])


@st.composite
def junk_keys(draw) -> str:
    """A key under the dataset that is no file of a drop folder (often named like one)."""
    day = f"{START + timedelta(days=draw(st.integers(0, 20))):%Y-%m-%d}"
    name = draw(st.sampled_from([READY_NAME, MANIFEST_NAME, "part-00000.parquet"]))
    return draw(
        st.one_of(
            st.just(f"{DATASET}/dt={day}/hour={draw(BAD_HOUR)}/{name}"),
            st.just(f"{DATASET}/dt={draw(BAD_DATE)}/hour=05/{name}"),
            st.just(f"{DATASET}/{draw(SEGMENT)}"),  # a stray file at the top
            st.just(f"{DATASET}/dt={day}/{name}"),  # a day folder without hours
            st.builds(lambda a, b: f"{DATASET}/{a}/{b}/{name}", SEGMENT, SEGMENT),
            st.builds(  # nested inside a drop folder
                lambda h, s: f"{drop_prefix(DATASET, START + timedelta(hours=h))}{s}/{name}", HOURS, SEGMENT
            ),
        )
    )


@dataclass(frozen=True)
class Drop:
    hour: datetime
    ready: bool
    manifest: bool
    parts: int

    @property
    def prefix(self) -> str:
        return drop_prefix(DATASET, self.hour)

    def files(self) -> dict[str, bytes]:
        files = {f"{self.prefix}part-{i:05d}.parquet": b"rows" for i in range(self.parts)}
        if self.manifest:
            files[self.prefix + MANIFEST_NAME] = f"manifest of {self.prefix}".encode()
        if self.ready:
            files[self.prefix + READY_NAME] = b""
        return files

    @property
    def version(self) -> tuple[str, str]:
        """(prefix, manifest md5) as the ledger records it; the local zone's etag is the md5."""
        manifest = self.files().get(self.prefix + MANIFEST_NAME)
        return self.prefix, hashlib.md5(manifest).hexdigest() if manifest else ""


def drops(hours=HOURS):
    return st.builds(
        lambda h, ready, manifest, parts: Drop(START + timedelta(hours=h), ready, manifest, parts),
        hours,
        st.booleans(),
        st.booleans(),
        st.integers(0, 2),
    )


@dataclass
class Pass:
    requested: list[str]  # drop prefixes, in request order
    unrecognised: list[str]  # off-layout keys reported
    cursor: SensorCursor
    ticks: int


def layout_hour(key: str) -> datetime | None:
    """The test's own reading of the layout (strptime plus an exact round trip), to judge the sensor's."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != DATASET or not parts[1].startswith("dt=") or not parts[2].startswith("hour="):
        return None
    try:
        hour = datetime.strptime(f"{parts[1][3:]} {parts[2][5:]}", "%Y-%m-%d %H")
    except ValueError:
        return None
    return hour if f"{DATASET}/dt={hour:%Y-%m-%d}/hour={hour:%H}/" == key.rpartition("/")[0] + "/" else None


def run_pass(
    landing: LandingZone,
    cursor: SensorCursor,
    loaded: set[tuple[str, str]],
    end: datetime,
    limit: int,
    requestable: set[str],
) -> Pass:
    """Tick as the sensor does (listing + plan, the cursor through its JSON) until a listing reaches
    the end. After every tick, no drop still waiting for its request lies at or before the next start."""
    partitions = dg.HourlyPartitionsDefinition(
        start_date=f"{START:%Y-%m-%d-%H:%M}", end_date=f"{end:%Y-%m-%d-%H:%M}", timezone="UTC"
    )
    done = Pass([], [], cursor, 0)
    while True:
        listing = list_drops(landing, DATASET, done.cursor.start_after or None, limit)
        assert listing.objects <= limit
        plan = plan_tick(DATASET, listing, done.cursor, loaded, partitions, dg.AssetKey(["bronze", "telemetry"]))
        done.requested += [r.tags["strata/drop"] for r in plan.requests]
        done.unrecognised += [off.key for off in listing.unrecognised]
        done.cursor, done.ticks = SensorCursor.parse(plan.cursor.serialize()), done.ticks + 1
        waiting = requestable - set(done.requested)
        assert all(prefix > done.cursor.start_after for prefix in waiting), (waiting, done.cursor)
        if listing.resume_after is None:
            return done
        assert done.ticks < 100


def write(landing: LandingZone, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        landing.write_bytes(key, data)


def without_folder_clashes(files: dict[str, bytes]) -> dict[str, bytes]:
    """Drop keys that a folder of another key shadows: a local folder cannot also be a file."""
    folders = {key[: i + 1] for key in files for i, c in enumerate(key) if c == "/"}
    return {key: data for key, data in files.items() if key + "/" not in folders}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first_drops=st.lists(drops(), max_size=16, unique_by=lambda d: d.hour),
    junk=st.lists(junk_keys(), max_size=6, unique=True),
    loaded_share=st.randoms(use_true_random=False),
    now=st.integers(min_value=1, max_value=24 * 5),
    later=st.integers(min_value=0, max_value=24 * 6),
    new_drops=st.lists(drops(), max_size=6, unique_by=lambda d: d.hour),
    # Above the objects of one drop folder with nested junk (4 + 6), as MAX_OBJECTS_PER_TICK is.
    limit=st.sampled_from([12, 16, 10_000]),
)
def test_each_complete_drop_of_an_existing_partition_is_requested_once_whatever_else_is_landed(
    first_drops, junk, loaded_share, now, later, new_drops, limit
) -> None:
    """Any mix of complete, incomplete, past and future drops and keys outside the layout: no tick
    raises, each pass requests exactly the complete drops of existing partitions not loaded or
    requested before, every off-layout key is reported, and a second pass (later, with drops finished
    and new ones landed) finds every drop that became requestable inside the lookback window."""
    end1 = START + timedelta(hours=now)
    end2 = end1 + timedelta(hours=later)
    files = {key: b"junk" for key in junk}
    for drop in first_drops:
        files.update(drop.files())
    files = without_folder_clashes(files)
    present = [d for d in first_drops if all(k in files for k in d.files())]
    loaded = {d.version for d in present if d.ready and loaded_share.random() < 0.3}

    def requestable(candidates: list[Drop], end: datetime) -> set[str]:
        return {d.prefix for d in candidates if d.ready and START <= d.hour < end and d.version not in loaded}

    with tempfile.TemporaryDirectory() as root:
        landing = LandingZone(root=root)
        write(landing, files)

        expected1 = requestable(present, end1)
        first = run_pass(landing, SensorCursor(), loaded, end1, limit, expected1)
        assert sorted(first.requested) == sorted(expected1)  # each once
        off_layout = {k for k in files if layout_hour(k) is None}
        assert sorted(first.unrecognised) == sorted(off_layout)

        # Later: incomplete drops get their _READY, new drops land, future hours come to exist.
        newest = max((d.hour for d in present if d.ready and START <= d.hour < end1), default=None)
        window = newest - LOOKBACK if newest else datetime.min
        finished = [Drop(d.hour, True, d.manifest, d.parts) for d in present if not d.ready]
        landed = [d for d in new_drops if all(d.prefix != p.prefix for p in present)]
        second_files = without_folder_clashes(
            {**files, **{k: v for d in finished + landed for k, v in d.files().items()}}
        )
        write(landing, {k: v for k, v in second_files.items() if k not in files})
        now_present = [d for d in finished + landed if all(k in second_files for k in d.files())]
        expected2 = {
            p for p in requestable(now_present, end2) | requestable(present, end2) if p >= drop_prefix(DATASET, window)
        } - set(first.requested)
        second = run_pass(landing, first.cursor, loaded, end2, limit, expected2)
        assert sorted(second.requested) == sorted(expected2)

        third = run_pass(landing, second.cursor, loaded, end2, limit, set())
        assert third.requested == []
