"""The landing zone behaves the same on a local folder and on a real S3 API (moto server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from assets.bronze.contracts import file_drop_contracts
from assets.drops.protocol import drop_prefix, manifest_partition
from assets.drops.verification import DropVerificationError, verify_drop
from demo.drop_producer import write_drop
from resources.landing import LandingZone
from resources.landing_s3 import s3_client

MANY = 1205  # more than one ListObjectsV2 page and one DeleteObjects batch
WRITERS = 8  # below botocore's default pool of 10 connections
TELEMETRY = file_drop_contracts()["telemetry"]
HOUR = datetime(2026, 10, 1, 5)
# Keys whose order differs between "sort the keys" and a naive folder-by-folder walk ('-' < '/' < '0').
ORDER_KEYS = ["t/dt=1/x", "t/dt=1-x", "t/dt=10/y", "t/dt=2/z/deep", "t/e", "u/v", "t/dt=1/w/q"]


@pytest.fixture(params=["local", "s3"])
def landing(request: pytest.FixtureRequest, tmp_path: Path) -> LandingZone:
    if request.param == "local":
        return LandingZone(root=str(tmp_path / "landing"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return LandingZone(root=f"s3://{bucket}/landing", s3_endpoint_url=endpoint)


def is_s3(landing: LandingZone) -> bool:
    return landing.root.startswith("s3://")


def write_all(landing: LandingZone, contents: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(lambda item: landing.write_bytes(*item), contents.items()))


@contextmanager
def counted_s3_requests(landing: LandingZone) -> Iterator[Counter]:
    """Count S3 API calls by operation: moto accepts pages and batches above AWS's 1000 limit, so the
    batching is checked on the requests themselves. Stays empty for a local zone."""
    counts: Counter = Counter()
    if not is_s3(landing):
        yield counts
        return
    client = s3_client(landing.s3_endpoint_url, landing.s3_region)

    def count(model, **_) -> None:
        counts[model.name] += 1

    client.meta.events.register("before-call.s3", count, unique_id="count-landing-requests")
    try:
        yield counts
    finally:
        client.meta.events.unregister("before-call.s3", unique_id="count-landing-requests")


def test_write_read_exists_round_trip(landing: LandingZone) -> None:
    key = "feed/dt=2026-10-01/part-00000.parquet"
    assert not landing.exists(key)
    landing.write_bytes(key, b"first")
    landing.write_bytes(key, b"second")
    assert landing.exists(key)
    assert landing.read_bytes(key) == b"second"
    assert not landing.exists("feed/dt=2026-10-01")  # a folder is not an object
    expected_uri = (
        f"s3://{landing.root.removeprefix('s3://')}/{key}" if is_s3(landing) else str(Path(landing.root) / key)
    )
    assert landing.uri(key) == expected_uri


def test_read_of_missing_key_names_it(landing: LandingZone) -> None:
    missing = re.escape(landing.uri("feed/absent.json"))
    with pytest.raises(FileNotFoundError, match=missing):
        landing.read_bytes("feed/absent.json")
    with pytest.raises(FileNotFoundError, match=missing):
        landing.copy("feed/absent.json", "feed/copy.json")


def test_keys_cannot_escape_the_root(landing: LandingZone) -> None:
    for key in ("../outside", "/etc/passwd", "feed/../../x"):
        with pytest.raises(ValueError, match="relative to the root"):
            landing.read_bytes(key)


def test_list_objects_is_sorted_and_filtered_like_s3(landing: LandingZone) -> None:
    write_all(landing, {key: key.encode() for key in ORDER_KEYS})
    cases = [("", None), ("t/", None), ("t/dt=1", None), ("t/dt=1/", None), ("t/dt=1", "t/dt=1/w/q")]
    cases += [("", "t/dt=1-x"), ("t/", "t/dt=10/"), ("t/", "t/dt=2/z/deep"), ("", "u/v"), ("absent/", None)]
    for prefix, start_after in cases:
        expected = sorted(k for k in ORDER_KEYS if k.startswith(prefix) and k > (start_after or ""))
        listed = [obj.key for obj in landing.list_objects(prefix, start_after=start_after)]
        assert listed == expected, (prefix, start_after)
    assert landing.list_keys("t/dt=1") == ["t/dt=1-x", "t/dt=1/w/q", "t/dt=1/x", "t/dt=10/y"]


def test_etag_fingerprints_content(landing: LandingZone) -> None:
    write_all(landing, {"a/one": b"same bytes", "b/two": b"same bytes", "c/three": b"other bytes"})
    objects = {obj.key: obj for obj in landing.list_objects("")}
    first = objects["a/one"]
    assert (first.key, first.size, first.etag) == ("a/one", 10, hashlib.md5(b"same bytes").hexdigest())
    assert objects["a/one"].etag == objects["b/two"].etag != objects["c/three"].etag
    time.sleep(1.1)  # S3's LastModified has whole seconds
    landing.write_bytes("a/one", b"new bytes!")
    rewritten = next(landing.list_objects("a/"))
    assert rewritten.etag == hashlib.md5(b"new bytes!").hexdigest()
    assert rewritten.modified > first.modified  # a new delivery of a key is visible in the listing


def test_many_objects_paginate_and_delete_in_batches(landing: LandingZone) -> None:
    keys = [f"many/{i // 100:02d}/obj-{i:05d}" for i in range(MANY)]
    write_all(landing, {key: b"x" for key in keys})
    landing.write_bytes("keep/me", b"kept")
    assert [obj.key for obj in landing.list_objects("many/", start_after=keys[99])] == keys[100:]
    assert landing.list_keys("many/11/") == keys[1100:1200]
    with counted_s3_requests(landing) as requests:
        assert [obj.key for obj in landing.list_objects("many/")] == keys
        landing.delete(keys)
    if is_s3(landing):
        assert (requests["ListObjectsV2"], requests["DeleteObjects"]) == (2, 2)
    assert landing.list_keys("") == ["keep/me"]
    if not is_s3(landing):
        assert sorted(p.name for p in Path(landing.root).iterdir()) == ["keep"]  # empty folders removed
    landing.delete(["many/00/obj-00000"])  # absent keys are ignored, as S3 does


def test_move_prefix_moves_everything_and_only_that_folder(landing: LandingZone) -> None:
    drop = {"in/hour=05/part-0.parquet": b"p0", "in/hour=05/sub/part-1.parquet": b"p1", "in/hour=05/_READY": b""}
    write_all(landing, {**drop, "in/hour=050/other": b"not moved"})
    moved = landing.move_prefix("in/hour=05", "quarantine/hour=05/")
    assert moved == [key.replace("in/", "quarantine/", 1) for key in sorted(drop)]
    assert landing.list_keys("in/") == ["in/hour=050/other"]
    assert {key: landing.read_bytes(key) for key in moved} == {
        key.replace("in/", "quarantine/", 1): data for key, data in drop.items()
    }
    with pytest.raises(ValueError, match="disjoint"):
        landing.move_prefix("quarantine/", "quarantine/again/")


def test_local_listing_ignores_temp_files_and_writes_leave_none(tmp_path: Path) -> None:
    landing = LandingZone(root=f"file://{tmp_path}")
    landing.write_bytes("drop/part-0.parquet", b"data")
    (tmp_path / "drop" / ".tmp-part-1.parquet").write_bytes(b"half written")
    assert landing.list_keys("drop/") == ["drop/part-0.parquet"]
    assert [obj.key for obj in landing.list_objects("")] == ["drop/part-0.parquet"]
    assert sorted(p.name for p in (tmp_path / "drop").iterdir()) == [".tmp-part-1.parquet", "part-0.parquet"]


def telemetry_rows(hour_start: datetime, vehicles: int = 3) -> pa.Table:
    stamps = [hour_start + timedelta(minutes=5 * i) for i in range(vehicles)]
    return pa.table(
        {
            "vehicle_id": list(range(1, vehicles + 1)),
            "ts": pa.array(stamps, pa.timestamp("us")),
            "lat": [45.0] * vehicles,
            "lon": [4.0] * vehicles,
            "speed_kmh": [12.5] * vehicles,
            "battery_pct": [80.0] * vehicles,
            "odometer_km": [100.0] * vehicles,
            "fault_code": pa.array([None] * vehicles, pa.string()),
        },
        schema=TELEMETRY.arrow_schema(),
    )


def upload_folder(folder: Path, landing: LandingZone) -> None:
    """Upload a locally written drop key by key, READY last, as an S3 producer would."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in sorted(files, key=lambda p: p.name == "_READY"):
        landing.write_bytes(path.relative_to(folder).as_posix(), path.read_bytes())


def test_verify_drop_runs_unchanged_on_both_backends(landing: LandingZone, tmp_path: Path) -> None:
    produced = tmp_path / "produced"
    write_drop(produced, "telemetry", HOUR, [telemetry_rows(HOUR), telemetry_rows(HOUR, 2)])
    upload_folder(produced, landing)
    prefix = drop_prefix("telemetry", HOUR)
    verified = verify_drop(landing, prefix, TELEMETRY, manifest_partition(HOUR))
    assert (verified.rows_in, verified.rows.num_rows) == (5, 5)

    landing.write_bytes(prefix + "part-00001.parquet", b"tampered")
    with pytest.raises(DropVerificationError, match="size check failed"):
        verify_drop(landing, prefix, TELEMETRY, manifest_partition(HOUR))


def test_module_import_does_not_load_boto3() -> None:
    """The code location must load fast: the S3 client libraries are imported on first S3 use only."""
    probe = "import sys, resources.landing; print(sorted({'boto3', 'botocore', 'dagster_aws'} & set(sys.modules)))"
    project = Path(__file__).resolve().parents[1]
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=project)
    assert loaded.stdout.strip() == "[]"
