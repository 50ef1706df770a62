"""Bronze telemetry: verified hourly drops, partition overwrite, corrupted drops leave the table as it was."""

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa

from assets.bronze.contracts import file_drop_contracts
from assets.bronze.telemetry import build_telemetry_asset
from assets.drops.protocol import partition_key
from assets.partitions import hourly_partitions
from audit.metadata import NOT_RUN_TAG, combine_checksums
from demo.drop_producer import write_drop
from resources.iceberg import IcebergCatalog
from resources.ingestion_guard import IngestionGuard
from resources.landing import LandingZone

CONTRACT = file_drop_contracts()["telemetry"]
FIRST_HOUR = datetime(2026, 10, 1, 0)


def hour_rows(hour_start: datetime, vehicles: int = 3, per_vehicle: int = 4) -> pa.Table:
    ids, ts = [], []
    for v in range(1, vehicles + 1):
        for i in range(per_vehicle):
            ids.append(v)
            ts.append(hour_start + timedelta(minutes=10 * i, seconds=v))
    n = len(ids)
    return pa.table(
        {
            "vehicle_id": ids,
            "ts": pa.array(ts, pa.timestamp("us")),
            "lat": [45.0] * n,
            "lon": [4.0] * n,
            "speed_kmh": [float(i % 30) for i in range(n)],
            "battery_pct": [80.0] * n,
            "odometer_km": [100.0 + i for i in range(n)],
            "fault_code": pa.array([None] * n, pa.string()),
        },
        schema=CONTRACT.arrow_schema(),
    )


def land(landing: Path, hour_start: datetime, table: pa.Table) -> Path:
    return landing / write_drop(landing, "telemetry", hour_start, [table])


def resources(root: Path) -> dict:
    return {
        "landing": LandingZone(root=str(root / "landing")),
        "guard": IngestionGuard(data_path=str(root)),
        "iceberg": IcebergCatalog(uri=f"sqlite:///{root / 'cat.db'}", warehouse=f"file://{root / 'wh'}"),
    }


def run_hours(root: Path, first: datetime, last: datetime, raise_on_error: bool = True, instance=None, guard=None):
    asset = build_telemetry_asset(hourly_partitions(FIRST_HOUR.date()))
    return dg.materialize(
        [asset],
        instance=instance,
        resources={**resources(root), **({"guard": guard} if guard else {})},
        tags={
            "dagster/asset_partition_range_start": partition_key(first),
            "dagster/asset_partition_range_end": partition_key(last),
        },
        raise_on_error=raise_on_error,
    )


def table_state(root: Path) -> tuple[int, int]:
    table = resources(root)["iceberg"].load().load_table("bronze.telemetry")
    return table.current_snapshot().snapshot_id, table.scan().to_arrow().num_rows


def test_a_range_run_loads_every_hour_and_a_rerun_replaces_instead_of_duplicating(tmp_path):
    hours = [FIRST_HOUR + timedelta(hours=h) for h in range(3)]
    for h in hours:
        land(tmp_path / "landing", h, hour_rows(h))
    first = run_hours(tmp_path, hours[0], hours[-1])
    events = [e.materialization for e in first.get_asset_materialization_events()]
    assert [m.partition for m in events] == [partition_key(h) for h in hours]  # one event per hour
    files = sorted((tmp_path / "landing" / "telemetry").rglob("*.parquet"))  # in hour order
    assert len(files) == 3
    for hour, meta, file in zip(hours, (m.metadata for m in events), files, strict=True):
        assert meta["strata/rows_in"].value == 12
        assert meta["dagster/partition_row_count"].value == 12
        assert meta["strata/input_partitions"].value == [partition_key(hour)]
        assert meta["strata/checksum"].value == combine_checksums([hashlib.sha256(file.read_bytes()).hexdigest()])

    # A corrected re-delivery of hour 1 with fewer rows replaces exactly that hour.
    land(tmp_path / "landing", hours[1], hour_rows(hours[1], vehicles=2))
    run_hours(tmp_path, hours[1], hours[1])
    table = resources(tmp_path)["iceberg"].load().load_table("bronze.telemetry").scan().to_arrow()
    per_hour = {h: 0 for h in hours}
    for ts in table.column("ts").to_pylist():
        per_hour[ts.replace(minute=0, second=0, microsecond=0)] += 1
    assert per_hour == {hours[0]: 12, hours[1]: 8, hours[2]: 12}

    again = run_hours(tmp_path, hours[0], hours[-1])
    meta_again = [e.materialization.metadata for e in again.get_asset_materialization_events()]
    assert [m["dagster/row_count"].value for m in meta_again] == [32, 32, 32]  # the table
    assert [m["dagster/partition_row_count"].value for m in meta_again] == [12, 8, 12]  # each hour
    rerun = run_hours(tmp_path, hours[0], hours[-1])
    assert [e.materialization.metadata["strata/checksum"].value for e in rerun.get_asset_materialization_events()] == [
        m["strata/checksum"].value for m in meta_again
    ]


def test_a_corrupted_drop_fails_naming_the_file_and_leaves_the_table_unchanged(tmp_path):
    hours = [FIRST_HOUR + timedelta(hours=h) for h in range(2)]
    for h in hours:
        land(tmp_path / "landing", h, hour_rows(h))
    run_hours(tmp_path, hours[0], hours[-1])
    before = table_state(tmp_path)

    drop = land(tmp_path / "landing", hours[1], hour_rows(hours[1]))
    data_file = drop / "part-00000.parquet"
    corrupted = bytearray(data_file.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF  # same size, different content
    data_file.write_bytes(bytes(corrupted))

    result = run_hours(tmp_path, hours[0], hours[-1], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.cause.message
    assert "telemetry/dt=2026-10-01/hour=01/part-00000.parquet" in message
    assert "sha256 check failed" in message
    assert table_state(tmp_path) == before


def test_a_missing_drop_means_not_run_with_the_reason_not_a_data_failure(tmp_path):
    land(tmp_path / "landing", FIRST_HOUR, hour_rows(FIRST_HOUR))
    instance = dg.DagsterInstance.ephemeral()
    result = run_hours(tmp_path, FIRST_HOUR, FIRST_HOUR + timedelta(hours=1), instance=instance)
    assert result.success  # nothing is wrong with any data: the guard said "do not run yet"
    assert result.get_asset_materialization_events() == []
    reason = instance.get_run_by_id(result.run_id).tags[NOT_RUN_TAG]
    assert reason == "1 of 2 expected drop(s) not ready (no _READY): telemetry/dt=2026-10-01/hour=01/"
    assert resources(tmp_path)["iceberg"].table_or_none("bronze.telemetry") is None


def test_too_little_free_disk_means_not_run(tmp_path):
    land(tmp_path / "landing", FIRST_HOUR, hour_rows(FIRST_HOUR))
    instance = dg.DagsterInstance.ephemeral()
    guard = IngestionGuard(data_path=str(tmp_path), min_free_disk_gb=10**9)
    result = run_hours(tmp_path, FIRST_HOUR, FIRST_HOUR, instance=instance, guard=guard)
    assert result.success and result.get_asset_materialization_events() == []
    assert "below the 1e+09 GiB minimum" in instance.get_run_by_id(result.run_id).tags[NOT_RUN_TAG]
