"""Partition-aware freshness: is each partition the table should hold by now actually there?

Dagster's `FreshnessPolicy` judges when an asset was last materialized. For a partitioned table
that says nothing about which day or hour it holds: a rebuild of an old day makes it "fresh" while
yesterday is missing. A `PartitionDeadline` judges partitions instead: every partition whose window
ended at least `fail_after` ago must be materialized, over the last `lookback` (older gaps are a
backfill's business). "Gold holds the previous day by 06:00 UTC" is a deadline of 6 h after a daily
window ends; "each hour loaded within 2 h" is 2 h after an hourly window ends.

The rules are a policy table (jobs/policies.py PARTITION_FRESHNESS). Each asset they cover gets the
asset check `partition_freshness`, so the UI shows which partitions are late or missing; the freshness
alert sensor evaluates the same pure function with its clock, records the result as that check's
evaluation, and alerts on transitions (sensors/freshness_sensor.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

CHECK_NAME = "partition_freshness"
MAX_LISTED = 24  # partitions named in a check's description or an alert; the metadata holds the count


@dataclass(frozen=True)
class PartitionDeadline:
    fail_after: timedelta  # after the partition's window ends
    lookback: timedelta  # how far back missing partitions are still reported
    warn_after: timedelta | None = None

    def describe(self) -> str:
        return f"each partition present {self.fail_after} after its window ends (last {self.lookback.days} days)"


@dataclass(frozen=True)
class PartitionFreshness:
    """Which due partitions are missing at `now`: `late` past the deadline, `warn` past the warning only."""

    late: tuple[str, ...] = ()
    warn: tuple[str, ...] = ()
    due: int = 0  # partitions whose deadline (or warning) has passed, inside the lookback

    @property
    def state(self) -> str:
        return "late" if self.late else "warn" if self.warn else "fresh"


def due_partitions(
    partitions_def: dg.TimeWindowPartitionsDefinition, after: timedelta, lookback: timedelta, now: datetime
) -> list[str]:
    """Keys of the partitions whose window ended at least `after` before `now`, and less than `lookback`
    before that."""
    cutoff = now.astimezone(UTC) - after
    earliest_end = cutoff - lookback
    # a window begins at most a day before it ends (hourly and daily partitions)
    start = max(partitions_def.start.astimezone(UTC), earliest_end - timedelta(days=1))
    if start >= cutoff:
        return []
    keys = partitions_def.get_partition_keys_in_time_window(dg.TimeWindow(start, cutoff))
    ends = {key: partitions_def.time_window_for_partition_key(key).end.astimezone(UTC) for key in keys}
    return [key for key in keys if earliest_end < ends[key] <= cutoff]


def partition_freshness(
    rule: PartitionDeadline,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    materialized: set[str],
    now: datetime,
) -> PartitionFreshness:
    """Pure: the missing partitions of an asset holding `materialized`, as seen at `now`."""
    failed = due_partitions(partitions_def, rule.fail_after, rule.lookback, now)
    warned = failed if rule.warn_after is None else due_partitions(partitions_def, rule.warn_after, rule.lookback, now)
    late = [key for key in failed if key not in materialized]
    warn = [key for key in warned if key not in materialized and key not in late]
    return PartitionFreshness(tuple(late), tuple(warn), len(warned))


def listed(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


def check_evaluation(key: dg.AssetKey, rule: PartitionDeadline, result: PartitionFreshness) -> dg.AssetCheckEvaluation:
    """The `partition_freshness` check's evaluation for `result`: failed (ERROR) when a partition is late,
    failed (WARN) when one is only past its warning, passed otherwise."""
    if result.late:
        description = f"late (missing past the deadline): {listed(result.late)}"
    elif result.warn:
        description = f"past the warning, not yet late: {listed(result.warn)}"
    else:
        description = f"all {result.due} due partition(s) present"
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=CHECK_NAME,
        passed=not (result.late or result.warn),
        severity=dg.AssetCheckSeverity.ERROR if result.late else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "strata/late_partitions": dg.MetadataValue.json(list(result.late[:MAX_LISTED])),
            "strata/late_partition_count": len(result.late),
            "strata/warn_partition_count": len(result.warn),
            "strata/due_partition_count": result.due,
            "strata/freshness_rule": rule.describe(),
        },
    )


PartitionRule = tuple[PartitionDeadline, dg.TimeWindowPartitionsDefinition]


def evaluate_partition_freshness(
    instance: dg.DagsterInstance, rules: Mapping[dg.AssetKey, PartitionRule], now: datetime
) -> dict[dg.AssetKey, PartitionFreshness]:
    """Each covered asset's freshness, from the partitions the instance has materialized."""
    return {
        key: partition_freshness(rule, partitions_def, instance.get_materialized_partitions(key), now)
        for key, (rule, partitions_def) in rules.items()
    }


def resolve_rules(
    table: Iterable[tuple[str, dg.AssetSelection, PartitionDeadline]], assets: Sequence[dg.AssetsDefinition]
) -> dict[dg.AssetKey, PartitionRule]:
    """Asset key -> (rule, partitions); only time-partitioned assets (anything else is a configuration error)."""
    partitions = {key: asset.partitions_def for asset in assets for key in asset.keys}
    rules: dict[dg.AssetKey, PartitionRule] = {}
    for reason, selection, rule in table:
        for key in selection.resolve(assets, allow_missing=True):
            partitions_def = partitions.get(key)
            if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
                raise ValueError(f"{key.to_user_string()} is not time-partitioned; '{reason}' cannot judge it")
            rules[key] = (rule, partitions_def)
    return rules


def check_keys(rules: Mapping[dg.AssetKey, PartitionRule]) -> list[dg.AssetCheckKey]:
    return [dg.AssetCheckKey(key, CHECK_NAME) for key in rules]


# A condition that is never true. An automation run of an asset executes all of the asset's checks, except
# those with an automation condition of their own (they run only when that condition requests them): this
# keeps the freshness checks of automated assets out of every automation run, where they would judge the
# run's wall clock. Checks of assets that automation never runs go without (a check with a condition that
# no automation sensor targets would make Dagster add a default automation sensor for it).
NEVER_BY_AUTOMATION = (dg.AutomationCondition.newly_requested() & ~dg.AutomationCondition.newly_requested()).with_label(
    "never: the freshness sensor evaluates this check"
)


def build_partition_freshness_checks(
    rules: Mapping[dg.AssetKey, PartitionRule],
    assets: Sequence[dg.AssetsDefinition] = (),
    name: str = "partition_freshness_checks",
) -> list[dg.AssetChecksDefinition]:
    """One `partition_freshness` check per covered asset. The freshness sensor records their evaluations
    without a run, at its own clock; executing one from the UI evaluates it at the wall clock. No run
    that Strata starts executes them: the asset jobs leave them out (jobs.build_jobs), the drop sensor
    names the checks of its job, and automation never requests them (`NEVER_BY_AUTOMATION` on the checks
    of the `assets` that have an automation condition), so a Bronze or Gold run does not judge freshness
    by itself. Each code location defines the checks of its own assets, under a `name` unique across
    locations."""
    if not rules:
        return []
    automated = {spec.key for asset in assets for spec in asset.specs if spec.automation_condition is not None}
    specs = [
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=key,
            description=f"Partition freshness: {rule.describe()}.",
            automation_condition=NEVER_BY_AUTOMATION if key in automated else None,
        )
        for key, (rule, _) in sorted(rules.items(), key=lambda item: item[0].to_user_string())
    ]

    @dg.multi_asset_check(specs=specs, name=name, can_subset=True)
    def partition_freshness_checks(context):  # unannotated: this module uses postponed annotations
        now = datetime.now(UTC)
        for check_key in context.selected_asset_check_keys:
            key = check_key.asset_key
            result = evaluate_partition_freshness(context.instance, {key: rules[key]}, now)[key]
            evaluation = check_evaluation(key, rules[key][0], result)
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=CHECK_NAME,
                passed=evaluation.passed,
                severity=evaluation.severity,
                description=evaluation.description,
                metadata=evaluation.metadata,
            )

    return [partition_freshness_checks]
