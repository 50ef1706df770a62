"""Iceberg table maintenance on a real SqlCatalog: compaction keeps every row, expiry keeps the
retention, orphan removal removes only what no live snapshot references, conflicts are retried."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from audit.metadata import table_checksum
from resources.iceberg import IcebergCatalog
from resources.iceberg_maintenance import (
    RetentionPolicy,
    TableMaintenance,
    compact_table,
    expire_snapshots,
    list_table_files,
    maintain_table,
    referenced_files,
    remove_orphan_files,
)

SCHEMA = pa.schema(
    [
        pa.field("vehicle_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us"), nullable=False),
        pa.field("speed_kmh", pa.float64()),
    ]
)
DAY0 = datetime(2026, 10, 1)
POLICY = RetentionPolicy()


def catalog(root: Path) -> IcebergCatalog:
    return IcebergCatalog(uri=f"sqlite:///{root / 'catalog.db'}", warehouse=f"file://{root / 'warehouse'}")


def day_table(root: Path, transform: str = "day"):
    from pyiceberg.transforms import DayTransform, HourTransform

    table = catalog(root).load_or_create_table("bronze.readings", SCHEMA)
    with table.update_spec() as update:
        update.add_field("ts", DayTransform() if transform == "day" else HourTransform(), f"ts_{transform}")
    return table.refresh()


def rows(day: int, hour: int, n: int = 5, speed: float = 1.0) -> pa.Table:
    start = DAY0 + timedelta(days=day, hours=hour)
    return pa.Table.from_pylist(
        [{"vehicle_id": f"v{i}", "ts": start + timedelta(minutes=i), "speed_kmh": speed * i} for i in range(n)],
        schema=SCHEMA,
    )


def content(table) -> tuple[int, str]:
    data = table.refresh().scan().to_arrow()
    return data.num_rows, table_checksum(data, data.column_names)


def files_per_partition(table) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for task in table.refresh().scan().plan_files():
        key = (task.file.spec_id, tuple(task.file.partition[i] for i in range(len(task.file.partition))))
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_compaction_leaves_one_file_per_partition_with_the_same_rows(tmp_path: Path):
    table = day_table(tmp_path)
    for day in range(3):
        for hour in range(4):  # four small commits per day partition
            table.append(rows(day, hour))
    before = content(table)
    assert sorted(files_per_partition(table).values()) == [4, 4, 4]

    report = maintain_table(table, POLICY)

    assert sorted(files_per_partition(table).values()) == [1, 1, 1]
    assert content(table) == before
    assert (report.data_files_before, report.data_files_after) == (12, 3)
    assert (report.partitions_compacted, report.rows_rewritten) == (3, 60)
    # Nothing expired or removed yet: the replaced files are still referenced by snapshots in the retention.
    assert (report.snapshots_expired, report.orphan_files_removed) == (0, 0)
    compaction = table.current_snapshot()
    assert compaction.summary.additional_properties["strata.maintenance"] == "compaction"
    # A second run finds nothing to do.
    again = maintain_table(table, POLICY)
    assert (again.partitions_compacted, again.data_files_after) == (0, 3)
    assert table.current_snapshot().snapshot_id == compaction.snapshot_id


def test_hourly_files_of_an_older_spec_are_compacted_into_the_day_partition(tmp_path: Path):
    from pyiceberg.transforms import DayTransform

    table = day_table(tmp_path, transform="hour")
    for hour in range(3):
        table.append(rows(0, hour))
    table.append(rows(1, 0))
    with table.update_spec() as update:  # as Bronze telemetry moved from hourly to daily partitions
        update.remove_field("ts_hour")
        update.add_field("ts", DayTransform(), "ts_day")
    table = table.refresh()
    table.append(rows(0, 5))
    before = content(table)

    report = TableMaintenance("bronze.readings")
    compact_table(table, POLICY, report)

    spec_id = table.refresh().spec().spec_id
    day0 = (DAY0 - datetime(1970, 1, 1)).days  # Iceberg's day transform: days since the epoch
    assert files_per_partition(table) == {(spec_id, (day0,)): 1, (spec_id, (day0 + 1,)): 1}
    assert content(table) == before
    assert report.partitions_compacted == 2


def snapshot_ids(table) -> list[int]:
    return [s.snapshot_id for s in sorted(table.refresh().snapshots(), key=lambda s: s.timestamp_ms)]


def test_expiry_keeps_the_retention_the_snapshot_current_at_its_start_and_the_newest(tmp_path: Path):
    table = day_table(tmp_path)
    for hour in range(12):
        table.append(rows(0, hour))
        time.sleep(0.005)  # distinct snapshot timestamps
    ids = snapshot_ids(table)
    timestamps = {s.snapshot_id: s.timestamp_ms for s in table.snapshots()}
    # The retention starts just after the 7th snapshot: it was current then, so it stays for time travel.
    start_of_retention = datetime.fromtimestamp((timestamps[ids[6]] + 1) / 1000, UTC)
    policy = RetentionPolicy(snapshot_max_age=timedelta(days=7), min_snapshots=3)
    report = TableMaintenance("bronze.readings")

    expire_snapshots(table, policy, report, now=start_of_retention + timedelta(days=7))

    assert snapshot_ids(table) == ids[6:]
    assert report.snapshots_expired == 6
    assert table.scan(snapshot_id=ids[6]).to_arrow().num_rows == 35  # time travel inside the retention works
    # Far beyond the retention only the newest `min_snapshots` survive.
    expire_snapshots(table, policy, report, now=datetime.now(UTC) + timedelta(days=365))
    assert snapshot_ids(table) == ids[-3:]
    assert table.scan().to_arrow().num_rows == 60


def test_orphan_removal_removes_a_planted_orphan_and_nothing_referenced(tmp_path: Path):
    table = day_table(tmp_path)
    for hour in range(3):
        table.append(rows(0, hour))
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    orphan = data_dir / "orphan-from-a-crashed-write.parquet"
    orphan.write_bytes(b"x" * 1234)
    in_flight = data_dir / "being-written-now.parquet"
    in_flight.write_bytes(b"y" * 10)
    now = datetime.now(UTC) + timedelta(days=2)  # every file is older than the 24 h threshold ...
    os.utime(in_flight, (now.timestamp(), now.timestamp()))  # ... except the write in flight
    referenced = referenced_files(table)
    before = content(table)

    report = TableMaintenance("bronze.readings")
    remove_orphan_files(table, POLICY, report, now=now)

    assert not orphan.exists()
    assert in_flight.exists()
    assert (report.orphan_files_removed, report.bytes_removed) == (1, 1234)
    assert {path for path, _, _ in list_table_files(table)} >= referenced
    assert content(table) == before


def test_files_replaced_by_compaction_are_removed_once_their_snapshots_expire(tmp_path: Path):
    table = day_table(tmp_path)
    for hour in range(4):
        table.append(rows(0, hour))
    before = content(table)
    maintain_table(table, POLICY)  # compacts; the four small files stay referenced by the older snapshots
    policy = RetentionPolicy(snapshot_max_age=timedelta(days=7), min_snapshots=1)

    report = maintain_table(table, policy, now=datetime.now(UTC) + timedelta(days=30))

    assert (report.snapshots_before, report.snapshots_expired) == (5, 4)  # four appends, one compaction
    assert len(table.refresh().snapshots()) == 1
    listed = {path for path, _, _ in list_table_files(table)}
    assert listed == referenced_files(table)  # nothing unreferenced left, nothing referenced missing
    assert sum(1 for path in listed if path.endswith(".parquet")) == 1
    assert report.orphan_files_removed >= 4 and report.bytes_removed > 0
    assert content(table) == before


def test_compaction_after_a_concurrent_reload_plans_again_and_keeps_the_new_rows(tmp_path: Path):
    """A load replaces one hour while compaction works from an older state of the table: pyiceberg refuses
    the commit (a file compaction would delete is gone), `commit_with_retry` plans again, and the compacted
    table holds the reloaded rows, not the replaced ones."""
    from assets.bronze.telemetry import time_range_filter

    table = day_table(tmp_path)
    for hour in range(3):
        table.append(rows(0, hour))
    stale = catalog(tmp_path).load().load_table("bronze.readings")  # compaction's view, before the reload
    hour1 = DAY0 + timedelta(hours=1)
    hour1_only = time_range_filter("ts", hour1, hour1 + timedelta(hours=1))
    table.overwrite(rows(0, 1, n=7, speed=9.0), overwrite_filter=hour1_only)
    expected = content(table)

    report = TableMaintenance("bronze.readings")
    compact_table(stale, POLICY, report)

    assert content(table) == expected
    assert list(files_per_partition(table).values()) == [1]
    speeds = table.scan(row_filter=hour1_only).to_arrow()
    assert sorted(speeds.column("speed_kmh").to_pylist()) == [9.0 * i for i in range(7)]


def test_a_policy_that_would_race_writes_in_flight_is_refused():
    with pytest.raises(ValueError, match="orphan_min_age below 1 hour"):
        RetentionPolicy(orphan_min_age=timedelta(minutes=5))
    with pytest.raises(ValueError, match="min_snapshots must be at least 1"):
        RetentionPolicy(min_snapshots=0)


def test_the_maintenance_asset_maintains_every_table_of_the_retention_namespaces(tmp_path: Path):
    """The scheduled asset, materialized by Dagster: Bronze and audit tables compacted, other namespaces
    left alone, and the figures (files before/after, snapshots expired, bytes removed) in its metadata."""
    import dagster as dg

    from assets.maintenance.iceberg_tables import build_table_maintenance_asset
    from jobs.policies import TABLE_RETENTION

    iceberg = catalog(tmp_path)
    bronze = day_table(tmp_path)
    run_log = iceberg.load_or_create_table("audit.run_log", SCHEMA)
    untouched = iceberg.load_or_create_table("silver.scratch", SCHEMA)
    for hour in range(3):
        for table in (bronze, run_log, untouched):
            table.append(rows(0, hour))
    expected = {t.name(): content(t) for t in (bronze, run_log)}
    assert [namespace for _, namespace, _ in TABLE_RETENTION] == ["bronze", "audit"]

    result = dg.materialize([build_table_maintenance_asset(TABLE_RETENTION)], resources={"iceberg": iceberg})

    assert result.success
    [materialization] = [e.materialization for e in result.get_asset_materialization_events()]
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["strata/data_files_before"] == 6 and meta["strata/data_files_after"] == 2
    assert meta["strata/tables"]["bronze.readings"]["partitions_compacted"] == 1
    assert meta["strata/tables"]["audit.run_log"]["data_files_after"] == 1
    assert set(meta["strata/tables"]) == {"bronze.readings", "audit.run_log"}
    assert (meta["strata/snapshots_expired"], meta["strata/orphan_files_removed"], meta["strata/bytes_removed"]) == (
        0,
        0,
        0,
    )
    assert {t.name(): content(t) for t in (bronze, run_log)} == expected
    assert len(untouched.refresh().inspect.files()) == 3


def test_a_reload_that_started_before_a_compaction_replaces_its_hour_without_duplicates(tmp_path: Path):
    """The other order: a load plans its hour's delete on the files before compaction and commits after
    it. pyiceberg refuses the delete (files matching its hour were removed concurrently), and the load's
    `commit_with_retry` writes it again on the compacted table: the hour holds the new rows only."""
    from assets.bronze.telemetry import time_range_filter
    from resources.iceberg import commit_with_retry

    table = day_table(tmp_path)
    for hour in range(3):
        table.append(rows(0, hour))
    loader = catalog(tmp_path).load().load_table("bronze.readings")  # the load's view, before compaction
    compact_table(table, POLICY, TableMaintenance("bronze.readings"))
    hour1 = DAY0 + timedelta(hours=1)
    hour1_only = time_range_filter("ts", hour1, hour1 + timedelta(hours=1))

    commit_with_retry(loader, lambda target: target.overwrite(rows(0, 1, n=7, speed=9.0), overwrite_filter=hour1_only))

    reloaded = table.refresh().scan(row_filter=hour1_only).to_arrow()
    assert sorted(reloaded.column("speed_kmh").to_pylist()) == [9.0 * i for i in range(7)]
    assert table.scan().to_arrow().num_rows == 5 + 7 + 5
