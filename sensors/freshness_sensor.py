"""Freshness alerting: one alert when an asset turns late, one when it recovers, nothing in between.

Dagster OSS evaluates freshness policies (its freshness daemon, on by default, feeds the fresh/late
badges in the UI) but delivers no alerts. This sensor fills that gap. It computes each asset's state
itself with `freshness_state`, a pure function that follows the same rules as Dagster's evaluators
(`dagster._core.definitions.freshness_evaluator`) so the alert and the UI agree, and that takes the
clock as an argument so tests can freeze time. The daemon's stored state is not read: it only exists
where the daemon runs and cannot be evaluated at an injected time.

The cursor remembers each asset's last state, so only transitions alert: -> late is a breach,
late -> fresh/warn is a recovery. A transition whose alert reached no channel at all is not
recorded, so the next tick tries again instead of losing it.

Partitioned tables are judged on their partitions instead (jobs/partition_freshness.py): which due
day or hour is missing at the sensor's clock. Per asset, the cursor holds the partitions already
reported late: a partition that turns late alerts once (partitions turning late in the same tick
share one alert), and once it is loaded, one recovery alert says so. A partition still missing when
it leaves the lookback window is dropped from the cursor without a recovery: a backfill's business.
Whenever an asset's late/warn partitions change, the sensor records the result as the evaluation of
its `partition_freshness` asset check (without a run), so the UI shows it on the asset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import dagster as dg
from dagster._core.definitions.freshness import CronFreshnessPolicy, TimeWindowFreshnessPolicy

from jobs.partition_freshness import (
    CHECK_NAME,
    PartitionFreshness,
    PartitionRule,
    check_evaluation,
    listed,
    partition_freshness,
)
from resources.alerting import Alert, AlertingResource

if TYPE_CHECKING:
    from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

FreshnessStatus = Literal["fresh", "warn", "late", "unknown"]
SENSOR_NAME = "freshness_alert_sensor"


def utc_now() -> datetime:
    return datetime.now(UTC)


def latest_deadline(policy: dg.FreshnessPolicy, now: datetime) -> datetime:
    """The last cron deadline at or before `now` (Dagster's "latest completed cron tick")."""
    from dagster._utils.schedules import get_latest_completed_cron_tick

    return get_latest_completed_cron_tick(policy.deadline_cron, now, policy.timezone)


def freshness_state(
    policy: dg.FreshnessPolicy, last_materialized_at: datetime | None, now: datetime
) -> FreshnessStatus:
    """fresh / warn / late for an asset last materialized at `last_materialized_at`, as seen at `now`.

    Time window: late once the last materialization is `fail_window` old, warn after `warn_window`.
    Cron: late when the last materialization is older than the start of the window of the latest
    deadline (`deadline - lower_bound_delta`), i.e. it missed the latest deadline; cron has no warn.
    Never materialized is `unknown`, as in Dagster: a fresh install must not page anyone.
    """
    if last_materialized_at is None:
        return "unknown"
    if isinstance(policy, TimeWindowFreshnessPolicy):
        age = now - last_materialized_at
        if age >= policy.fail_window.to_timedelta():
            return "late"
        if policy.warn_window and age >= policy.warn_window.to_timedelta():
            return "warn"
        return "fresh"
    if isinstance(policy, CronFreshnessPolicy):
        window_start = latest_deadline(policy, now) - policy.lower_bound_delta
        return "fresh" if last_materialized_at >= window_start else "late"
    raise TypeError(f"unsupported freshness policy {type(policy).__name__}")


def describe_policy(policy: dg.FreshnessPolicy) -> str:
    if isinstance(policy, TimeWindowFreshnessPolicy):
        return f"materialized at least every {policy.fail_window.to_timedelta()}"
    return (
        f"materialized by each `{policy.deadline_cron}` ({policy.timezone}) deadline, "
        f"at most {policy.lower_bound_delta} before it"
    )


def late_since(policy: dg.FreshnessPolicy, last_materialized_at: datetime, now: datetime) -> datetime:
    """When the asset became late: the missed deadline, or when the time window ran out."""
    if isinstance(policy, TimeWindowFreshnessPolicy):
        return last_materialized_at + policy.fail_window.to_timedelta()
    return latest_deadline(policy, now)


@dataclass(frozen=True)
class AssetFreshness:
    key: dg.AssetKey
    policy: dg.FreshnessPolicy
    last_materialized_at: datetime | None


@dataclass
class FreshnessPlan:
    states: dict[str, FreshnessStatus]
    alerts: list[tuple[str, Alert]] = field(default_factory=list)  # (asset key string, alert)
    counts: dict[str, int] = field(default_factory=dict)


def _fmt(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def breach_alert(asset: AssetFreshness, now: datetime, link: str | None) -> Alert:
    key = asset.key.to_user_string()
    since = late_since(asset.policy, asset.last_materialized_at, now) if asset.last_materialized_at else None
    overdue = f" ({_round(now - since)} overdue)" if since else ""
    return Alert(
        kind="freshness_breach",
        title=f"{key} is late",
        details=f"`{key}` should be {describe_policy(asset.policy)}; it is late since {_fmt(since)}{overdue}.",
        asset=key,
        url=link,
        facts={"Last materialized": _fmt(asset.last_materialized_at), "Late since": _fmt(since)},
    )


def recovery_alert(asset: AssetFreshness, state: FreshnessStatus, link: str | None) -> Alert:
    key = asset.key.to_user_string()
    return Alert(
        kind="freshness_recovered",
        title=f"{key} is fresh again",
        details=f"`{key}` was materialized at {_fmt(asset.last_materialized_at)} and is {state} again.",
        asset=key,
        url=link,
        facts={"Last materialized": _fmt(asset.last_materialized_at)},
    )


def _round(delta: timedelta) -> timedelta:
    return timedelta(minutes=int(delta.total_seconds() // 60))


def plan_freshness_alerts(
    assets: Iterable[AssetFreshness],
    previous: Mapping[str, FreshnessStatus],
    now: datetime,
    link: Callable[[dg.AssetKey], str | None] = lambda key: None,
) -> FreshnessPlan:
    """New state per asset, and the alerts its transitions call for. Pure: tests drive it with any clock."""
    plan = FreshnessPlan(states={})
    for asset in assets:
        key = asset.key.to_user_string()
        state = freshness_state(asset.policy, asset.last_materialized_at, now)
        before = previous.get(key, "unknown")
        plan.states[key] = state
        plan.counts[state] = plan.counts.get(state, 0) + 1
        if state == "late" and before != "late":
            plan.alerts.append((key, breach_alert(asset, now, link(asset.key))))
        elif before == "late" and state in ("fresh", "warn"):
            plan.alerts.append((key, recovery_alert(asset, state, link(asset.key))))
    return plan


@dataclass(frozen=True)
class PartitionState:
    """An asset's partitions reported late (alerted) and past their warning, as of the last tick."""

    late: tuple[str, ...] = ()
    warn: tuple[str, ...] = ()


@dataclass
class PartitionPlan:
    states: dict[str, PartitionState]
    alerts: list[tuple[str, Alert]] = field(default_factory=list)  # (asset key string, alert)
    changed: list[dg.AssetKey] = field(default_factory=list)  # assets whose check result changed


def plan_partition_alerts(
    results: Mapping[dg.AssetKey, PartitionFreshness],
    materialized: Mapping[dg.AssetKey, set[str]],
    previous: Mapping[str, PartitionState],
    link: Callable[[dg.AssetKey], str | None] = lambda key: None,
) -> PartitionPlan:
    """Pure: the partitions newly late (one breach alert per asset) and newly loaded after being late
    (one recovery alert per asset), and the assets whose late/warn partitions changed."""
    plan = PartitionPlan(states={})
    for key, result in sorted(results.items(), key=lambda item: item[0].to_user_string()):
        name = key.to_user_string()
        before = previous.get(name)
        state = PartitionState(result.late, result.warn)
        plan.states[name] = state
        if before != state:
            plan.changed.append(key)
        already = set(before.late) if before else set()
        newly_late = [p for p in result.late if p not in already]
        recovered = sorted(p for p in already if p not in result.late and p in materialized.get(key, set()))
        if newly_late:
            plan.alerts.append(
                (
                    name,
                    Alert(
                        kind="freshness_breach",
                        title=f"{name}: {len(newly_late)} partition(s) late",
                        details=f"`{name}` does not hold {listed(newly_late)} past its deadline.",
                        asset=name,
                        check=CHECK_NAME,
                        partition=listed(newly_late),
                        url=link(key),
                        facts={"Late partitions": listed(newly_late), "Late in all": str(len(result.late))},
                    ),
                )
            )
        if recovered:
            plan.alerts.append(
                (
                    name,
                    Alert(
                        kind="freshness_recovered",
                        title=f"{name}: {len(recovered)} late partition(s) loaded",
                        details=f"`{name}` now holds {listed(recovered)}; "
                        + (f"still late: {listed(result.late)}." if result.late else "nothing is late."),
                        asset=name,
                        check=CHECK_NAME,
                        partition=listed(recovered),
                        url=link(key),
                        facts={"Loaded": listed(recovered), "Still late": str(len(result.late))},
                    ),
                )
            )
    return plan


def parse_partition_states(raw: str | None) -> dict[str, PartitionState]:
    try:
        data = json.loads(raw).get("partitions", {}) if raw else {}
        return {k: PartitionState(tuple(v.get("late", ())), tuple(v.get("warn", ()))) for k, v in data.items()}
    except (ValueError, AttributeError):
        return {}


def parse_cursor(raw: str | None) -> dict[str, FreshnessStatus]:
    """Per-asset states from the cursor; an unreadable cursor starts over rather than failing every tick."""
    try:
        states = json.loads(raw).get("states", {}) if raw else {}
    except (ValueError, AttributeError):
        return {}
    return {k: v for k, v in states.items() if v in ("fresh", "warn", "late", "unknown")}


def serialize_cursor(
    states: Mapping[str, FreshnessStatus], partitions: Mapping[str, PartitionState] | None = None
) -> str:
    data: dict[str, object] = {"states": dict(sorted(states.items()))}
    if partitions:
        data["partitions"] = {k: {"late": list(v.late), "warn": list(v.warn)} for k, v in sorted(partitions.items())}
    return json.dumps(data)


def assets_with_policies(
    asset_graph: BaseAssetGraph,
    instance: dg.DagsterInstance,
    policies: Mapping[dg.AssetKey, dg.FreshnessPolicy] | None = None,
) -> list[AssetFreshness]:
    """Every materializable asset with a freshness policy, with its latest materialization time. `policies`
    replaces the graph's: a sensor in one code location judging the assets of all of them."""
    if policies is None:
        policies = {
            node.key: node.freshness_policy_or_from_metadata
            for node in asset_graph.asset_nodes
            if node.is_materializable and node.freshness_policy_or_from_metadata is not None
        }
    last: dict[dg.AssetKey, datetime] = {}
    for record in instance.get_asset_records(list(policies)):
        event = record.asset_entry.last_materialization
        if event is not None:
            last[record.asset_entry.asset_key] = datetime.fromtimestamp(event.timestamp, UTC)
    return [
        AssetFreshness(key, policy, last.get(key))
        for key, policy in sorted(policies.items(), key=lambda item: item[0].to_user_string())
    ]


def judge_partitions(
    instance: dg.DagsterInstance, rules: Mapping[dg.AssetKey, PartitionRule], now: datetime
) -> tuple[dict[dg.AssetKey, PartitionFreshness], dict[dg.AssetKey, set[str]]]:
    """Each covered asset's partition freshness at `now`, and the partitions it holds."""
    materialized = {key: set(instance.get_materialized_partitions(key)) for key in rules}
    results = {
        key: partition_freshness(rule, partitions_def, materialized[key], now)
        for key, (rule, partitions_def) in rules.items()
    }
    return results, materialized


def build_freshness_alert_sensor(
    *,
    minimum_interval_seconds: int = 60,
    clock: Callable[[], datetime] = utc_now,
    partition_rules: Mapping[dg.AssetKey, PartitionRule] | None = None,
    policies: Mapping[dg.AssetKey, dg.FreshnessPolicy] | None = None,
) -> dg.SensorDefinition:
    """The freshness alert sensor; `clock` is injectable so a test can freeze time. `partition_rules`
    (asset key -> partition deadline and partitions) are judged on partitions, the rest on policies:
    `policies` when given (every code location's assets, for the one location that runs this sensor),
    else those of the sensor's own code location."""
    partition_rules = dict(partition_rules or {})
    policies = dict(policies) if policies is not None else None

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Alerts once when an asset breaks its freshness policy, or a partition is late, and once when it "
            "recovers; records each partitioned asset's partition_freshness check."
        ),
    )
    def freshness_alert_sensor(context: dg.SensorEvaluationContext, alerting: AlertingResource) -> dg.SensorResult:
        now = clock()
        link = lambda key: alerting.link(f"/assets/{'/'.join(key.path)}")  # noqa: E731
        assets = assets_with_policies(context.repository_def.asset_graph, context.instance, policies)
        previous = parse_cursor(context.cursor)
        plan = plan_freshness_alerts(assets, previous, now, link=link)
        results, materialized = judge_partitions(context.instance, partition_rules, now)
        previous_partitions = parse_partition_states(context.cursor)
        partition_plan = plan_partition_alerts(results, materialized, previous_partitions, link=link)

        sent = 0
        for key, alert in plan.alerts:
            delivered = alerting.send(alert)
            if any(delivered.values()):
                sent += 1
            else:  # nothing got through: keep the old state so the next tick tries this transition again
                plan.states[key] = previous.get(key, "unknown")
        for key, alert in partition_plan.alerts:
            if any(alerting.send(alert).values()):
                sent += 1
            else:  # as above: the next tick sees the same transition again
                partition_plan.states[key] = previous_partitions.get(key, PartitionState())
        for key in partition_plan.changed:
            context.instance.report_runless_asset_event(check_evaluation(key, partition_rules[key][0], results[key]))
        late_partitions = sum(len(r.late) for r in results.values())
        summary = (
            f"{len(assets)} asset(s) with freshness policies at {_fmt(now)}: "
            + ", ".join(f"{n} {state}" for state, n in sorted(plan.counts.items()))
            + f"; {len(results)} partitioned asset(s): {late_partitions} late partition(s)"
            + f"; {sent}/{len(plan.alerts) + len(partition_plan.alerts)} alert(s) sent"
        )
        context.log.info(summary)
        return dg.SensorResult(
            cursor=serialize_cursor(plan.states, partition_plan.states), skip_reason=dg.SkipReason(summary)
        )

    return freshness_alert_sensor
