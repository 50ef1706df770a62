"""Drop -> sensor -> run -> Iceberg partition against a real S3 API (moto server on 127.0.0.1), with
Iceberg on S3 as well: quarantine, exactly-once requests, re-deliveries and a crashed run."""

import json
from datetime import datetime, timedelta

import dagster as dg
import pytest

import assets.bronze.telemetry as bronze_telemetry
from assets.bronze.telemetry import build_telemetry_asset
from assets.drops.ledger import loaded_drop_versions
from assets.drops.protocol import ERROR_NAME, drop_prefix
from assets.partitions import hourly_partitions
from demo.drop_producer import write_drop
from resources.iceberg import IcebergCatalog
from resources.ingestion_guard import IngestionGuard
from resources.landing import LandingZone
from sensors.drop_sensor import SensorCursor, build_drop_sensor, list_drops
from tests.test_bronze_telemetry import hour_rows

START = datetime(2026, 10, 1, 0)
HOURS = [START + timedelta(hours=h) for h in range(3)]


@pytest.fixture
def platform(s3_bucket, s3_endpoint, tmp_path):
    """Landing zone AND Iceberg warehouse on S3; only the catalog's SQLite file is local."""
    landing = LandingZone(root=f"s3://{s3_bucket}/landing", s3_endpoint_url=s3_endpoint)
    iceberg = IcebergCatalog(
        uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=f"s3://{s3_bucket}/warehouse",
        properties={
            "s3.endpoint": s3_endpoint,
            "s3.access-key-id": "testing",
            "s3.secret-access-key": "testing",
            "s3.region": "us-east-1",
        },
    )
    asset = build_telemetry_asset(hourly_partitions(START.date()))
    sensor = build_drop_sensor("telemetry", asset)
    return landing, iceberg, asset, sensor


def tick(platform, instance, cursor=None):
    landing, iceberg, _, sensor = platform
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"landing": landing, "iceberg": iceberg}
    )
    return sensor(context)


def run(platform, instance, request):
    landing, iceberg, asset, _ = platform
    return dg.materialize(
        [asset],
        partition_key=request.partition_key,
        tags={**request.tags, "dagster/run_key": request.run_key},
        resources={"landing": landing, "iceberg": iceberg, "guard": IngestionGuard(data_path="/tmp")},
        instance=instance,
        raise_on_error=False,
    )


def rows_per_hour(iceberg: IcebergCatalog) -> dict[datetime, int]:
    table = iceberg.load().load_table("bronze.telemetry").scan().to_arrow()
    counts: dict[datetime, int] = {}
    for ts in table.column("ts").to_pylist():
        hour = ts.replace(minute=0, second=0, microsecond=0)
        counts[hour] = counts.get(hour, 0) + 1
    return counts


def test_drops_flow_to_iceberg_once_and_broken_ones_are_quarantined(platform):
    landing, iceberg, _, _ = platform
    for hour in HOURS:
        write_drop(landing, "telemetry", hour, [hour_rows(hour)])
    bad = drop_prefix("telemetry", HOURS[1])
    landing.write_bytes(bad + "part-00000.parquet", b"garbage with another checksum")
    # A drop still being written (no _READY) is invisible.
    landing.write_bytes(drop_prefix("telemetry", START + timedelta(hours=5)) + "part-00000.parquet", b"...")

    with dg.instance_for_test() as instance:
        first = tick(platform, instance)
        assert sorted(r.partition_key for r in first.run_requests) == [
            "2026-10-01-00:00",
            "2026-10-01-01:00",
            "2026-10-01-02:00",
        ]
        assert len({r.run_key for r in first.run_requests}) == 3
        results = {r.partition_key: run(platform, instance, r) for r in first.run_requests}
        assert results["2026-10-01-00:00"].success and results["2026-10-01-02:00"].success
        failed = results["2026-10-01-01:00"]
        assert not failed.success

        # Only the good hours are in the table; the bad drop left the landing area for quarantine.
        assert rows_per_hour(iceberg) == {HOURS[0]: 12, HOURS[2]: 12}
        assert landing.list_keys(bad) == []
        quarantined = [k for k in landing.list_keys("quarantine/" + bad) if k.endswith(ERROR_NAME)]
        assert len(quarantined) == 1
        reason = json.loads(landing.read_bytes(quarantined[0]))
        assert (reason["check"], reason["file"]) == ("size", "part-00000.parquet")
        assert reason["run_id"] == failed.run_id
        observed = [
            e
            for e in instance.all_logs(failed.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "ASSET_OBSERVATION"
        ]
        assert (
            observed[0].dagster_event.asset_observation_data.asset_observation.metadata["strata/check"].value == "size"
        )

        # Next tick: nothing new, and the skip reason says what was seen.
        second = tick(platform, instance, first.cursor)
        assert second.run_requests == []
        assert "2 already loaded" in second.skip_reason.skip_message
        assert "1 incomplete drop(s) without _READY" in second.skip_reason.skip_message

        # An identical re-delivery is recognised, even by a sensor that lost its cursor.
        write_drop(landing, "telemetry", HOURS[0], [hour_rows(HOURS[0])])
        assert tick(platform, instance, first.cursor).run_requests == []
        assert tick(platform, instance, None).run_requests == []

        # A corrected re-delivery of the bad hour and a new version of hour 0 are both loaded.
        write_drop(landing, "telemetry", HOURS[1], [hour_rows(HOURS[1])])
        write_drop(landing, "telemetry", HOURS[0], [hour_rows(HOURS[0], vehicles=2)])
        third = tick(platform, instance, second.cursor)
        assert sorted(r.partition_key for r in third.run_requests) == ["2026-10-01-00:00", "2026-10-01-01:00"]
        assert all(run(platform, instance, r).success for r in third.run_requests)
        assert rows_per_hour(iceberg) == {HOURS[0]: 8, HOURS[1]: 12, HOURS[2]: 12}
        assert tick(platform, instance, third.cursor).run_requests == []


def test_a_run_that_crashes_after_its_commit_loads_the_drop_once_when_rerun(platform, monkeypatch):
    landing, iceberg, _, _ = platform
    write_drop(landing, "telemetry", HOURS[0], [hour_rows(HOURS[0])])
    with dg.instance_for_test() as instance:
        request = tick(platform, instance).run_requests[0]

        def crash(*args, **kwargs):
            raise ConnectionError("ledger unreachable")

        monkeypatch.setattr(bronze_telemetry, "record_loaded_drops", crash)
        assert not run(platform, instance, request).success
        assert loaded_drop_versions(iceberg, "telemetry") == set()
        monkeypatch.undo()

        # The drop is not in the ledger, so a sensor without cursor requests it again; the re-run
        # replaces the hour instead of adding a second copy.
        again = tick(platform, instance, None).run_requests
        assert [r.run_key for r in again] == [request.run_key]
        assert run(platform, instance, again[0]).success
        assert rows_per_hour(iceberg) == {HOURS[0]: 12}
        assert len(loaded_drop_versions(iceberg, "telemetry")) == 1


def test_the_cursor_lists_incrementally_from_the_lookback_window(platform):
    landing, _, _, _ = platform
    for day in range(6):
        write_drop(landing, "telemetry", START + timedelta(days=day), [hour_rows(START + timedelta(days=day))])
    with dg.instance_for_test() as instance:
        first = tick(platform, instance)
        assert len(first.run_requests) == 6
        cursor = SensorCursor.parse(first.cursor)
        assert cursor.list_after == "telemetry/dt=2026-10-03/hour=00"  # 72 h before the newest drop
        assert sorted(cursor.requested) == [drop_prefix("telemetry", START + timedelta(days=d)) for d in (2, 3, 4, 5)]
        second = tick(platform, instance, first.cursor)
        assert second.run_requests == []
        assert "listed 12 object(s) after 'telemetry/dt=2026-10-03/hour=00'" in second.skip_reason.skip_message


def test_a_ready_drop_under_hour_24_is_reported_and_skipped_on_s3(platform):
    """Used to raise `ValueError: hour must be in 0..23` on every tick, so no later drop was requested."""
    landing, _, _, _ = platform
    bad = "telemetry/dt=2026-10-01/hour=24/"
    landing.write_bytes(bad + "_manifest.json", b"{}")
    landing.write_bytes(bad + "_READY", b"")
    write_drop(landing, "telemetry", HOURS[2], [hour_rows(HOURS[2])])
    with dg.instance_for_test() as instance:
        first = tick(platform, instance)
        assert [r.partition_key for r in first.run_requests] == ["2026-10-01-02:00"]
        second = tick(platform, instance, first.cursor)
        assert second.run_requests == []
        assert second.skip_reason.skip_message.endswith(
            "; 2 key(s) outside the layout telemetry/dt=YYYY-MM-DD/hour=HH/<file>, skipped: "
            "'telemetry/dt=2026-10-01/hour=24/_READY' (hour='24' is not an hour 00..23)"
        )


def test_a_big_backlog_is_listed_in_bounded_ticks_without_losing_a_drop(tmp_path):
    landing = LandingZone(root=str(tmp_path / "landing"))
    hours = [START + timedelta(hours=h) for h in range(7)]
    for hour in hours:
        write_drop(landing, "telemetry", hour, [hour_rows(hour)])
    seen, cursor, ticks = [], SensorCursor(), 0
    while True:
        listing = list_drops(landing, "telemetry", cursor.list_after or None, limit=5)  # 3 objects per drop
        ticks += 1
        seen += [d.prefix for d in listing.ready]
        assert not listing.incomplete  # a drop cut by the limit is left whole for the next tick
        if listing.resume_after is None:
            break
        cursor = SensorCursor(listing.resume_after)
    assert seen == [drop_prefix("telemetry", h) for h in hours]
    assert ticks == 7
