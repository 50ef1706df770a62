"""Platform-wide policies as configuration: freshness, retries, pools, automation and run priorities.
(The schedules are a table too, in jobs/schedules.py.)

`definitions.py` calls `apply_global_policies` once on every asset, so no asset module repeats them.
The tables below are the whole policy: an asset selection (or job name) and what applies to it.

Retries are for network-bound work only (the Bronze loads reading the source DB, S3 and HTTP): a
dropped connection is worth another try with exponential backoff and jitter, so that many runs do
not hammer a recovering source at the same moment. Deterministic failures are never retried:
- `dg.Failure(allow_retries=False)` skips the retry policy (Bronze telemetry raises it for a bad drop);
- a failed blocking check fails its step with `DagsterAssetCheckFailedError` after the body ran,
  outside the retry boundary, so it is not retried either;
- dbt (Silver/Gold) gets no retry policy: its failures are SQL or data-test failures.

Automation is gated by quality and by completeness. Silver, Gold and ML assets follow their inputs
(`FOLLOW_INPUTS_PER_DAY`) only while every blocking check of those inputs passes
(`all_deps_blocking_checks_passed`): a failed critical GX check or dbt test holds back what is
downstream across runs too, until the input is materialized again and passes. A daily partition is
requested only once every input partition it maps to exists (`~any_deps_missing`): a day of
telemetry is complete when its 24 hourly Bronze partitions are loaded. That is the daily build:
each day is built once it is complete, by automation, not by a clock. Days up to `LATE_DAY_LOOKBACK`
old are still built when a late hour completes them, and rebuilt when one of their own (per-day)
input partitions is re-delivered; the newest day also follows its unpartitioned inputs (the hourly
OLTP refresh), older days do not, so a booking update does not rebuild a week every hour.
An input counts as changed when its data version changed, not whenever it is rematerialized: dbt
models and Bronze OLTP tables set their data version from their content, so the hourly refresh that
rebuilds a dimension to the same rows rebuilds nothing downstream (a new or re-delivered hour of
telemetry is always a change: each load has a version of its own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

import dagster as dg

from assets.bronze.contracts import file_drop_contracts
from assets.ml.training import RETRAINING_ASSETS
from assets.quality.volume_anomaly import VolumePolicy
from jobs.partition_freshness import PartitionDeadline
from resources.iceberg_maintenance import RetentionPolicy
from resources.warehouse import WAREHOUSE_POOL

# --- the policy tables -------------------------------------------------------------------------------

GOLD = dg.AssetSelection.groups("gold")
BRONZE = dg.AssetSelection.groups("bronze")
# Every file-drop feed of the source contracts (telemetry, and any feed added there as data).
BRONZE_DROPS = dg.AssetSelection.assets(*(["bronze", name] for name in file_drop_contracts()))
BRONZE_WEATHER = dg.AssetSelection.assets(["bronze", "weather_forecasts"])
BRONZE_OLTP = BRONZE - BRONZE_DROPS - BRONZE_WEATHER
DBT_MODELS = dg.AssetSelection.groups("silver", "gold", "gold_restricted")
ML = dg.AssetSelection.groups("ml")
REPORTS = dg.AssetSelection.groups("reports")
# The retraining (features -> candidate -> gate -> promotion) runs on the 02:00 schedule only: a model is
# retrained once a day on a complete previous day, not every time an input moves.
ML_RETRAINING = dg.AssetSelection.assets(*RETRAINING_ASSETS)
# Only the assets that read the marts hold the warehouse pool; training and promotion do not.
ML_READING_MARTS = dg.AssetSelection.assets(["ml", "demand_training_features"], ["ml", "demand_forecast"])

DAILY_MODELS = dg.AssetSelection.tag("daily", "")  # dbt models tagged `daily` (the daily-partitioned ones)
# A late hour still completes (and builds) its day within this lookback; older days need a backfill.
# Partition freshness reports missing partitions over the same window.
LATE_DAY_LOOKBACK = timedelta(days=7)

# The unpartitioned Gold tables (the dimensions) are rebuilt by 06:00 UTC: a materialization between
# 00:00 and 06:00 (after the day closed, before the deadline) meets the day's deadline. Judged on the
# materialization time, which is all an unpartitioned table has.
GOLD_DAILY_DEADLINE = dg.FreshnessPolicy.cron(
    deadline_cron="0 6 * * *", lower_bound_delta=timedelta(hours=6), timezone="UTC"
)
# Partitioned tables are judged on the partitions they hold (jobs/partition_freshness.py), not on when
# they were last materialized: a rebuild of an old day must not hide a missing yesterday.
GOLD_PREVIOUS_DAY_BY_0600 = PartitionDeadline(fail_after=timedelta(hours=6), lookback=LATE_DAY_LOOKBACK)
EACH_HOUR_WITHIN_2H = PartitionDeadline(
    fail_after=timedelta(hours=2), warn_after=timedelta(hours=1), lookback=LATE_DAY_LOOKBACK
)
# 3 retries after ~2 s, ~6 s, ~14 s (exponential), each +/- 2 s of jitter.
NETWORK_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

FRESHNESS_POLICIES: list[tuple[str, dg.AssetSelection, dg.FreshnessPolicy]] = [
    ("Gold dimensions: rebuilt by 06:00 UTC", GOLD - DAILY_MODELS, GOLD_DAILY_DEADLINE),
]
PARTITION_FRESHNESS: list[tuple[str, dg.AssetSelection, PartitionDeadline]] = [
    ("Gold daily marts: the previous day present by 06:00 UTC", GOLD & DAILY_MODELS, GOLD_PREVIOUS_DAY_BY_0600),
    ("Bronze file-drop feeds: each hour loaded within 2 h of its end (warning after 1 h)", BRONZE_DROPS,
     EACH_HOUR_WITHIN_2H),
]  # fmt: skip
RETRY_POLICIES: list[tuple[str, dg.AssetSelection, dg.RetryPolicy]] = [
    ("Bronze loads read the source DB, the landing zone and the weather API over the network", BRONZE, NETWORK_RETRY),
    ("Training and promotion talk to the model registry (a tracking server in prod)",
     ML_RETRAINING - dg.AssetSelection.assets(["ml", "demand_training_features"]), NETWORK_RETRY),
]  # fmt: skip
POOLS: list[tuple[str, dg.AssetSelection, str]] = [
    ("the OLTP source database", BRONZE_OLTP, "source_db"),
    ("the SQL engine (DuckDB has one writer; Trino is shared)", DBT_MODELS, WAREHOUSE_POOL),
    ("ML reads the marts (a DuckDB reader cannot open the file while dbt writes it)", ML_READING_MARTS, WAREHOUSE_POOL),
    ("reports read the marts too", REPORTS, WAREHOUSE_POOL),
]
# Inputs that hold data per partition (hourly Bronze drop feeds, the daily dbt models, ML): an update of
# one of these is a change of the days it maps to, so older days in the lookback follow it too.
PER_DAY_INPUTS = BRONZE_DROPS | DAILY_MODELS | ML
FOLLOW_INPUTS_LABEL = "follow inputs, day complete"
# An input changed: its data version moved (not merely a rematerialization: the hourly refresh rebuilds
# the dimensions every hour, mostly to the same content, and dbt and the Bronze OLTP loads set the data
# version from the content), outside a run that also built this asset; or it is requested this tick.
# Dagster's `any_deps_updated` with `data_version_changed` in place of `newly_updated`.
ANY_DEPS_CHANGED = dg.AutomationCondition.any_deps_match(
    (dg.AutomationCondition.data_version_changed() & ~dg.AutomationCondition.executed_with_root_target()).with_label(
        "data_version_changed_without_root"
    )
    | dg.AutomationCondition.will_be_requested()
).with_label("any_deps_changed")
# Missing when automation first looks (a fresh deployment, or this rule changed): Dagster's `eager` leaves
# such a target alone until an input changes (its `since_last_handled` resets on the first evaluation). A
# dimension whose source never changes was then never built, and every daily model whose dbt tests read
# it failed (the simulated week: `stg_vehicles`). Requested once: only a request or an update resets it,
# so a failed build is not retried at every tick. Unpartitioned models only: missing days are the
# backfill's to build (a first evaluation would otherwise race the backfill that fills a new instance).
MISSING_AT_FIRST_LOOK = (
    (dg.AutomationCondition.missing() & dg.AutomationCondition.initial_evaluation())
    .with_label("missing at the first evaluation")
    .since(dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated())
)
# Dagster's `eager`, widened from the latest day to the lookback: a partition new since the last
# evaluation (newly missing), or the newest day when any input changed, or any day of the lookback
# whose per-day inputs changed; never while an input partition is missing or in progress.
FOLLOW_INPUTS_PER_DAY = (
    dg.AutomationCondition.in_latest_time_window(LATE_DAY_LOOKBACK)
    & (
        dg.AutomationCondition.newly_missing()
        | (dg.AutomationCondition.in_latest_time_window() & ANY_DEPS_CHANGED)
        | ANY_DEPS_CHANGED.allow(PER_DAY_INPUTS)
    ).since_last_handled()
    # The production model (a dep of the forecast) exists only for days whose gate passed: the forecast
    # uses whichever model the registry names, so its absence holds nothing back.
    & ~dg.AutomationCondition.any_deps_missing().ignore(ML_RETRAINING)
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label(FOLLOW_INPUTS_LABEL)
# Follow the inputs when they update and are complete, but never past an input whose blocking checks failed.
QUALITY_GATED_EAGER = (FOLLOW_INPUTS_PER_DAY & dg.AutomationCondition.all_deps_blocking_checks_passed()).with_label(
    "follow complete inputs, while all their blocking checks pass"
)
# The same for an unpartitioned model, which is also built when it is missing at the first evaluation.
MISSING_AT_FIRST_LOOK_AND_READY = (
    MISSING_AT_FIRST_LOOK
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
)
BUILD_MISSING_THEN_QUALITY_GATED_EAGER = (
    (FOLLOW_INPUTS_PER_DAY | MISSING_AT_FIRST_LOOK_AND_READY) & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("built if missing at the first evaluation; then follow complete inputs, while their blocking checks pass")
AUTOMATION_CONDITIONS: list[tuple[str, dg.AssetSelection, dg.AutomationCondition]] = [
    ("Daily Silver/Gold models and ML follow their complete inputs once those pass their blocking checks",
     DAILY_MODELS | (ML - ML_RETRAINING), QUALITY_GATED_EAGER),
    ("The unpartitioned Silver/Gold models too; one missing when automation first looks is built once",
     DBT_MODELS - DAILY_MODELS, BUILD_MISSING_THEN_QUALITY_GATED_EAGER),
]  # fmt: skip
# Iceberg table maintenance (assets/maintenance/iceberg_tables.py, daily by the schedule table): per
# namespace, how far back time travel reaches (snapshots younger than the age, and never fewer than the
# newest N) and how old an unreferenced file must be before it is deleted (younger ones may belong to a
# write in flight). Files below `small_file_bytes` are compacted when a partition has two or more.
TABLE_RETENTION: list[tuple[str, str, RetentionPolicy]] = [
    ("Bronze: a week of time travel covers the late-day lookback and a re-run of the daily build", "bronze",
     RetentionPolicy(snapshot_max_age=timedelta(days=7), min_snapshots=10, orphan_min_age=timedelta(hours=24))),
    ("Audit tables (run log, loaded drops, quarantine): a month of history for auditors", "audit",
     RetentionPolicy(snapshot_max_age=timedelta(days=30), min_snapshots=10, orphan_min_age=timedelta(hours=24))),
]  # fmt: skip
# Who answers for each asset group (Dagster `owners`: a team or an e-mail), shown in the UI.
# Every asset group must be listed: tests/test_definitions.py fails on an asset without an owner.
OWNERS: list[tuple[str, dg.AssetSelection, list[str]]] = [
    ("Bronze: the loads from the source systems", BRONZE, ["team:data-platform"]),
    ("Silver: staging and conformed tables", dg.AssetSelection.groups("silver"), ["team:data-platform"]),
    ("Gold: the published marts", GOLD, ["team:analytics-engineering"]),
    ("Gold with personal data in clear: access is the privacy officer's decision",
     dg.AssetSelection.groups("gold_restricted"), ["team:analytics-engineering", "privacy@strata.example"]),
    ("ML: features, models and the forecast", ML, ["team:data-science"]),
    ("Reports: what leaves the platform", REPORTS, ["team:analytics-engineering"]),
    ("Table maintenance and platform health", dg.AssetSelection.groups("maintenance", "platform"),
     ["team:data-platform"]),
]  # fmt: skip
# Column-schema-change checks (assets/quality/schema_change.py): what a column added, removed or retyped
# in a published table is. WARN shows it on the asset and blocks nothing; ERROR with blocking would stop
# the consumers of the table.
SCHEMA_CHANGE_CHECKS: list[tuple[str, dg.AssetSelection, dg.AssetCheckSeverity]] = [
    ("dbt models and Gold tables: a changed column is shown, not blocking", DBT_MODELS | GOLD,
     dg.AssetCheckSeverity.WARN),
]  # fmt: skip
# Volume anomaly checks (assets/quality/volume_anomaly.py): each partition's rows against the table's own
# last 14 comparable partitions (robust z-score, judged once 7 exist). WARN shows an odd day and blocks
# nothing; a table whose consumers must not see one gets `VolumePolicy(severity=ERROR, blocking=True)`.
VOLUME_ANOMALY_CHECKS: list[tuple[str, dg.AssetSelection, VolumePolicy]] = [
    ("Bronze and Gold tables: a partition far from its last 14 is shown, not blocking",
     (BRONZE | GOLD) - BRONZE_DROPS, VolumePolicy()),
    ("Bronze file-drop feeds: each hour against the same hour of the last 14 days (a day has a rhythm)",
     BRONZE_DROPS, VolumePolicy(step=24)),
]  # fmt: skip
# Jobs whose steps would only take turns: with the local (multiprocess) executor they run in the run
# worker's own process, one step after another. A step in a process of its own pays a process start that
# imports the code location again (seconds under `dagster dev`), and a step waiting for a pool slot polls
# with a back-off that grows to 15 s. In Kubernetes every job keeps one pod per step (jobs/executor.py).
IN_PROCESS_JOBS: dict[str, str] = {
    "extract_oltp": "its Bronze loads all take the `source_db` pool's one slot, so they run one at a time anyway",
}
# Run priority (`dagster/priority`, higher starts first) for the QueuedRunCoordinator: the daily Gold
# build before the dimension refresh, both before hourly Bronze catch-up. Jobs not listed get 0.
JOB_PRIORITIES: dict[str, int] = {
    "build_daily": 10,
    "forecast_daily": 10,  # the forecast was part of the daily build before the split into code locations
    "extract_oltp": 5,
    "refresh_unpartitioned": 5,
    "retrain_demand_model": 3,  # behind the 02:00 refresh that brings its inputs up to date
    "load_hourly": 0,
    "maintain_tables": -5,
}

PRIORITY_TAG = "dagster/priority"


# --- applying them -----------------------------------------------------------------------------------


def schema_change_severities(assets: Sequence[dg.AssetsDefinition]) -> dict[dg.AssetKey, dg.AssetCheckSeverity]:
    """The schema-change check's severity per asset, from `SCHEMA_CHANGE_CHECKS`."""
    return _by_key(SCHEMA_CHANGE_CHECKS, assets, "schema-change severity")  # type: ignore[return-value]


def volume_policies(assets: Sequence[dg.AssetsDefinition]) -> dict[dg.AssetKey, VolumePolicy]:
    """The volume anomaly policy per asset, from `VOLUME_ANOMALY_CHECKS`."""
    return _by_key(VOLUME_ANOMALY_CHECKS, assets, "volume policy")  # type: ignore[return-value]


def priority_tags(job_name: str) -> dict[str, str]:
    """Run tags carrying the job's priority: pass as `tags=` to `define_asset_job`."""
    return {PRIORITY_TAG: str(JOB_PRIORITIES.get(job_name, 0))}


def _by_key(
    table: Sequence[tuple[str, dg.AssetSelection, object]], assets: Sequence[dg.AssetsDefinition], what: str
) -> dict[dg.AssetKey, object]:
    """Resolve a policy table to asset key -> value; two different values for one asset are a config error."""
    resolved: dict[dg.AssetKey, object] = {}
    for reason, selection, value in table:
        for key in selection.resolve(assets, allow_missing=True):
            if key in resolved and resolved[key] != value:
                raise ValueError(f"{key.to_user_string()} gets two {what}s; the second from '{reason}'")
            resolved[key] = value
    return resolved


def _op_value(asset: dg.AssetsDefinition, by_key: Mapping[dg.AssetKey, object], what: str) -> object | None:
    """Retry policy and pool belong to the op: every asset of a multi-asset must agree on them."""
    values = {repr(by_key.get(key)): by_key.get(key) for key in asset.keys}
    if len(values) > 1:
        raise ValueError(
            f"the {what} table selects only part of the multi-asset {asset.node_def.name}; "
            "an op-level setting must cover all of its assets"
        )
    return next(iter(values.values()))


def with_op_policies(
    asset: dg.AssetsDefinition, *, retry_policy: dg.RetryPolicy | None = None, pool: str | None = None
) -> dg.AssetsDefinition:
    """A copy of `asset` whose op has this retry policy and pool.

    Dagster has no public API to change the op of an existing AssetsDefinition (`map_asset_specs`
    changes specs only), so this rebuilds the op with its own constructor; tests pin the behaviour.
    """
    op = asset.op
    if (retry_policy is None or op.retry_policy == retry_policy) and (pool is None or op.pool == pool):
        return asset
    if pool is not None and op.pool not in (None, pool):
        raise ValueError(f"{op.name} already uses pool {op.pool!r}; the policy table says {pool!r}")
    new_op = dg.OpDefinition.dagster_internal_init(
        compute_fn=op.compute_fn,
        name=op.name,
        ins={input_def.name: dg.In.from_definition(input_def) for input_def in op.input_defs},
        outs={output_def.name: dg.Out.from_definition(output_def) for output_def in op.output_defs},
        description=op.description,
        config_schema=op.config_schema,
        required_resource_keys=op.required_resource_keys,
        tags=op.tags,
        version=None,
        retry_policy=retry_policy or op.retry_policy,
        code_version=op._version,  # the op's code version; the public `version` property is deprecated
        pool=pool or op.pool,
    )
    return dg.AssetsDefinition.dagster_internal_init(**{**asset.get_attributes_dict(), "node_def": new_op})


def apply_global_policies(
    assets: Sequence[dg.AssetsDefinition],
    *,
    freshness: Sequence[tuple[str, dg.AssetSelection, dg.FreshnessPolicy]] = FRESHNESS_POLICIES,
    retries: Sequence[tuple[str, dg.AssetSelection, dg.RetryPolicy]] = RETRY_POLICIES,
    pools: Sequence[tuple[str, dg.AssetSelection, str]] = POOLS,
    automation: Sequence[tuple[str, dg.AssetSelection, dg.AutomationCondition]] = AUTOMATION_CONDITIONS,
    owners: Sequence[tuple[str, dg.AssetSelection, list[str]]] = OWNERS,
) -> list[dg.AssetsDefinition]:
    """Every asset with the freshness policy, automation condition, owners, retry policy and pool the
    tables give it."""
    freshness_by_key = _by_key(freshness, assets, "freshness policy")
    owners_by_key = _by_key(owners, assets, "owners")
    automation_by_key = _by_key(automation, assets, "automation condition")
    retry_by_key = _by_key(retries, assets, "retry policy")
    pool_by_key = _by_key(pools, assets, "pool")
    result = []
    for asset in assets:
        if not asset.keys:  # a checks-only definition: no specs, and its op is the checks' own
            result.append(asset)
            continue
        if any(key in freshness_by_key or key in automation_by_key or key in owners_by_key for key in asset.keys):
            asset = asset.map_asset_specs(
                lambda spec: spec.replace_attributes(
                    freshness_policy=freshness_by_key.get(spec.key, spec.freshness_policy),
                    automation_condition=automation_by_key.get(spec.key, spec.automation_condition),
                    owners=owners_by_key.get(spec.key, spec.owners),
                )
            )
        retry_policy = _op_value(asset, retry_by_key, "retry policy")
        pool = _op_value(asset, pool_by_key, "pool")
        if retry_policy is not None or pool is not None:
            asset = with_op_policies(asset, retry_policy=retry_policy, pool=pool)
        result.append(asset)
    return result
