"""Service-level figures per asset group, from the event log: what the platform promises, measured.

The figures (per asset group; the group is the first part of an asset key, `bronze/customers` -> bronze):
- success rate: finished runs that touched the group and succeeded, over those that succeeded or failed.
  A step retried inside a run counts once, with the run's outcome; a run started again after a failure
  counts as a second run. Canceled runs and runs a guard kept from running (`strata/not_run`) are not
  outcomes of the pipeline and are left out (counted apart).
- MTTR: for each asset partition, from its first failure to its next success. A failure is a planned
  materialization its failed run did not make, or one made with a failed blocking check; a success is a
  materialization whose blocking checks passed. An incident still open at the end is counted, not timed.
- MTTD: for each incident, from the data's arrival (the creation of the run that received it) to its
  detection in the event log (the failed step or failed blocking check). The alert sensors send the alert
  at their next tick (every 30 s), so an alert follows detection by at most that.
- freshness attainment: of the partitions of assets with a freshness rule that were due in the period
  (materialized, or reported late by their `partition_freshness` check), the share never reported late.
- critical checks passing: passed evaluations of blocking checks over all their evaluations.
- models with tests: dbt models of the group with at least one test, over its models (from the dbt
  manifest; other groups have no models).

`collect_history` reads the instance; `compute_slo` is pure, so a test can script a history.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean

import dagster as dg

from audit.metadata import NOT_RUN_TAG
from audit.record import audit_events, finished_run_records

FRESHNESS_CHECK = "partition_freshness"
LATE_PARTITIONS = "strata/late_partitions"
# (asset key "layer/table", partition key or None)
AssetPartition = tuple[str, str | None]


@dataclass(frozen=True)
class CheckResult:
    asset: str
    partition: str | None
    name: str
    passed: bool
    blocking: bool
    at: datetime


@dataclass
class RunHistory:
    """What one finished run did, as the SLO needs it."""

    run_id: str
    status: str  # SUCCESS / FAILURE / CANCELED
    created: datetime
    ended: datetime
    not_run: bool = False
    planned: set[AssetPartition] = field(default_factory=set)
    materialized: dict[AssetPartition, datetime] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    first_failure_at: datetime | None = None  # the first failed step in the event log


@dataclass
class History:
    runs: list[RunHistory]
    late_partitions: dict[str, set[str]] = field(default_factory=dict)  # asset -> partitions reported late
    freshness_assets: set[str] = field(default_factory=set)  # assets with a partition freshness rule
    models: dict[str, bool] = field(default_factory=dict)  # dbt model asset key -> has a test


@dataclass(frozen=True)
class GroupSlo:
    group: str
    runs_succeeded: int
    runs_failed: int
    runs_left_out: int  # canceled or not run
    success_rate: float | None
    incidents: int  # failure -> success, timed
    open_incidents: int
    mttr_minutes: float | None
    mttd_minutes: float | None
    partitions_due: int
    partitions_late: int
    freshness_attainment: float | None
    critical_checks: int
    critical_checks_passed: int
    critical_checks_passing: float | None
    models: int
    models_tested: int
    models_with_tests: float | None


def group_of(asset: str) -> str:
    return asset.split("/", 1)[0]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _minutes(values: Sequence[float]) -> float | None:
    return round(mean(values) / 60, 3) if values else None


def _incidents(history: History) -> list[tuple[str, datetime, datetime | None, datetime]]:
    """(asset, failure detected at, next success at or None, data arrived at) per incident: an asset
    partition's run of failures up to its next success. Detection is when the event log recorded it."""
    outcomes: dict[AssetPartition, list[tuple[datetime, bool, datetime]]] = defaultdict(list)
    for run in history.runs:
        failed_checks: dict[AssetPartition, datetime] = {}
        for check in run.checks:
            if check.blocking and not check.passed:
                key = (check.asset, check.partition)
                failed_checks[key] = min(check.at, failed_checks.get(key, check.at))
        for key, at in run.materialized.items():
            if key in failed_checks:
                outcomes[key].append((failed_checks[key], False, run.created))
            else:
                outcomes[key].append((at, True, run.created))
        if run.status == "FAILURE":
            detected = run.first_failure_at or run.ended
            for key in run.planned - set(run.materialized):
                outcomes[key].append((detected, False, run.created))
    incidents = []
    for (asset, _), events in outcomes.items():
        open_since: tuple[datetime, datetime] | None = None
        for at, ok, arrived in sorted(events, key=lambda e: e[0]):
            if not ok and open_since is None:
                open_since = (at, arrived)
            elif ok and open_since is not None:
                incidents.append((asset, open_since[0], at, open_since[1]))
                open_since = None
        if open_since is not None:
            incidents.append((asset, open_since[0], None, open_since[1]))
    return incidents


def compute_slo(history: History) -> list[GroupSlo]:
    """The figures of every group that appears in the history (pure)."""
    groups: set[str] = set()
    runs = defaultdict(lambda: [0, 0, 0])  # group -> succeeded, failed, left out
    for run in history.runs:
        touched = {group_of(a) for a, _ in run.planned | set(run.materialized)}
        groups |= touched
        column = 2 if run.status == "CANCELED" or run.not_run else 0 if run.status == "SUCCESS" else 1
        for group in touched:
            runs[group][column] += 1

    repair, detect, still_open = defaultdict(list), defaultdict(list), defaultdict(int)
    for asset, failed_at, recovered_at, arrived in _incidents(history):
        group = group_of(asset)
        if arrived is not None:
            detect[group].append((failed_at - arrived).total_seconds())
        if recovered_at is None:
            still_open[group] += 1
        else:
            repair[group].append((recovered_at - failed_at).total_seconds())

    due, late = defaultdict(int), defaultdict(int)
    for asset in history.freshness_assets:
        made = {p for run in history.runs for a, p in run.materialized if a == asset and p is not None}
        reported = history.late_partitions.get(asset, set())
        due[group_of(asset)] += len(made | reported)
        late[group_of(asset)] += len(reported)
        groups.add(group_of(asset))

    critical, passed = defaultdict(int), defaultdict(int)
    for run in history.runs:
        for check in run.checks:
            if check.blocking:
                critical[group_of(check.asset)] += 1
                passed[group_of(check.asset)] += check.passed

    models, tested = defaultdict(int), defaultdict(int)
    for model, has_test in history.models.items():
        models[group_of(model)] += 1
        tested[group_of(model)] += has_test
        groups.add(group_of(model))

    return [
        GroupSlo(
            group=group,
            runs_succeeded=runs[group][0],
            runs_failed=runs[group][1],
            runs_left_out=runs[group][2],
            success_rate=_share(runs[group][0], runs[group][0] + runs[group][1]),
            incidents=len(repair[group]),
            open_incidents=still_open[group],
            mttr_minutes=_minutes(repair[group]),
            mttd_minutes=_minutes(detect[group]),
            partitions_due=due[group],
            partitions_late=late[group],
            freshness_attainment=_share(due[group] - late[group], due[group]),
            critical_checks=critical[group],
            critical_checks_passed=passed[group],
            critical_checks_passing=_share(passed[group], critical[group]),
            models=models[group],
            models_tested=tested[group],
            models_with_tests=_share(tested[group], models[group]),
        )
        for group in sorted(groups)
    ]


# --- reading the instance ------------------------------------------------------------------------------


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _planned_partitions(data) -> list[str | None]:
    if data.partition:
        return [data.partition]
    if data.partitions_subset is not None:  # a range run plans its partitions as one subset
        return list(data.partitions_subset.get_partition_keys())
    return [None]


def run_history(run_record: dg.RunRecord, events: Iterable[dg.EventLogEntry]) -> RunHistory:
    """One finished run's history from its record and audit events (pure)."""
    run = run_record.dagster_run
    history = RunHistory(
        run_id=run.run_id,
        status=run.status.value,
        created=_utc(run_record.create_timestamp.timestamp()),
        ended=_utc(run_record.end_time or run_record.create_timestamp.timestamp()),
        not_run=bool(run.tags.get(NOT_RUN_TAG)),
    )
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        kind, data, at = event.event_type, event.event_specific_data, _utc(entry.timestamp)
        if kind == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
            asset = data.asset_key.to_user_string()
            history.planned.update((asset, p) for p in _planned_partitions(data))
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = data.materialization
            history.materialized[(mat.asset_key.to_user_string(), mat.partition)] = at
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            history.checks.append(
                CheckResult(
                    data.asset_key.to_user_string(),
                    data.partition,
                    data.check_name,
                    bool(data.passed),
                    bool(data.blocking),
                    at,
                )
            )
        elif kind == dg.DagsterEventType.STEP_FAILURE and history.first_failure_at is None:
            history.first_failure_at = at
    return history


def late_partitions_reported(instance: dg.DagsterInstance, since: datetime, until: datetime) -> dict[str, set[str]]:
    """asset -> partitions its `partition_freshness` check named late (the freshness sensor reports the
    check outside runs), between `since` and `until`. An asset with a rule but never late maps to set()."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            after_timestamp=since.timestamp(),
            before_timestamp=until.timestamp(),
        )
    )
    late: dict[str, set[str]] = {}
    for record in records:
        data = record.event_log_entry.dagster_event.event_specific_data
        if data.check_name != FRESHNESS_CHECK:
            continue
        named = data.metadata.get(LATE_PARTITIONS)
        late.setdefault(data.asset_key.to_user_string(), set()).update(named.value if named is not None else [])
    return late


def dbt_models_tested(manifest_path: Path) -> dict[str, bool]:
    """dbt model asset key -> whether a test is attached to it, from the dbt manifest.

    Keys are `<schema>/<model>`: Strata keys dbt assets by the schema they land in (silver, gold, ...)."""
    if not manifest_path.exists():
        return {}
    nodes = json.loads(manifest_path.read_text())["nodes"]
    tested = {
        parent
        for node in nodes.values()
        if node["resource_type"] == "test"
        for parent in node.get("depends_on", {}).get("nodes", [])
    }
    return {
        f"{node['schema']}/{node['name']}": uid in tested
        for uid, node in nodes.items()
        if node["resource_type"] == "model"
    }


def collect_history(
    instance: dg.DagsterInstance, since: datetime, until: datetime, manifest_path: Path | None = None
) -> History:
    """The runs that started in [since, until), the freshness reports of that period, the dbt models."""
    runs = []
    for record in finished_run_records(instance, updated_after=since):
        if not since <= _utc(record.create_timestamp.timestamp()) < until:
            continue
        runs.append(run_history(record, audit_events(instance, record.dagster_run.run_id)))
    late = late_partitions_reported(instance, since, until)
    return History(
        runs=runs,
        late_partitions={asset: parts for asset, parts in late.items() if parts},
        freshness_assets=set(late),
        models=dbt_models_tested(manifest_path) if manifest_path else {},
    )


# --- rendering -------------------------------------------------------------------------------------------

COLUMNS: Sequence[tuple[str, str]] = (
    ("group", "group"),
    ("success_rate", "success rate"),
    ("mttr_minutes", "MTTR (min)"),
    ("mttd_minutes", "MTTD (min)"),
    ("freshness_attainment", "freshness"),
    ("critical_checks_passing", "critical checks passing"),
    ("models_with_tests", "models with tests"),
)
SHARES = {"success_rate", "freshness_attainment", "critical_checks_passing", "models_with_tests"}


def _cell(row: GroupSlo, name: str) -> str:
    value = getattr(row, name)
    if value is None:
        return "-"
    if name in SHARES:
        return f"{value:.1%}"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def slo_markdown(rows: Sequence[GroupSlo], since: datetime, until: datetime) -> str:
    header = [label for _, label in COLUMNS]
    lines = [
        f"SLO figures for runs started in [{since:%Y-%m-%d %H:%M}, {until:%Y-%m-%d %H:%M}) UTC",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(_cell(r, name) for name, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def slo_text(rows: Sequence[GroupSlo], since: datetime, until: datetime) -> str:
    table = [[label for _, label in COLUMNS]] + [[_cell(r, name) for name, _ in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    body = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]
    return "\n".join([f"runs started in [{since:%Y-%m-%d %H:%M}, {until:%Y-%m-%d %H:%M}) UTC", *body])


def slo_chart_svg(rows: Sequence[GroupSlo]) -> str:
    """One bar chart of the four shares per group, as SVG text (matplotlib, no date stamp in the file)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = [name for name, _ in COLUMNS if name in SHARES]
    labels = dict(COLUMNS)
    figure, axes = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(shares)
    for i, name in enumerate(shares):
        values = [(getattr(r, name) or 0.0) * 100 for r in rows]
        axes.bar([g + i * width for g in range(len(rows))], values, width, label=labels[name])
    axes.set_xticks([g + 0.4 - width / 2 for g in range(len(rows))], [r.group for r in rows])
    axes.set_ylim(0, 105)
    axes.set_ylabel("%")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    plt.close(figure)
    return out.getvalue()


def slo_html(rows: Sequence[GroupSlo], since: datetime, until: datetime) -> str:
    from html import escape

    head = "".join(f"<th>{escape(label)}</th>" for _, label in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(r, name))}</td>" for name, _ in COLUMNS) + "</tr>" for r in rows
    )
    svg = slo_chart_svg(rows) if rows else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Strata SLO report</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style></head><body>"
        f"<h1>Strata SLO report</h1><p>Runs started in [{since:%Y-%m-%d %H:%M}, {until:%Y-%m-%d %H:%M}) UTC.</p>"
        f"<table><tr>{head}</tr>{body}</table>{svg}</body></html>"
    )


def slo_as_json(rows: Sequence[GroupSlo]) -> list[Mapping[str, object]]:
    from dataclasses import asdict

    return [asdict(r) for r in rows]
