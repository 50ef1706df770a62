"""Freshness: the state rules, the transitions that alert, and the sensor end to end with a frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

from jobs.policies import BRONZE_TELEMETRY_WINDOW, GOLD_DAILY_DEADLINE, apply_global_policies
from sensors.freshness_sensor import (
    SENSOR_NAME,
    AssetFreshness,
    build_freshness_alert_sensor,
    freshness_state,
    parse_cursor,
    plan_freshness_alerts,
)
from tests.test_alerting import webhook_alerting, webhook_server  # noqa: F401  (fixture)


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("materialized", "now", "state"),
    [
        (utc(2, 3), utc(2, 5), "fresh"),  # before today's deadline: yesterday's window counts, and 03:00 is in it
        (utc(2, 3), utc(2, 6), "fresh"),  # built 00:00-06:00: meets today's 06:00 deadline
        (utc(2, 3), utc(3, 5, 59), "fresh"),  # ... and stays fresh until tomorrow's deadline
        (utc(2, 3), utc(3, 6), "late"),  # not rebuilt for the 3rd by 06:00
        (utc(2, 7), utc(3, 6, 30), "late"),  # built after the 2nd's deadline is too early for the 3rd's
        (utc(3, 6, 45), utc(3, 7), "fresh"),  # late, then materialized: fresh again until tomorrow
        (utc(1, 23), utc(2, 6, 1), "late"),  # built before midnight: cannot hold the previous day in full
        (None, utc(2, 7), "unknown"),  # never materialized: Dagster says UNKNOWN, and so do we
    ],
)
def test_gold_deadline_follows_dagsters_cron_rules(materialized, now, state):
    assert freshness_state(GOLD_DAILY_DEADLINE, materialized, now) == state


@pytest.mark.parametrize(
    ("age", "state"),
    [(timedelta(minutes=30), "fresh"), (timedelta(minutes=61), "warn"), (timedelta(hours=2), "late")],
)
def test_telemetry_time_window(age, state):
    now = utc(2, 12)
    assert freshness_state(BRONZE_TELEMETRY_WINDOW, now - age, now) == state


def test_only_transitions_alert():
    key = dg.AssetKey(["gold", "kpi_daily"])
    late = [AssetFreshness(key, GOLD_DAILY_DEADLINE, utc(1, 3))]
    fresh = [AssetFreshness(key, GOLD_DAILY_DEADLINE, utc(2, 7))]
    first = plan_freshness_alerts(late, {}, utc(2, 7))
    assert [a.kind for _, a in first.alerts] == ["freshness_breach"]
    assert plan_freshness_alerts(late, first.states, utc(2, 7, 1)).alerts == []
    recovered = plan_freshness_alerts(fresh, first.states, utc(2, 8))
    assert [a.kind for _, a in recovered.alerts] == ["freshness_recovered"]
    assert plan_freshness_alerts(fresh, recovered.states, utc(2, 9)).alerts == []
    assert plan_freshness_alerts(fresh, {}, utc(2, 8)).alerts == []  # fresh from the start: nothing to say


def test_an_unreadable_cursor_starts_over():
    assert parse_cursor("not json") == {}
    assert parse_cursor('{"states": {"gold/x": "late", "gold/y": "bogus"}}') == {"gold/x": "late"}


@dg.asset(key=["gold", "kpi_daily"], group_name="gold")
def kpi_daily() -> None:
    """A stand-in Gold table; the global policy table gives it the 06:00 UTC deadline."""


@dg.asset(key=["silver", "bookings"], group_name="silver")
def bookings() -> None:
    """No freshness policy: never alerted on."""


def test_late_gold_table_alerts_once_then_recovers(tmp_path, webhook_server):  # noqa: F811
    assets = apply_global_policies([kpi_daily, bookings])
    defs = dg.Definitions(assets=assets)
    assert defs.resolve_asset_graph().get(kpi_daily.key).freshness_policy == GOLD_DAILY_DEADLINE

    clock = {"now": utc(2, 5, 30)}
    sensor = build_freshness_alert_sensor(clock=lambda: clock["now"])
    alerting = webhook_alerting(tmp_path, webhook_server.url, ui_url="http://localhost:3000")

    with dg.instance_for_test() as instance:

        def materialize_at(moment: datetime) -> None:
            with freeze_time(moment):  # event timestamps come from Dagster's clock
                assert dg.materialize(assets, instance=instance, selection=[kpi_daily.key]).success

        cursor = None

        def tick_at(moment: datetime) -> list[dict]:
            nonlocal cursor
            clock["now"] = moment
            before = len(webhook_server.received)
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, definitions=defs, resources={"alerting": alerting}
            ) as context:
                result = sensor(context)
            cursor = result.cursor
            return [r["json"]["alert"] for r in webhook_server.received[before:]]

        materialize_at(utc(2, 4))  # on time for the 2nd
        assert tick_at(utc(2, 5, 30)) == []
        assert tick_at(utc(3, 5, 59)) == []  # not yet due for the 3rd

        [breach] = tick_at(utc(3, 6, 1))  # missed the 3rd's deadline
        assert breach["kind"] == "freshness_breach"
        assert breach["asset"] == "gold/kpi_daily"
        assert breach["facts"] == {"Last materialized": "2026-11-02 04:00 UTC", "Late since": "2026-11-03 06:00 UTC"}
        assert breach["url"] == "http://localhost:3000/assets/gold/kpi_daily"
        assert tick_at(utc(3, 6, 2)) == []  # still late: no repeat
        assert tick_at(utc(3, 7)) == []

        materialize_at(utc(3, 7, 30))
        [recovery] = tick_at(utc(3, 7, 31))
        assert recovery["kind"] == "freshness_recovered"
        assert recovery["asset"] == "gold/kpi_daily"
        assert tick_at(utc(3, 7, 32)) == []

        assert parse_cursor(cursor) == {"gold/kpi_daily": "fresh"}
    assert len(webhook_server.received) == 2


def test_an_undelivered_breach_is_retried_on_the_next_tick(tmp_path, webhook_server):  # noqa: F811
    assets = apply_global_policies([kpi_daily])
    defs = dg.Definitions(assets=assets)
    sensor = build_freshness_alert_sensor(clock=lambda: utc(3, 8))
    alerting = webhook_alerting(tmp_path, webhook_server.url)
    with dg.instance_for_test() as instance:
        with freeze_time(utc(2, 4)):
            dg.materialize(assets, instance=instance)

        def tick(cursor: str | None) -> str:
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, definitions=defs, resources={"alerting": alerting}
            ) as context:
                return sensor(context).cursor

        webhook_server.status = 500
        cursor = tick(None)
        assert parse_cursor(cursor) == {"gold/kpi_daily": "unknown"}  # not recorded as alerted
        webhook_server.status = 200
        cursor = tick(cursor)
        assert parse_cursor(cursor) == {"gold/kpi_daily": "late"}
        assert tick(cursor) == cursor
    assert [r["json"]["alert"]["kind"] for r in webhook_server.received] == ["freshness_breach"] * 2


def test_sensor_runs_by_default_every_minute():
    sensor = build_freshness_alert_sensor()
    assert sensor.name == SENSOR_NAME
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 60
