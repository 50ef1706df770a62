"""Bronze telemetry range runs: each hour's own metadata, one bounded Iceberg commit, and a load that
never writes outside the hours of its run."""

import dataclasses
import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from assets.bronze.quarantine import quarantined_rows
from assets.bronze.telemetry import time_range_filter
from assets.drops.protocol import drop_prefix, manifest_partition, partition_key
from assets.drops.verification import DropVerificationError, verify_drop
from audit.metadata import combine_checksums
from resources.landing import LandingZone
from tests.test_bronze_telemetry import CONTRACT, FIRST_HOUR, hour_rows, land, resources, run_hours


def telemetry_table(root: Path):
    return resources(root)["iceberg"].load().load_table("bronze.telemetry")


def rows_of_hour(root: Path, hour: datetime) -> pa.Table:
    scan = telemetry_table(root).scan(row_filter=time_range_filter("ts", hour, hour + timedelta(hours=1)))
    return scan.to_arrow().sort_by([("vehicle_id", "ascending"), ("ts", "ascending")])


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetMaterialization]:
    events = [e.materialization for e in result.get_asset_materialization_events()]
    by_partition = {m.partition: m for m in events}
    assert len(by_partition) == len(events), "one materialization per partition, no copies"
    return by_partition


def hours_from(first: datetime, count: int) -> list[datetime]:
    return [first + timedelta(hours=h) for h in range(count)]


def test_a_three_hour_run_reports_each_hours_own_values_equal_to_the_table(tmp_path):
    hours = hours_from(FIRST_HOUR, 3)
    for vehicles, hour in zip((2, 3, 4), hours, strict=True):
        land(tmp_path / "landing", hour, hour_rows(hour, vehicles=vehicles))
    result = run_hours(tmp_path, hours[0], hours[-1])

    events = materializations(result)
    assert sorted(events) == [partition_key(h) for h in hours]
    counts = []
    for hour in hours:
        meta = {k: v.value for k, v in events[partition_key(hour)].metadata.items()}
        in_table = rows_of_hour(tmp_path, hour).num_rows
        counts.append(meta["dagster/partition_row_count"])
        assert meta["dagster/partition_row_count"] == meta["strata/rows_out"] == meta["strata/rows_in"] == in_table
        assert meta["strata/data_window"] == f"[{hour.isoformat()}, {(hour + timedelta(hours=1)).isoformat()})"
        assert meta["strata/input_partitions"] == [partition_key(hour)]
        prefix = f"telemetry/dt={hour:%Y-%m-%d}/hour={hour:%H}/"
        assert meta["strata/drops"] == [prefix]
        data = (tmp_path / "landing" / prefix / "part-00000.parquet").read_bytes()
        assert meta["strata/checksum"] == combine_checksums([hashlib.sha256(data).hexdigest()])
        assert meta["strata/snapshot_id"] == str(telemetry_table(tmp_path).current_snapshot().snapshot_id)
    assert counts == [8, 12, 16]


def largest_event_size(result: dg.ExecuteInProcessResult) -> int:
    return max(len(dg.serialize_value(m)) for m in materializations(result).values())


def test_one_partitions_metadata_has_the_same_bounded_size_whatever_the_run_length(tmp_path):
    hours = hours_from(FIRST_HOUR, 24)
    for hour in hours:
        land(tmp_path / "landing", hour, hour_rows(hour))
    one_hour = largest_event_size(run_hours(tmp_path, hours[0], hours[0]))
    one_day = largest_event_size(run_hours(tmp_path, hours[0], hours[-1]))
    # The run's length only changes digits (e.g. the table's total row count), never a list's length.
    assert abs(one_day - one_hour) <= 16
    assert one_day < 6_000


def test_a_run_is_one_commit_and_a_rerun_adds_a_bounded_number_of_files(tmp_path):
    hours = hours_from(FIRST_HOUR, 48)  # two days
    for hour in hours:
        land(tmp_path / "landing", hour, hour_rows(hour, vehicles=1, per_vehicle=2))
    for attempt in range(2):
        before = telemetry_table(tmp_path).metadata.metadata_log if attempt else []
        result = run_hours(tmp_path, hours[0], hours[-1])
        table = telemetry_table(tmp_path)
        # One file per day partition, whatever the number of hours, after the first run and after a rerun.
        assert table.inspect.files().num_rows == 2
        assert table.scan().to_arrow().num_rows == 96
        run_snapshots = [
            s for s in table.snapshots() if s.summary.additional_properties.get("strata.run_id") == result.run_id
        ]
        added = sum(int(s.summary.additional_properties.get("added-data-files", 0)) for s in run_snapshots)
        assert added == 2
        if attempt:
            # One catalog commit: the metadata log grew by one entry (the delete and the append are one commit).
            assert len(table.metadata.metadata_log) == len(before) + 1
            deleted = sum(int(s.summary.additional_properties.get("deleted-data-files", 0)) for s in run_snapshots)
            assert deleted == 2


def test_rerunning_one_hour_inside_a_loaded_day_replaces_only_that_hour(tmp_path):
    hours = hours_from(FIRST_HOUR, 6)
    for hour in hours:
        land(tmp_path / "landing", hour, hour_rows(hour))
    run_hours(tmp_path, hours[0], hours[-1])
    others = {h: rows_of_hour(tmp_path, h) for h in hours if h != hours[2]}
    land(tmp_path / "landing", hours[2], hour_rows(hours[2], vehicles=1))
    result = run_hours(tmp_path, hours[2], hours[2])
    assert materializations(result)[partition_key(hours[2])].metadata["dagster/partition_row_count"].value == 4
    assert rows_of_hour(tmp_path, hours[2]).num_rows == 4
    assert {h: rows_of_hour(tmp_path, h) for h in others} == others


def stray_drop(hour: datetime) -> pa.Table:
    """An hour's drop with two rows of hour 02 and one of the year 2000 among its 12 own rows."""
    rows = hour_rows(hour).to_pylist()
    rows[0]["ts"] = hour.replace(hour=2, minute=5)
    rows[1]["ts"] = hour.replace(hour=2, minute=6)
    rows[2]["ts"] = datetime(2000, 1, 1, 0, 0, 1)
    return pa.Table.from_pylist(rows, schema=hour_rows(hour).schema)


def test_rows_outside_the_drops_hour_are_quarantined_and_no_other_partition_changes(tmp_path):
    two, thirteen = FIRST_HOUR.replace(hour=2), FIRST_HOUR.replace(hour=13)
    land(tmp_path / "landing", two, hour_rows(two))
    run_hours(tmp_path, two, two)
    hour_two_before = rows_of_hour(tmp_path, two)

    land(tmp_path / "landing", thirteen, stray_drop(thirteen))
    result = run_hours(tmp_path, thirteen, thirteen)

    assert rows_of_hour(tmp_path, two) == hour_two_before  # hour 02 is exactly as it was
    assert rows_of_hour(tmp_path, thirteen).num_rows == 9
    ts = telemetry_table(tmp_path).scan().to_arrow().column("ts").to_pylist()
    assert min(ts) >= two and not any(t.year == 2000 for t in ts)
    meta = {k: v.value for k, v in materializations(result)[partition_key(thirteen)].metadata.items()}
    assert (meta["strata/rows_in"], meta["strata/rows_out"], meta["strata/rows_quarantined"]) == (12, 9, 3)
    assert meta["dagster/partition_row_count"] == 9
    records = quarantined_rows(resources(tmp_path)["iceberg"], dataset="telemetry").to_pylist()
    assert sorted((r["rule"], r["column_name"], r["offending_value"], r["partition_key"]) for r in records) == [
        ("ts_within_drop_hour", "ts", "2000-01-01 00:00:01.000000", "2026-10-01-13:00"),
        ("ts_within_drop_hour", "ts", "2026-10-01 02:05:00.000000", "2026-10-01-13:00"),
        ("ts_within_drop_hour", "ts", "2026-10-01 02:06:00.000000", "2026-10-01-13:00"),
    ]
    assert json.loads(records[0]["raw_row"])["vehicle_id"] == 1


def test_a_bad_drop_on_a_later_day_leaves_the_table_and_its_files_as_they_were(tmp_path):
    hours = hours_from(FIRST_HOUR + timedelta(hours=22), 3)  # 22:00 and 23:00, then 00:00 the next day
    for hour in hours:
        land(tmp_path / "landing", hour, hour_rows(hour))
    run_hours(tmp_path, hours[0], hours[-1])
    snapshot = telemetry_table(tmp_path).current_snapshot().snapshot_id
    files_before = sorted((tmp_path / "wh").rglob("*.parquet"))

    land(tmp_path / "landing", hours[0], hour_rows(hours[0], vehicles=2))  # day 1 re-delivered, fine
    drop = tmp_path / "landing" / f"telemetry/dt={hours[2]:%Y-%m-%d}/hour=00/part-00000.parquet"
    drop.write_bytes(b"truncated")  # day 2 broken: day 1's files are written first, then the run fails
    result = run_hours(tmp_path, hours[0], hours[-1], raise_on_error=False)

    assert not result.success
    assert telemetry_table(tmp_path).current_snapshot().snapshot_id == snapshot
    assert sorted((tmp_path / "wh").rglob("*.parquet")) == files_before  # the run's own files removed


def test_a_contract_can_refuse_a_drop_with_rows_outside_its_hour_instead(tmp_path):
    thirteen = FIRST_HOUR.replace(hour=13)
    land(tmp_path / "landing", thirteen, stray_drop(thirteen))
    refusing = dataclasses.replace(CONTRACT, outside_drop_hour="refuse")
    zone = LandingZone(root=str(tmp_path / "landing"))
    with pytest.raises(DropVerificationError) as refused:
        verify_drop(zone, drop_prefix("telemetry", thirteen), refusing, manifest_partition(thirteen))
    assert (refused.value.check, refused.value.file) == ("drop_hour", "part-00000.parquet")
    assert "3 row(s) with ts outside the drop's hour [2026-10-01 13:00, 2026-10-01 14:00)" in str(refused.value)
