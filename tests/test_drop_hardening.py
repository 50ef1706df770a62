"""Hostile drops on the landing zone: invalid text, files listed twice, symbolic links, a failure the
verifier did not foresee, and re-delivery of an older version. Each ends classified (loaded, rows
quarantined, or the drop quarantined with its reason), never retried, never half-loaded."""

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

import assets.bronze.conform as conform
from assets.bronze.quarantine import quarantined_rows
from assets.bronze.telemetry import build_telemetry_asset
from assets.drops.ledger import loaded_drop_versions
from assets.drops.protocol import ERROR_NAME, MANIFEST_NAME, READY_NAME, drop_prefix, partition_key
from assets.drops.quarantine import QUARANTINE_ROOT
from assets.partitions import hourly_partitions
from demo.drop_producer import write_drop
from jobs.policies import with_op_policies
from resources.landing import LandingZone, RefusedObject
from sensors.drop_sensor import build_drop_sensor
from tests.test_bronze_telemetry import FIRST_HOUR, hour_rows, land, resources, run_hours

HOUR = FIRST_HOUR + timedelta(hours=5)
PREFIX = drop_prefix("telemetry", HOUR)
EAGER_RETRY = dg.RetryPolicy(max_retries=3, delay=0)


def rows_with_invalid_text(hour: datetime) -> pa.Table:
    """The hour's 12 rows; row 4 has a fault_code whose bytes are not UTF-8 (Parquet does not check)."""
    rows = hour_rows(hour)
    codes = [None] * rows.num_rows
    codes[4] = b"E\xff1"
    raw = pa.array(codes, pa.binary())
    invalid_text = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers(), raw.null_count)
    return rows.set_column(rows.schema.get_field_index("fault_code"), rows.schema.field("fault_code"), invalid_text)


def error_of_quarantined_drop(landing: Path, prefix: str) -> dict:
    errors = sorted((landing / QUARANTINE_ROOT / prefix).rglob(ERROR_NAME))
    assert len(errors) == 1
    return json.loads(errors[0].read_text())


def run_with_retries(root: Path, hour: datetime) -> dg.ExecuteInProcessResult:
    """One hour through the real asset with a retry policy, as definitions.py applies it to Bronze."""
    asset = with_op_policies(build_telemetry_asset(hourly_partitions(FIRST_HOUR.date())), retry_policy=EAGER_RETRY)
    return dg.materialize([asset], partition_key=partition_key(hour), resources=resources(root), raise_on_error=False)


def test_invalid_utf8_text_is_a_quarantined_row_and_the_rest_of_the_hour_loads(tmp_path):
    land(tmp_path / "landing", HOUR, rows_with_invalid_text(HOUR))
    result = run_with_retries(tmp_path, HOUR)
    assert result.success
    table = resources(tmp_path)["iceberg"].load().load_table("bronze.telemetry").scan().to_arrow()
    assert table.num_rows == 11
    [record] = quarantined_rows(resources(tmp_path)["iceberg"], dataset="telemetry").to_pylist()
    assert (record["rule"], record["column_name"], record["offending_value"]) == (
        "fault_code_valid_utf8",
        "fault_code",
        "E\\xff1",
    )
    assert json.loads(record["raw_row"])["fault_code"] == "E\\xff1"


def test_a_write_failure_the_verifier_missed_quarantines_the_drop_and_is_not_retried(tmp_path, monkeypatch):
    # Without the UTF-8 rule the invalid text reaches pyiceberg's writer, which fails deterministically:
    # the load must classify the drop (pinned on it), not retry nor leave it READY.
    monkeypatch.setattr(conform, "_without_invalid_utf8", lambda values, column, where, locate: (values, None))
    land(tmp_path / "landing", HOUR - timedelta(hours=1), hour_rows(HOUR - timedelta(hours=1)))
    land(tmp_path / "landing", HOUR, rows_with_invalid_text(HOUR))
    result = run_hours(tmp_path, HOUR - timedelta(hours=1), HOUR, raise_on_error=False)
    assert not result.success
    error = error_of_quarantined_drop(tmp_path / "landing", PREFIX)
    assert error["check"] == "load"
    assert "UnicodeDecodeError" in error["detail"]
    assert not (tmp_path / "landing" / PREFIX / READY_NAME).exists()
    assert (tmp_path / "landing" / drop_prefix("telemetry", HOUR - timedelta(hours=1)) / READY_NAME).exists()
    assert resources(tmp_path)["iceberg"].load().load_table("bronze.telemetry").current_snapshot() is None

    land(tmp_path / "landing", HOUR, rows_with_invalid_text(HOUR))
    retried = run_with_retries(tmp_path, HOUR)
    assert not retried.success
    assert not any(e.is_step_up_for_retry for e in retried.all_events)


def test_a_manifest_listing_a_file_twice_is_refused_and_quarantined(tmp_path):
    landing = tmp_path / "landing"
    land(landing, HOUR, hour_rows(HOUR))
    manifest_path = landing / PREFIX / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["files"].append({**manifest["files"][0], "name": "./part-00000.parquet"})
    manifest_path.write_text(json.dumps(manifest))
    result = run_hours(tmp_path, HOUR, HOUR, raise_on_error=False)
    assert not result.success
    error = error_of_quarantined_drop(landing, PREFIX)
    assert (error["check"], error["file"]) == ("files", MANIFEST_NAME)
    assert "'./part-00000.parquet' is not a plain relative name" in error["detail"]
    assert resources(tmp_path)["iceberg"].table_or_none("bronze.telemetry").current_snapshot() is None


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def test_a_symlinked_parquet_pointing_outside_the_root_is_refused_and_never_copied(tmp_path, outside):
    landing = tmp_path / "landing"
    land(landing, HOUR, hour_rows(HOUR))
    part = landing / PREFIX / "part-00000.parquet"
    secret = outside / "secret.parquet"
    secret.write_bytes(part.read_bytes())  # the manifest's sha256 matches the linked bytes
    part.unlink()
    part.symlink_to(secret)

    zone = LandingZone(root=str(landing))
    assert zone.list_keys(PREFIX) == [PREFIX + READY_NAME, PREFIX + MANIFEST_NAME]  # no link
    assert not zone.exists(PREFIX + "part-00000.parquet")
    with pytest.raises(RefusedObject, match="symbolic link"):
        zone.read_bytes(PREFIX + "part-00000.parquet")
    with pytest.raises(RefusedObject, match="symbolic link"):
        zone.copy(PREFIX + "part-00000.parquet", "elsewhere/copy.parquet")

    result = run_hours(tmp_path, HOUR, HOUR, raise_on_error=False)
    assert not result.success
    error = error_of_quarantined_drop(landing, PREFIX)
    assert (error["check"], error["file"]) == ("presence", "part-00000.parquet")
    assert "refused" in error["detail"] and "symbolic link" in error["detail"]
    copied = [p for p in (landing / QUARANTINE_ROOT).rglob("*") if p.is_file() and p.name.endswith(".parquet")]
    assert copied == []  # the outside bytes were not copied into the quarantine
    assert secret.read_bytes() and not secret.is_symlink()
    assert resources(tmp_path)["iceberg"].load().load_table("bronze.telemetry").current_snapshot() is None


def test_a_symlinked_drop_folder_is_invisible_and_cannot_be_written_through(tmp_path, outside):
    landing = tmp_path / "landing"
    write_drop(outside, "telemetry", HOUR, [hour_rows(HOUR)])  # a complete drop outside the root
    (landing / PREFIX).parent.mkdir(parents=True)
    os.symlink(outside / PREFIX, landing / PREFIX, target_is_directory=True)
    zone = LandingZone(root=str(landing))
    assert zone.list_keys("telemetry/") == []
    assert list(zone.list_objects(PREFIX)) == []
    assert not zone.exists(PREFIX + READY_NAME)
    with pytest.raises(RefusedObject):
        zone.write_bytes(PREFIX + "planted.parquet", b"x")
    zone.delete([PREFIX + MANIFEST_NAME])  # never deletes through the link
    assert (outside / PREFIX / MANIFEST_NAME).exists()


def sensor_tick(root: Path, instance: dg.DagsterInstance, sensor, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources(root))
    return sensor(context)


def test_redelivering_an_older_version_after_a_newer_one_loads_it_again(tmp_path):
    asset = build_telemetry_asset(hourly_partitions(FIRST_HOUR.date()))
    sensor = build_drop_sensor("telemetry", asset)
    landing = tmp_path / "landing"
    catalog = resources(tmp_path)["iceberg"]

    def deliver_and_load(vehicles: int, cursor: str | None, instance) -> str:
        land(landing, HOUR, hour_rows(HOUR, vehicles=vehicles))
        result = sensor_tick(tmp_path, instance, sensor, cursor)
        assert [r.partition_key for r in result.run_requests] == [partition_key(HOUR)]
        [request] = result.run_requests
        run = dg.materialize(
            [asset],
            partition_key=request.partition_key,
            tags={**request.tags, "dagster/run_key": request.run_key},
            resources=resources(tmp_path),
            instance=instance,
        )
        assert run.success
        return result.cursor

    def current_rows() -> int:
        return catalog.load().load_table("bronze.telemetry").scan().to_arrow().num_rows

    with dg.instance_for_test() as instance:
        cursor = deliver_and_load(2, None, instance)  # version 1: 8 rows
        version_1 = loaded_drop_versions(catalog, "telemetry")
        cursor = deliver_and_load(3, cursor, instance)  # version 2: 12 rows
        assert current_rows() == 12
        assert loaded_drop_versions(catalog, "telemetry").isdisjoint(version_1)
        cursor = deliver_and_load(2, cursor, instance)  # version 1 again: the table must follow
        assert current_rows() == 8
        assert loaded_drop_versions(catalog, "telemetry") == version_1
        # An identical re-delivery of what the table holds now is recognised as loaded.
        land(landing, HOUR, hour_rows(HOUR, vehicles=2))
        again = sensor_tick(tmp_path, instance, sensor, None)
        assert again.run_requests == []
        assert "1 already loaded" in again.skip_reason.skip_message
