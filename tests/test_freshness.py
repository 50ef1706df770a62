"""Freshness: the state rules, the transitions that alert, and the sensor end to end with a frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

from jobs.partition_freshness import CHECK_NAME, partition_freshness, resolve_rules
from jobs.policies import (
    EACH_HOUR_WITHIN_2H,
    GOLD_DAILY_DEADLINE,
    GOLD_PREVIOUS_DAY_BY_0600,
    PARTITION_FRESHNESS,
    apply_global_policies,
)
from sensors.freshness_sensor import (
    SENSOR_NAME,
    AssetFreshness,
    PartitionState,
    build_freshness_alert_sensor,
    freshness_state,
    parse_cursor,
    parse_partition_states,
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
def test_time_window_policy(age, state):
    policy = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=2), warn_window=timedelta(hours=1))
    now = utc(2, 12)
    assert freshness_state(policy, now - age, now) == state


DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC")
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00", timezone="UTC")


@pytest.mark.parametrize(
    ("held", "now", "late"),
    [
        ({"2026-11-01"}, utc(3, 5, 59), ()),  # 2 Nov is due at 06:00 on the 3rd
        ({"2026-11-01"}, utc(3, 6), ("2026-11-02",)),
        ({"2026-11-02"}, utc(3, 6), ("2026-11-01",)),  # yesterday present, a gap before it: still late
        ({"2026-11-01", "2026-11-02"}, utc(3, 23), ()),
        (set(), utc(12, 7), tuple(f"2026-11-{d:02d}" for d in range(5, 12))),  # the last 7 due days
    ],
)
def test_gold_previous_day_by_0600_judges_the_days_held(held, now, late):
    result = partition_freshness(GOLD_PREVIOUS_DAY_BY_0600, DAILY, held, now)
    assert result.late == late and result.warn == ()


def test_each_hour_within_2h_warns_after_one_and_fails_after_two():
    held = {f"2026-11-02-{h:02d}:00" for h in range(24) if h != 10} | {f"2026-11-01-{h:02d}:00" for h in range(24)}
    # the 10:00 hour ends at 11:00: fine until 12:00, a warning until 13:00, then late
    assert partition_freshness(EACH_HOUR_WITHIN_2H, HOURLY, held, utc(2, 11, 59)).state == "fresh"
    assert partition_freshness(EACH_HOUR_WITHIN_2H, HOURLY, held, utc(2, 12, 30)).warn == ("2026-11-02-10:00",)
    late = partition_freshness(EACH_HOUR_WITHIN_2H, HOURLY, held, utc(2, 13))
    assert (late.late, late.warn) == (("2026-11-02-10:00",), ())
    # the newest hours are due later: 11:00 ends at 12:00, due by 14:00
    assert partition_freshness(EACH_HOUR_WITHIN_2H, HOURLY, held, utc(2, 13)).due == 24 + 12


def test_the_policy_table_judges_gold_marts_and_bronze_telemetry_on_partitions(settings):
    from definitions import build_definitions

    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    covered = {key.asset_key.to_user_string() for key in graph.asset_check_keys if key.name == CHECK_NAME}
    assert covered == {
        "bronze/telemetry",
        "gold/fct_bookings",
        "gold/fleet_health_daily",
        "gold/kpi_daily",
        "gold/demand_features_hourly",
        # the second domain's daily marts and hourly drop feeds, by the same policy rows
        "bronze/journal_lines",
        "bronze/journal_control_totals",
        "gold/field_production_daily",
        "gold/field_production_variance",
        "gold/trial_balance_daily",
        "gold/trial_balance_reconciliation",
    }
    # the materialization-time policy is left to the unpartitioned Gold tables (the dimensions)
    with_policy = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).freshness_policy}
    assert with_policy == {"gold/dim_customers", "gold/dim_stations", "gold/dim_vehicles"}
    # no job runs the freshness checks: the sensor judges them at its clock
    for job in defs.jobs:
        assert CHECK_NAME not in {
            k.name for k in defs.resolve_job_def(job.name).asset_layer.asset_graph.asset_check_keys
        }


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


@dg.asset(
    key=["bronze", "telemetry"],
    group_name="bronze",
    partitions_def=HOURLY,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def telemetry_hours() -> None:
    """A stand-in for the hourly Bronze table."""


@dg.asset(key=["gold", "fleet_health_daily"], group_name="gold", partitions_def=DAILY, tags={"daily": ""})
def fleet_health_days() -> None:
    """A stand-in for a daily Gold mart."""


def latest_check(instance, key: dg.AssetKey):
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([dg.AssetCheckKey(key, CHECK_NAME)])
    return record[dg.AssetCheckKey(key, CHECK_NAME)].event.dagster_event.event_specific_data


def test_a_late_hour_and_a_missing_day_alert_once_each_and_recover(tmp_path, webhook_server):  # noqa: F811
    assets = [telemetry_hours, fleet_health_days]
    rules = resolve_rules(PARTITION_FRESHNESS, assets)
    defs = dg.Definitions(assets=assets)
    clock = {"now": utc(1, 12)}
    sensor = build_freshness_alert_sensor(clock=lambda: clock["now"], partition_rules=rules)
    alerting = webhook_alerting(tmp_path, webhook_server.url)
    hours = [f"2026-11-01-{h:02d}:00" for h in range(24)] + [f"2026-11-02-{h:02d}:00" for h in range(24)]

    with dg.instance_for_test() as instance:
        cursor = None

        def load(key, first: str, last: str | None = None):
            tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last or first}
            assert dg.materialize(assets, selection=[key], tags=tags, instance=instance).success

        def tick_at(moment: datetime) -> list[tuple[str, str, str]]:
            nonlocal cursor
            clock["now"] = moment
            before = len(webhook_server.received)
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, definitions=defs, resources={"alerting": alerting}
            ) as context:
                cursor = sensor(context).cursor
            return [
                (a["kind"], a["asset"], a["partition"])
                for a in (r["json"]["alert"] for r in webhook_server.received[before:])
            ]

        load(telemetry_hours.key, hours[0], hours[2])  # the 03:00 drop is late
        load(telemetry_hours.key, hours[4], hours[11])
        assert tick_at(utc(1, 6)) == [("freshness_breach", "bronze/telemetry", "2026-11-01-03:00")]  # due 06:00
        assert tick_at(utc(1, 7)) == []  # still late: no repeat
        assert latest_check(instance, telemetry_hours.key).passed is False
        load(telemetry_hours.key, "2026-11-01-03:00")  # three hours late
        assert tick_at(utc(1, 7, 30)) == [("freshness_recovered", "bronze/telemetry", "2026-11-01-03:00")]
        assert latest_check(instance, telemetry_hours.key).passed is True

        # 1 November in Gold is due at 06:00 on the 2nd; a rebuild of nothing else can hide that it is missing
        load(telemetry_hours.key, hours[12], hours[-1])
        assert tick_at(utc(2, 6, 1)) == [("freshness_breach", "gold/fleet_health_daily", "2026-11-01")]
        assert tick_at(utc(2, 9)) == []
        evaluation = latest_check(instance, fleet_health_days.key)
        assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.ERROR)
        assert evaluation.metadata["strata/late_partitions"].value == ["2026-11-01"]
        load(fleet_health_days.key, "2026-11-01")
        assert tick_at(utc(2, 9, 5)) == [("freshness_recovered", "gold/fleet_health_daily", "2026-11-01")]
        assert tick_at(utc(2, 9, 10)) == []
        assert parse_partition_states(cursor)["gold/fleet_health_daily"] == PartitionState()
    assert len(webhook_server.received) == 4
