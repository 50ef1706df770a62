"""The bookings promotion raw -> valid -> final: silver.bookings is written only from valid rows, by
merge on booking_id, so a changed booking replaces its older version in place and a booking whose new
version breaks the contract keeps its last valid version while the breaking one is quarantined."""

from __future__ import annotations

import dagster as dg

from definitions import build_definitions
from resources.source_db import connect_adbc
from tests.conftest import TEST_START
from tests.support import generate_demo, warehouse_tables

LATER = "2026-10-03 12:00:00.000000"  # after every generated change


def published_bookings(settings) -> dict[int, dict]:
    return {r["booking_id"]: r for r in warehouse_tables(settings)["silver.bookings"].to_pylist()}


def test_final_bookings_are_merged_from_valid_rows_only(settings):
    generate_demo(settings, TEST_START, 1)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    defs.resolve_job_def("load_hourly").execute_in_process(instance=instance, partition_key="2026-10-01-00:00")
    refresh = defs.resolve_job_def("refresh_unpartitioned")
    assert refresh.execute_in_process(instance=instance).success
    before = published_bookings(settings)

    with connect_adbc(settings.source_database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT booking_id FROM bookings WHERE status = 'completed' ORDER BY booking_id LIMIT 2")
        refunded, broken = [row[0] for row in cur.fetchall()]
        # A valid change: the booking is cancelled after the fact.
        cur.execute(f"UPDATE bookings SET status = 'cancelled', updated_at = '{LATER}' WHERE booking_id = {refunded}")
        # A change that breaks the contract: an unknown status.
        cur.execute(f"UPDATE bookings SET status = 'lost', updated_at = '{LATER}' WHERE booking_id = {broken}")
        conn.commit()
    assert refresh.execute_in_process(instance=instance).success
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
