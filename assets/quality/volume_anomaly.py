"""Volume anomaly checks: each partition's row count against the same table's own trailing history.

A partition (or, for an unpartitioned table, a materialization) is judged by a robust z-score of its rows
against the rows of the partitions before it (the last 14 by default): z = (rows - median) / (1.4826 x MAD).
The median and the median absolute deviation ignore one odd day in the history, where a mean and a
standard deviation would be dragged by it. A day with a tenth of the usual volume is far outside any
normal spread; a day within it passes. Until a table has `min_history` earlier partitions the check
passes and says so.

The numbers are what the materializations already recorded, read from the event log (no warehouse
query): a partition's own `dagster/partition_row_count`, and for an unpartitioned table its
`dagster/row_count`. A partitioned materialization that reports only the table's total (e.g. a daily
view over all days) is not judged: the total is not the partition's volume.

Each partition of a run gets its own evaluation, attached to its own materialization, so a range run of
14 days shows 14 results in the partition view. Policy (history length, threshold, severity, which
earlier partitions are comparable) is data: `VOLUME_ANOMALY_CHECKS` in jobs/policies.py.
"""

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from assets.quality.checks import target_materialization

CHECK_NAME = "volume_anomaly"
PARTITION_ROWS = "dagster/partition_row_count"
TABLE_ROWS = "dagster/row_count"
MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution is 0.6745 sigma
PAGE = 100


@dataclass(frozen=True)
class VolumePolicy:
    """How one table's volume is judged."""

    history: int = 14  # earlier partitions compared with
    min_history: int = 7  # fewer than this: not judged (passes, and says so)
    max_abs_z: float = 3.5  # |robust z| above this fails the check
    # Comparable earlier partitions: every `step`-th one back (24 for an hourly table with a daily rhythm:
    # the same hour on earlier days).
    step: int = 1
    # A floor under the spread, as a share of the median: a history of identical counts (MAD 0) would
    # otherwise make any change of one row an anomaly.
    min_relative_spread: float = 0.02
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.WARN
    blocking: bool = False


@dataclass(frozen=True)
class VolumeVerdict:
    passed: bool
    description: str
    metadata: dict[str, object]


def robust_z(value: float, history: Sequence[float], min_relative_spread: float) -> tuple[float, float, float]:
    """(z, median, MAD) of `value` against `history` (non-empty)."""
    median = statistics.median(history)
    mad = statistics.median(abs(x - median) for x in history)
    spread = max(MAD_TO_SIGMA * mad, min_relative_spread * abs(median), 1.0)
    return (value - median) / spread, median, mad


def judge(
    rows: int | None, history: Mapping[str, int], policy: VolumePolicy, what: str, earlier: str = "partition"
) -> VolumeVerdict:
    """The verdict on `rows` (of `what`, e.g. "gold/kpi_daily partition 2026-10-15") given the counts of the
    earlier partitions (or, `earlier="materialization"`, of an unpartitioned table's earlier runs)."""
    if rows is None:
        return VolumeVerdict(True, f"{what}: no row count of its own was recorded; not judged", {})
    metadata: dict[str, object] = {"strata/rows": rows, "strata/history_size": len(history)}
    if len(history) < policy.min_history:
        return VolumeVerdict(
            True,
            f"{what}: {rows} rows; {len(history)} earlier {earlier}(s) with a row count, "
            f"{policy.min_history} needed before volume is judged",
            metadata,
        )
    z, median, mad = robust_z(rows, list(history.values()), policy.min_relative_spread)
    metadata.update(
        {
            "strata/history_median": median,
            "strata/history_mad": mad,
            "strata/robust_z": round(z, 2),
            "strata/max_abs_z": policy.max_abs_z,
            "strata/history": dg.MetadataValue.json(dict(history)),
        }
    )
    passed = abs(z) <= policy.max_abs_z
    verdict = "within" if passed else "outside"
    return VolumeVerdict(
        passed,
        f"{what}: {rows} rows, robust z {z:+.1f} against the median {median:g} (MAD {mad:g}) of the "
        f"{len(history)} earlier {earlier}(s): {verdict} +/-{policy.max_abs_z:g}",
        metadata,
    )


def earlier_partitions(partitions_def: dg.PartitionsDefinition, key: str, policy: VolumePolicy) -> list[str]:
    """The `history` comparable partitions before `key`, newest first."""
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        window = partitions_def.time_window_for_partition_key(key)
        span = (window.end - window.start) * policy.step * policy.history
        since = max(window.start - span, partitions_def.start)  # the lookup does not stop at the first partition
        keys = partitions_def.get_partition_keys_in_time_window(dg.TimeWindow(since, window.start))
    else:
        keys = list(partitions_def.get_partition_keys())
        keys = keys[: keys.index(key)] if key in keys else []
    return list(reversed(keys))[policy.step - 1 :: policy.step][: policy.history]


def latest_by_partition(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Iterable[str]
) -> dict[str, dg.EventLogRecord]:
    """Each partition's latest materialization record (newest first, so the first one seen wins)."""
    wanted = list(dict.fromkeys(partitions))
    found: dict[str, dg.EventLogRecord] = {}
    cursor = None
    while len(found) < len(wanted):
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=wanted), limit=PAGE, cursor=cursor
        )
        for record in result.records:
            found.setdefault(record.partition_key, record)
        if not result.has_more:
            break
        cursor = result.cursor
    return found


def _rows(record: dg.EventLogRecord | None, metadata_key: str) -> int | None:
    if record is None or record.asset_materialization is None:
        return None
    entry = record.asset_materialization.metadata.get(metadata_key)
    value = getattr(entry, "value", entry)
    return int(value) if isinstance(value, int | float) else None


def judge_partitions(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    partitions_def: dg.PartitionsDefinition,
    partitions: Sequence[str],
    policy: VolumePolicy,
) -> dict[str, tuple[VolumeVerdict, dg.EventLogRecord | None]]:
    """Each partition's verdict, and the materialization it judged. One event-log read for the whole run."""
    earlier = {partition: earlier_partitions(partitions_def, partition, policy) for partition in partitions}
    records = latest_by_partition(instance, key, [*partitions, *(k for keys in earlier.values() for k in keys)])
    out = {}
    for partition in partitions:
        history = {k: rows for k in earlier[partition] if (rows := _rows(records.get(k), PARTITION_ROWS)) is not None}
        record = records.get(partition)
        verdict = judge(_rows(record, PARTITION_ROWS), history, policy, f"{key.to_user_string()} partition {partition}")
        out[partition] = (verdict, record)
    return out


def judge_latest(instance: dg.DagsterInstance, key: dg.AssetKey, policy: VolumePolicy) -> VolumeVerdict:
    """An unpartitioned table: its latest materialization against the ones before it."""
    records = instance.fetch_materializations(key, limit=policy.history + 1).records
    if not records:
        return VolumeVerdict(True, f"{key.to_user_string()}: never materialized; not judged", {})
    latest, *before = records
    history = {f"run {r.run_id[:8]}": rows for r in before if (rows := _rows(r, TABLE_ROWS)) is not None}
    what = f"{key.to_user_string()} (run {latest.run_id[:8]})"
    return judge(_rows(latest, TABLE_ROWS), history, policy, what, earlier="materialization")


def build_volume_anomaly_checks(
    policies: Mapping[dg.AssetKey, VolumePolicy],
    partitions_by_asset: Mapping[dg.AssetKey, dg.PartitionsDefinition | None],
    unit_of: Mapping[dg.AssetKey, str] | None = None,
) -> list[dg.AssetChecksDefinition]:
    """One multi-asset check per (partitioning, policy, unit) group, run by every job that builds one of its
    assets. `unit_of` (asset -> code location) keeps a check definition inside one code location: a
    multi-asset check executes in one code server."""
    groups: dict[tuple[dg.PartitionsDefinition | None, VolumePolicy, str], list[dg.AssetKey]] = {}
    for key in sorted(policies, key=lambda k: k.to_user_string()):
        unit = (unit_of or {}).get(key, "")
        groups.setdefault((partitions_by_asset.get(key), policies[key], unit), []).append(key)
    return [
        _checks(keys, partitions_def, policy, f"volume_anomaly_{index}")
        for index, ((partitions_def, policy, _), keys) in enumerate(groups.items())
    ]


def _checks(
    keys: Sequence[dg.AssetKey], partitions_def: dg.PartitionsDefinition | None, policy: VolumePolicy, name: str
) -> dg.AssetChecksDefinition:
    specs = [
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=key,
            blocking=policy.blocking,
            partitions_def=partitions_def,
            description=(
                f"Rows of each partition against the last {policy.history} comparable partitions "
                f"(robust z-score, |z| <= {policy.max_abs_z:g}, judged from {policy.min_history} on)"
            ),
        )
        for key in keys
    ]

    @dg.multi_asset_check(specs=specs, can_subset=True, name=name)
    def volume_anomaly(context: dg.AssetCheckExecutionContext):
        selected = sorted(context.selected_asset_check_keys, key=lambda k: k.asset_key.to_user_string())
        if partitions_def is None:
            for check_key in selected:
                verdict = judge_latest(context.instance, check_key.asset_key, policy)
                yield dg.AssetCheckResult(
                    asset_key=check_key.asset_key,
                    check_name=CHECK_NAME,
                    passed=verdict.passed,
                    severity=policy.severity,
                    description=verdict.description,
                    metadata=verdict.metadata,
                )
            return
        # One evaluation per partition of the run, on that partition's own materialization (a range run's
        # AssetCheckResult would be stored unpartitioned and leave every partition unevaluated).
        partitions = list(context.partition_keys)
        for check_key in selected:
            verdicts = judge_partitions(context.instance, check_key.asset_key, partitions_def, partitions, policy)
            for partition, (verdict, record) in verdicts.items():
                yield dg.AssetCheckEvaluation(
                    asset_key=check_key.asset_key,
                    check_name=CHECK_NAME,
                    passed=verdict.passed,
                    severity=policy.severity,
                    blocking=policy.blocking,
                    partition=partition,
                    description=verdict.description,
                    metadata=verdict.metadata,
                    target_materialization_data=target_materialization(record),
                )
        for check_key in selected:
            yield dg.Output(None, output_name=specs[keys.index(check_key.asset_key)].get_python_identifier())

    return volume_anomaly
