"""A simulated week with no human: the clock, the schedules, the sensors and automation do everything.

From an empty root the clock advances hour by hour over 7 days while the simulator moves the world on:
new bookings and status changes every hour, one telemetry drop per hour, one drop 3 hours late, and one
hour that never arrives until day 5. At each tick every schedule, sensor and automation condition is
evaluated the way the daemons would (tests/week_simulation.py) and exactly the runs they request are
executed; the test launches nothing itself.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from audit.record import build_audit_records, finished_run_records
from definitions import build_definitions
from demo.simulator import read_truth
from resources.settings import load_settings
from tests.conftest import TEST_START
from tests.support import assert_kpi_daily_matches_truth, local_instance_for_test, warehouse_tables
from tests.test_alerting import webhook_alerting, webhook_server  # noqa: F401  (fixture)
from tests.week_simulation import WeekScenario, upstream_services

# 175 simulated hours, each with its runs: far longer than the suite's 900 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.week, pytest.mark.timeout(3 * 3600)]

WEEK = WeekScenario(start=datetime(TEST_START.year, TEST_START.month, TEST_START.day, tzinfo=UTC))
START, DAYS, LATE, MISSING, UNTIL = WEEK.start, WEEK.days, WEEK.late, WEEK.missing, WEEK.until
TELEMETRY_ONLY_DAILY = ("silver/stg_telemetry", "silver/telemetry_clean", "gold/fleet_health_daily")


def rebuilds_with_unchanged_inputs(instance, asset: str) -> list[tuple[str, str]]:
    """(partition, run id) of each materialization whose recorded inputs (Dagster's provenance: the data
    version of every input and the code version) equal those of the same partition's previous one."""
    import dagster as dg

    previous: dict[str | None, dict[str, str]] = {}
    unchanged = []
    records, cursor, more = [], None, True
    while more:  # pages of at most 10,000, the most the event log returns at once
        page = instance.fetch_materializations(
            dg.AssetKey(asset.split("/")), limit=10_000, cursor=cursor, ascending=True
        )
        records, cursor, more = [*records, *page.records], page.cursor, page.has_more
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        inputs = {
            name: value
            for name, value in (materialization.tags or {}).items()
            if name.startswith("dagster/input_data_version/") or name == "dagster/code_version"
        }
        if previous.get(materialization.partition) == inputs:
            unchanged.append((materialization.partition, record.run_id))
        previous[materialization.partition] = inputs
    return unchanged


def day(offset: int) -> str:
    return f"{START + timedelta(days=offset):%Y-%m-%d}"


@pytest.fixture
def week_settings(strata_root):
    with upstream_services():
        yield load_settings()


def test_a_simulated_week_runs_by_itself_and_publishes_only_complete_days(week_settings, tmp_path, webhook_server):  # noqa: F811
    settings = week_settings
    defs = build_definitions(settings)
    alerting = webhook_alerting(tmp_path, webhook_server.url)
    began = time.perf_counter()
    # The instance is kept in the test's directory: a failed week can be looked into afterwards.
    with local_instance_for_test(tmp_path / "dagster_home") as instance:
        daemons = WEEK.run(settings, defs, instance, alerting=alerting)
        log = daemons.log
        figures = {"wall_seconds": round(time.perf_counter() - began, 1), **log.figures()}
        (tmp_path / "week_figures.json").write_text(json.dumps(figures, indent=2))
        print(json.dumps(figures))
        records = build_audit_records(instance, finished_run_records(instance), secrets=())
        daily_assets = sorted({a for r in log.runs if r.partition and len(r.partition) == 10 for a in r.assets})
        unchanged_rebuilds = {asset: rebuilds_with_unchanged_inputs(instance, asset) for asset in daily_assets}

    # Nothing failed, and every run was started by a schedule, a sensor or automation.
    assert [r.run_id for r in log.runs if not r.success] == []
    assert {r.trigger for r in log.runs} == {"schedule", "sensor", "automation"}

    # Every hour's drop was loaded by the drop sensor's own run, the late and the missing ones too: each hour
    # up to the clock's last, whose drop lands when that hour ends (the clock stops at UNTIL).
    loaded = {p for at, p in log.built("bronze/telemetry")}
    hours = int((UNTIL - START).total_seconds() // 3600)
    assert loaded == {f"{START + timedelta(hours=h):%Y-%m-%d-%H:00}" for h in range(hours)}

    # Every complete day's Gold equals the generator's ground truth as of the end of the week.
    truth = read_truth(settings.demo_dir)
    week = {day(d) for d in range(DAYS)}
    kpi = [r for r in warehouse_tables(settings)["gold.kpi_daily"].to_pylist() if str(r["kpi_date"]) in week]
    truth_of_week = {
        key: ({d: v for d, v in value.items() if d in week} if isinstance(value, dict) else value)
        for key, value in truth.items()
    }
    assert_kpi_daily_matches_truth(kpi, truth_of_week)

    # The incomplete day was never published before its missing hour arrived, and then it was.
    for asset in (*TELEMETRY_ONLY_DAILY, "gold/kpi_daily"):
        builds_of_day3 = [at for at, p in log.built(asset) if p == day(2)]
        assert builds_of_day3 and min(builds_of_day3) >= MISSING.delivered_at, asset

    # Every day of the telemetry-fed models was built; the models that read telemetry alone, exactly once.
    for asset in TELEMETRY_ONLY_DAILY:
        partitions = [p for _, p in log.built(asset)]
        assert sorted(set(partitions)) == sorted(week | {day(DAYS)} & set(partitions)), asset
    for asset in TELEMETRY_ONLY_DAILY[:2]:
        partitions = [p for _, p in log.built(asset)]
        assert len(partitions) == len(set(partitions)), f"{asset} built a day twice: {sorted(partitions)}"
    # No day of any daily model was built again without a change of its inputs. (A Gold day that also reads a
    # dimension, e.g. fleet_health_daily and dim_vehicles, follows that dimension while it is the newest day.)
    assert daily_assets and unchanged_rebuilds == {asset: [] for asset in daily_assets}

    # Freshness alerted exactly for the late hour and the missing hour (and the Gold day it held back),
    # once each, and each recovered once.
    alerts = [(a["kind"], a["asset"], a["partition"]) for a in (r["json"]["alert"] for r in webhook_server.received)]
    late_hour, missing_hour = (f"{h.hour:%Y-%m-%d-%H:00}" for h in (LATE, MISSING))
    held_back_gold = {a for a in ("gold/fleet_health_daily", "gold/kpi_daily")}
    expected = {("bronze/telemetry", late_hour), ("bronze/telemetry", missing_hour)} | {
        (a, day(2)) for a in held_back_gold
    }
    assert sorted((a, p) for kind, a, p in alerts if kind == "freshness_breach") == sorted(expected)
    assert sorted((a, p) for kind, a, p in alerts if kind == "freshness_recovered") == sorted(expected)

    # The audit trail has one record per run, with the trigger that started it.
    assert sorted((r.run_id, r.trigger) for r in records) == sorted((r.run_id, r.trigger) for r in log.runs)

    # The cost of the daemons' own evaluations per simulated hour (the runs excluded).
    assert len(log.tick_seconds) == int((UNTIL - START).total_seconds() // 3600)
