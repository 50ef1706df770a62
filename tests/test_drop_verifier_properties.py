"""Property-based tests of the drop verifier over generated drops and manifests.

A generated drop (1-3 files of generated rows, a correct manifest) verifies and yields exactly its rows;
each generated defect (a file listed twice or under a second spelling, a wrong row count, size or
sha256, a file missing or not listed) is refused by the check that names it, before any row is used.
"""

import hashlib
import json
import posixpath
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.bronze.contracts import file_drop_contracts
from assets.drops.protocol import MANIFEST_NAME, READY_NAME, drop_prefix, manifest_partition
from assets.drops.verification import PROTOCOL_FILES, DropVerificationError, check_file_names, verify_drop
from demo.drop_producer import build_manifest, parquet_bytes
from resources.landing import LandingZone
from tests.test_bronze_telemetry import hour_rows

CONTRACT = file_drop_contracts()["telemetry"]
HOUR = datetime(2026, 10, 1, 5)
PREFIX = drop_prefix("telemetry", HOUR)
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

file_names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}\.parquet", fullmatch=True)
# (vehicles, readings per vehicle) of each file: small, but distinct per file.
file_shapes = st.lists(st.tuples(st.integers(1, 3), st.integers(1, 5)), min_size=1, max_size=3)
DEFECTS = ("duplicate", "alias", "rows", "bytes", "sha256", "unlisted", "missing")
# The check that must refuse each defect, and whether it names the defective file (else the manifest).
EXPECTED_CHECK = {
    "duplicate": ("files", False),
    "alias": ("files", False),
    "rows": ("row_count", True),
    "bytes": ("size", True),
    "sha256": ("sha256", True),
    "unlisted": ("files", True),
    "missing": ("presence", True),
}


def write_generated_drop(root: Path, names: list[str], shapes: list[tuple[int, int]]) -> tuple[LandingZone, dict]:
    zone = LandingZone(root=str(root))
    files = {}
    for name, (vehicles, per_vehicle) in zip(names, shapes, strict=True):
        data = parquet_bytes(hour_rows(HOUR, vehicles=vehicles, per_vehicle=per_vehicle))
        files[name] = (data, vehicles * per_vehicle)
        zone.write_bytes(PREFIX + name, data)
    manifest = build_manifest("telemetry", HOUR, files, CONTRACT.schema_version)
    return zone, manifest


def publish(zone: LandingZone, manifest: dict) -> None:
    zone.write_bytes(PREFIX + MANIFEST_NAME, json.dumps(manifest).encode())
    zone.write_bytes(PREFIX + READY_NAME, b"")


def verify(zone: LandingZone):
    return verify_drop(zone, PREFIX, CONTRACT, manifest_partition(HOUR))


@PROPERTY_SETTINGS
@given(data=st.data(), shapes=file_shapes)
def test_a_generated_drop_verifies_and_yields_exactly_its_rows(data, shapes):
    names = data.draw(st.lists(file_names, min_size=len(shapes), max_size=len(shapes), unique=True))
    with tempfile.TemporaryDirectory() as root:
        zone, manifest = write_generated_drop(Path(root), names, shapes)
        publish(zone, manifest)
        verified = verify(zone)
    expected = sum(v * p for v, p in shapes)
    assert (verified.rows_in, verified.rows.num_rows, verified.rows_quarantined) == (expected, expected, 0)
    assert verified.file_sha256 == {f["name"]: f["sha256"] for f in manifest["files"]}


@PROPERTY_SETTINGS
@given(data=st.data(), shapes=file_shapes, defect=st.sampled_from(DEFECTS))
def test_each_generated_defect_is_refused_by_the_check_that_names_it(data, shapes, defect):
    names = data.draw(st.lists(file_names, min_size=len(shapes), max_size=len(shapes), unique=True))
    victim = data.draw(st.integers(0, len(names) - 1))
    delta = data.draw(st.integers(-3, 3).filter(bool))
    with tempfile.TemporaryDirectory() as root:
        zone, manifest = write_generated_drop(Path(root), names, shapes)
        entries = manifest["files"]
        entry = entries[victim]
        defective = entry["name"]
        if defect == "duplicate":
            entries.insert(data.draw(st.integers(0, len(entries))), dict(entry))
        elif defect == "alias":
            spelling = data.draw(st.sampled_from(["./{}", "{}/", "x/../{}", ".//{}"]))
            entries.append({**entry, "name": spelling.format(defective)})
        elif defect == "rows":
            entry["rows"] = max(0, entry["rows"] + delta)  # rows >= 1, so this always differs
        elif defect == "bytes":
            entry["bytes"] += delta
        elif defect == "sha256":
            entry["sha256"] = hashlib.sha256(entry["sha256"].encode()).hexdigest()
        elif defect == "unlisted":
            defective = data.draw(file_names.filter(lambda n: n not in names))
            zone.write_bytes(PREFIX + defective, b"not in the manifest")
        elif defect == "missing":
            zone.delete([PREFIX + defective])
        publish(zone, manifest)
        with pytest.raises(DropVerificationError) as refused:
            verify(zone)
    check, names_file = EXPECTED_CHECK[defect]
    assert refused.value.check == check, str(refused.value)
    assert refused.value.file == (defective if names_file else MANIFEST_NAME)
    assert refused.value.prefix == PREFIX
    assert str(refused.value).startswith(f"drop {PREFIX}")


@settings(max_examples=300, deadline=None)
@given(
    names=st.lists(
        st.one_of(
            st.text(alphabet="a./_-", max_size=8),
            st.sampled_from([*sorted(PROTOCOL_FILES), "./_READY", "a/_manifest.json", ".tmp-a", "a/b"]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_accepted_file_names_are_plain_and_never_two_names_for_one_object(names):
    try:
        check_file_names(PREFIX, names)
    except DropVerificationError as refused:
        assert (refused.check, refused.file) == ("files", MANIFEST_NAME)
        return
    resolved = [posixpath.normpath(posixpath.join(PREFIX, name)) for name in names]
    assert len(set(resolved)) == len(names)  # one object per name, each listed once
    assert all(path.startswith(PREFIX.rstrip("/") + "/") for path in resolved)  # inside the drop
    assert not any(posixpath.basename(name) in PROTOCOL_FILES for name in names)
