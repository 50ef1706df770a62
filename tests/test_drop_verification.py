"""Every kind of broken drop is refused before a row is loaded, with the check and file named."""

import hashlib
import io
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.bronze.contracts import file_drop_contracts
from assets.drops.protocol import MANIFEST_NAME, READY_NAME, drop_prefix, manifest_partition
from assets.drops.verification import DropVerificationError, verify_drop
from demo.drop_producer import write_drop
from resources.landing import LandingZone
from tests.test_bronze_telemetry import hour_rows

CONTRACT = file_drop_contracts()["telemetry"]
HOUR = datetime(2026, 10, 1, 5)
PREFIX = drop_prefix("telemetry", HOUR)
PART = "part-00000.parquet"


def manifest_of(zone: LandingZone) -> dict:
    return json.loads(zone.read_bytes(PREFIX + MANIFEST_NAME))


def write_manifest(zone: LandingZone, manifest: dict) -> None:
    zone.write_bytes(PREFIX + MANIFEST_NAME, json.dumps(manifest).encode())


def replace_part(zone: LandingZone, data: bytes, rows: int | None = None) -> None:
    """Swap the data file and keep the manifest consistent, so only the later checks can object."""
    zone.write_bytes(PREFIX + PART, data)
    manifest = manifest_of(zone)
    entry = manifest["files"][0]
    entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    if rows is not None:
        entry["rows"] = rows
    write_manifest(zone, manifest)


def parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def set_manifest_field(field: str, value) -> Callable[[LandingZone], None]:
    def mutate(zone: LandingZone) -> None:
        write_manifest(zone, {**manifest_of(zone), field: value})

    return mutate


def set_file_field(field: str, value) -> Callable[[LandingZone], None]:
    def mutate(zone: LandingZone) -> None:
        manifest = manifest_of(zone)
        manifest["files"][0][field] = value(manifest["files"][0][field]) if callable(value) else value
        write_manifest(zone, manifest)

    return mutate


def drop_manifest_field(field: str) -> Callable[[LandingZone], None]:
    def mutate(zone: LandingZone) -> None:
        manifest = manifest_of(zone)
        del manifest[field]
        write_manifest(zone, manifest)

    return mutate


ROWS = hour_rows(HOUR)
BROKEN = {
    "missing manifest": (lambda z: z.delete([PREFIX + MANIFEST_NAME]), "manifest", MANIFEST_NAME, "is missing"),
    "manifest not JSON": (lambda z: z.write_bytes(PREFIX + MANIFEST_NAME, b"{not json"), "manifest", MANIFEST_NAME,
                          "not valid JSON"),
    "manifest misses a field": (drop_manifest_field("files"), "manifest", MANIFEST_NAME, "missing field(s) ['files']"),
    "file entry misses sha256": (set_file_field("sha256", None), "manifest", MANIFEST_NAME, "mistyped ['sha256']"),
    "listed file absent": (lambda z: z.delete([PREFIX + PART]), "presence", PART, "absent"),
    "extra unlisted file": (lambda z: z.write_bytes(PREFIX + "part-00009.parquet", b"x"), "files",
                            "part-00009.parquet", "not in the manifest"),
    "checksum mismatch": (set_file_field("sha256", "0" * 64), "sha256", PART, "manifest says 0000"),
    "size mismatch": (set_file_field("bytes", lambda b: b + 1), "size", PART, "manifest says"),
    "row count mismatch": (set_file_field("rows", lambda r: r + 1), "row_count", PART, "12 rows, manifest says 13"),
    "truncated parquet": (lambda z: replace_part(z, parquet(ROWS)[:-200]), "parse", PART, "not a readable parquet"),
    "not parquet at all": (lambda z: replace_part(z, b"vehicle_id,ts\n1,2\n"), "parse", PART, "not a readable parquet"),
    "missing column": (lambda z: replace_part(z, parquet(ROWS.drop_columns(["battery_pct"]))), "contract", PART,
                       "missing column(s) ['battery_pct']"),
    "extra column": (lambda z: replace_part(z, parquet(ROWS.append_column("driver", pa.array(["x"] * 12)))),
                     "contract", PART, "unexpected column(s) ['driver']"),
    "wrong type": (lambda z: replace_part(z, parquet(ROWS.set_column(2, "lat", pa.array(["45.0"] * 12)))),
                   "contract", PART, "column 'lat' has type string, contract says float64"),
    "READY for an empty drop": (set_manifest_field("files", []), "files", None, "lists no data files"),
    "partition disagrees with the path": (set_manifest_field("partition", {"dt": "2026-10-01", "hour": "06"}),
                                          "partition", MANIFEST_NAME, "the path says"),
    "wrong dataset": (set_manifest_field("dataset", "bookings"), "dataset", MANIFEST_NAME, "expected 'telemetry'"),
    "unknown schema version": (set_manifest_field("schema_version", 2), "schema_version", MANIFEST_NAME,
                               "contract is version 1"),
}  # fmt: skip


@pytest.fixture
def zone(tmp_path: Path) -> LandingZone:
    zone = LandingZone(root=str(tmp_path / "landing"))
    write_drop(zone, "telemetry", HOUR, [hour_rows(HOUR)])
    return zone


def test_a_good_drop_verifies(zone):
    verified = verify_drop(zone, PREFIX, CONTRACT, manifest_partition(HOUR))
    assert verified.rows.num_rows == 12
    assert verified.manifest_md5 == hashlib.md5(zone.read_bytes(PREFIX + MANIFEST_NAME)).hexdigest()


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_broken_drop_is_refused_naming_check_and_file(zone, case):
    mutate, check, file, text = BROKEN[case]
    mutate(zone)
    with pytest.raises(DropVerificationError) as caught:
        verify_drop(zone, PREFIX, CONTRACT, manifest_partition(HOUR))
    error = caught.value
    assert (error.check, error.file) == (check, file)
    assert text in str(error)
    assert str(error).startswith(f"drop {PREFIX}")


def test_a_drop_without_ready_is_not_complete(zone):
    zone.delete([PREFIX + READY_NAME])
    with pytest.raises(DropVerificationError, match="ready check failed"):
        verify_drop(zone, PREFIX, CONTRACT, manifest_partition(HOUR))
