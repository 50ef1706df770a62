"""The bookings promotion raw -> valid -> final: silver.bookings is written only from valid rows, by
merge on booking_id, so a changed booking replaces its older version in place and a booking whose new
version breaks the contract keeps its last valid version while the breaking one is quarantined."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import dagster as dg

from definitions import build_definitions
from resources.source_db import connect_adbc
from tests.conftest import TEST_START
from tests.support import generate_demo, refresh_unpartitioned, warehouse_tables

LATER = "2026-10-03 12:00:00.000000"  # after every generated change


def published_bookings(settings) -> dict[int, dict]:
    return {r["booking_id"]: r for r in warehouse_tables(settings)["silver.bookings"].to_pylist()}


def published_once(settings) -> tuple[Callable[..., dg.ExecuteInProcessResult], dg.DagsterInstance]:
    """One day of demo data, its first hour of telemetry and one refresh: silver.bookings is published."""
    generate_demo(settings, TEST_START, 1)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    defs.resolve_job_def("load_hourly").execute_in_process(instance=instance, partition_key="2026-10-01-00:00")
    refresh = partial(refresh_unpartitioned, defs)  # the OLTP extraction and the unpartitioned models
    assert refresh(instance=instance).success
    return refresh, instance


def test_final_bookings_are_merged_from_valid_rows_only(settings):
    refresh, instance = published_once(settings)
    before = published_bookings(settings)

    with connect_adbc(settings.source_database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT booking_id FROM bookings WHERE status = 'completed' ORDER BY booking_id LIMIT 2")
        refunded, broken = [row[0] for row in cur.fetchall()]
        # A valid change: the booking is cancelled after the fact.
        cur.execute(f"UPDATE bookings SET status = 'cancelled', updated_at = '{LATER}' WHERE booking_id = {refunded}")
        # A change that breaks the contract: an unknown status.
        cur.execute(f"UPDATE bookings SET status = 'lost', updated_at = '{LATER}' WHERE booking_id = {broken}")
        conn.commit()
    assert refresh(instance=instance).success
    after = published_bookings(settings)

    assert set(after) == set(before)  # merged in place: no booking added, none published twice
    assert after[refunded]["status"] == "cancelled"
    assert str(after[refunded]["changed_at"]) == "2026-10-03 12:00:00"
    assert after[broken] == before[broken]  # keeps its last valid version
    unchanged = set(before) - {refunded, broken}
    assert all(after[b] == before[b] for b in unchanged)

    quarantined = warehouse_tables(settings)["silver.bookings_quarantine"].to_pylist()
    assert [(r["booking_id"], r["rule"], r["offending_value"]) for r in quarantined] == [
        (broken, "status_allowed", "lost")
    ]


def test_a_row_the_contract_quarantines_does_not_block_the_promotion_that_handles_it(settings):
    """A negative distance is a Silver contract rule (quarantined row by row), so its staging test only
    warns: the build goes on, quarantines that booking and publishes the good changes of the same build."""
    refresh, instance = published_once(settings)
    before = published_bookings(settings)

    with connect_adbc(settings.source_database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT booking_id FROM bookings WHERE status = 'completed' ORDER BY booking_id LIMIT 2")
        good, negative = [row[0] for row in cur.fetchall()]
        cur.execute(f"UPDATE bookings SET status = 'cancelled', updated_at = '{LATER}' WHERE booking_id = {good}")
        cur.execute(f"UPDATE bookings SET distance_km = -1.5, updated_at = '{LATER}' WHERE booking_id = {negative}")
        conn.commit()
    result = refresh(instance=instance, raise_on_error=False)

    assert result.success
    after = published_bookings(settings)
    assert after[good]["status"] == "cancelled"  # the good change of the same build is published
    assert after[negative] == before[negative]  # the broken version is not
    quarantined = warehouse_tables(settings)["silver.bookings_quarantine"].to_pylist()
    assert [(r["booking_id"], r["rule"], r["offending_value"]) for r in quarantined] == [
        (negative, "distance_km_not_negative", "-1.5")
    ]
    staging_checks = {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey(["silver", "stg_bookings"])
    }
    distance = next(e for name, e in staging_checks.items() if "distance_km" in name)
    assert not distance.passed and distance.severity == dg.AssetCheckSeverity.WARN
    assert all(e.passed for name, e in staging_checks.items() if "distance_km" not in name)
