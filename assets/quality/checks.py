"""Great Expectations suites in `expectations/` as Dagster asset checks.

Each suite file becomes one `multi_asset_check` on its table, one check per expectation. `critical`
checks are blocking, so a failure stops what is downstream in the same run (and, through the
automation conditions of jobs/policies.py, in later runs until the table passes); `warning` checks
are reported but block nothing. Adding or editing a suite file changes the checks without any Python
change. A check reads only the partition's rows and only the columns its suite names, Bronze from
Iceberg and Silver/Gold from the warehouse, and hands them to `assets.quality.gx_validation`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

# Not re-exported by `dagster` in 1.13; a range run's per-partition evaluations need it.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from assets.quality.gx_validation import ExpectationOutcome, validate
from assets.quality.suites import SuiteFile, SuiteFileError, columns_to_read, load_suite_files
from resources.iceberg import IcebergCatalog
from resources.warehouse import WAREHOUSE_POOL, Warehouse, quote_identifier, relation_name

PARTITIONS_PER_QUERY = 500  # partition keys per event-log query (an IN list)


def suite_parameters(window: dg.TimeWindow | None, checked: dg.EventLogRecord | None) -> dict[str, Any]:
    """Values suites may reference as {"$PARAMETER": name}: the partition window and what the
    materialization being checked (`checked`) reported (see `reported_parameters`)."""
    params: dict[str, Any] = {}
    if window is not None:
        end = window.end.replace(tzinfo=None)
        params.update(
            window_start=window.start.replace(tzinfo=None).isoformat(),
            window_end=end.isoformat(),
            window_last_15_minutes=(end - timedelta(minutes=15)).isoformat(),
        )
    if checked is not None:
        metadata = checked.asset_materialization.metadata
        params.update(reported_parameters({key: value.value for key, value in metadata.items()}))
    return params


def reported_parameters(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric `strata/*` values of a materialization without their prefix (e.g. `rows_in`, the
    manifest's row count), plus `rows_accepted`: the rows the table should hold, i.e. `rows_in` minus
    `rows_quarantined` when both were reported, else `rows_in`."""
    params = {
        key.removeprefix("strata/"): value
        for key, value in metadata.items()
        if key.startswith("strata/") and isinstance(value, int | float)
    }
    if "rows_in" in params:
        params["rows_accepted"] = params["rows_in"] - params.get("rows_quarantined", 0)
    return params


def latest_materialization(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key), limit=1).records
    return records[0] if records else None


def latest_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_keys: Sequence[str]
) -> dict[str, dg.EventLogRecord]:
    """The latest materialization of each partition (those never materialized are absent), in a few
    queries however many partitions a run covers: newest first, so the first record seen wins."""
    latest: dict[str, dg.EventLogRecord] = {}
    for first in range(0, len(partition_keys), PARTITIONS_PER_QUERY):
        chunk = list(partition_keys[first : first + PARTITIONS_PER_QUERY])
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=chunk), limit=len(chunk), cursor=cursor
            )
            for record in page.records:
                latest.setdefault(record.partition_key, record)
            if all(key in latest for key in chunk) or not page.has_more:
                break
            cursor = page.cursor
    return latest


def partition_slices(rows, column: str | None, windows: Mapping[str, dg.TimeWindow]) -> dict[str, Any]:
    """Each partition's rows of a frame read for the whole run: one sort, then a binary search per
    partition, so splitting costs no more than reading when a run covers thousands of partitions."""
    import numpy as np

    if column is None:  # the suite names no time column: the same rows stand for every partition
        return dict.fromkeys(windows, rows)
    ordered = rows.sort_values(column, kind="stable", ignore_index=True)
    values = ordered[column].to_numpy()
    slices = {}
    for key, window in windows.items():
        bounds = [np.datetime64(moment.replace(tzinfo=None)) for moment in (window.start, window.end)]
        first, last = np.searchsorted(values, bounds[0], "left"), np.searchsorted(values, bounds[1], "left")
        slices[key] = ordered.iloc[first:last]
    return slices


def columns_with_partition_column(
    suite: SuiteFile, table_columns: Sequence[str], window: dg.TimeWindow | None
) -> list[str]:
    """The columns the suite reads, plus, for a partitioned read, the column that splits the rows into
    partitions (a range run validates each partition on its own rows)."""
    names = columns_to_read(suite, table_columns)
    split = suite.time_column or suite.date_column
    if window is not None and split in table_columns and split not in names:
        names = [name for name in table_columns if name in {*names, split}]
    return names


def read_rows(suite: SuiteFile, window: dg.TimeWindow | None, iceberg: IcebergCatalog, warehouse: Warehouse):
    """The rows to validate, as pandas (GX 1.x has no polars support): Bronze from Iceberg, Silver
    and Gold from the warehouse; only the partition's rows when the check runs for a partition, and
    only the columns the suite reads."""
    start = window.start.replace(tzinfo=None) if window else None
    end = window.end.replace(tzinfo=None) if window else None
    if suite.layer == "bronze":
        table = iceberg.load().load_table(f"bronze.{suite.table}")
        columns = tuple(columns_with_partition_column(suite, table.schema().column_names, window))
        if window is not None and suite.time_column:
            from assets.bronze.telemetry import time_range_filter

            scan = table.scan(row_filter=time_range_filter(suite.time_column, start, end), selected_fields=columns)
        else:
            scan = table.scan(selected_fields=columns)
        rows = scan.to_arrow()
    else:
        # Portable SQL (quoted identifiers, `?` parameters): the same text runs on DuckDB and Trino.
        column = suite.time_column or suite.date_column
        where, params = "", []
        if window is not None and column:
            where, params = f" WHERE {quote_identifier(column)} >= ? AND {quote_identifier(column)} < ?", [start, end]
            if suite.date_column:
                params = [start.date(), end.date()]
        relation = relation_name(suite.layer, suite.table)
        names = columns_with_partition_column(suite, warehouse.column_names(relation), window)
        select = ", ".join(quote_identifier(name) for name in names)
        rows = warehouse.query_arrow(f"SELECT {select} FROM {relation}{where}", params)
    # Straight from Arrow, as polars' to_pandas() did it (dates as datetime64, not objects) minus
    # the copy into polars and back.
    return rows.to_pandas(date_as_object=False)


def judged_window(
    partition: dg.TimeWindow, checked: dg.EventLogRecord | None, run_window: dg.TimeWindow
) -> dg.TimeWindow:
    """The window over which a partition's checks of reported numbers (e.g. the manifest's row count)
    are judged: the partition's own, unless the materialization being checked reported one wider
    window for several partitions (`strata/data_window` of a range run that put its totals on every
    partition). Those numbers hold only for that window, so such checks validate it as a whole and
    record the result for each of its partitions, naming it in `strata/evaluated_window`; checks of
    the rows alone still judge each partition on its own rows. Only within the rows this run read."""
    if checked is None:
        return partition
    reported = parse_window(checked.asset_materialization.metadata.get("strata/data_window"))
    if reported is None or reported == partition:
        return partition
    covers_partition = reported.start <= partition.start and partition.end <= reported.end
    within_run = run_window.start <= reported.start and reported.end <= run_window.end
    return reported if covers_partition and within_run else partition


def parse_window(value: dg.MetadataValue | None) -> dg.TimeWindow | None:
    """`[start, end)` as written by `audit_metadata` (ISO dates or date-times, UTC), else None."""
    text = str(value.value) if value is not None else ""
    if not (text.startswith("[") and text.endswith(")")) or ", " not in text:
        return None
    try:
        start, end = (datetime.fromisoformat(part.strip()) for part in text[1:-1].split(", ", 1))
    except ValueError:
        return None
    return dg.TimeWindow(start.replace(tzinfo=start.tzinfo or UTC), end.replace(tzinfo=end.tzinfo or UTC))


def format_window(window: dg.TimeWindow) -> str:
    return f"[{window.start.replace(tzinfo=None).isoformat()}, {window.end.replace(tzinfo=None).isoformat()})"


# (outcome, rows it judged, window it judged)
Outcome = tuple[ExpectationOutcome, int, dg.TimeWindow]
WINDOW_PARAMETERS = frozenset({"window_start", "window_end", "window_last_15_minutes"})


def outcomes_over(suite: SuiteFile | None, rows, window: dg.TimeWindow, params: dict[str, Any]) -> list[Outcome]:
    if suite is None:
        return []
    return [(outcome, len(rows), window) for outcome in validate(suite, rows, params)]


def parameter_names(value: Any) -> set[str]:
    """The `{"$PARAMETER": name}` names an expectation's kwargs reference."""
    if isinstance(value, dict):
        if set(value) == {"$PARAMETER"}:
            return {str(value["$PARAMETER"])}
        return set().union(*(parameter_names(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(parameter_names(v) for v in value))
    return set()


def split_by_reported_numbers(suite: SuiteFile) -> tuple[SuiteFile | None, SuiteFile | None]:
    """(checks of the rows alone, checks against numbers the materialization reported, e.g. the
    manifest's row count) as two suites, either None when empty. Named apart, since GX objects are
    cached by suite name."""
    reported = tuple(c for c in suite.checks if parameter_names(c.expectation.get("kwargs", {})) - WINDOW_PARAMETERS)
    own = tuple(c for c in suite.checks if c not in reported)

    def part(checks: tuple, tag: str) -> SuiteFile | None:
        name = f"{suite.suite['name']}#{tag}"
        return replace(suite, checks=checks, suite={**suite.suite, "name": name}) if checks else None

    return part(own, "rows"), part(reported, "reported")


def severity_of(blocking: bool) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN


def target_materialization(record: dg.EventLogRecord | None) -> AssetCheckEvaluationTargetMaterializationData | None:
    """Which materialization a partition's evaluation judged; the UI counts an evaluation as current
    for its partition only when it names the partition's latest materialization."""
    if record is None:
        return None
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )


def build_suite_checks(suite: SuiteFile, partitions_def: dg.PartitionsDefinition | None) -> dg.AssetChecksDefinition:
    specs = [
        dg.AssetCheckSpec(
            check.name,
            asset=suite.asset_key,
            blocking=check.blocking,
            description=f"{'critical' if check.blocking else 'warning'}: {check.description} ({suite.path.name})",
            partitions_def=partitions_def,
        )
        for check in suite.checks
    ]
    specs_by_name = {spec.name: spec for spec in specs}

    @dg.multi_asset_check(
        specs=specs,
        name=f"gx_{suite.layer}_{suite.table}",
        can_subset=True,
        compute_kind="great_expectations",
        description=f"Great Expectations suite {suite.path.name}",
        # Silver and Gold are read from the warehouse: share its pool (jobs/policies.py POOLS), since a
        # DuckDB reader cannot open the file while a dbt run writes it.
        pool=None if suite.layer == "bronze" else WAREHOUSE_POOL,
    )
    def suite_checks(context: dg.AssetCheckExecutionContext, iceberg: IcebergCatalog, warehouse: Warehouse):
        selected = {key.name for key in context.selected_asset_check_keys}
        by_name = {c.name: c for c in suite.checks}
        partitioned = context.has_partition_key or context.has_partition_key_range
        if not partitioned:
            rows = read_rows(suite, None, iceberg, warehouse)
            checked = latest_materialization(context.instance, suite.asset_key)
            for outcome in validate(suite, rows, suite_parameters(None, checked)):
                if outcome.check in selected:
                    check = by_name[outcome.check]
                    yield dg.AssetCheckResult(
                        asset_key=suite.asset_key,
                        check_name=outcome.check,
                        passed=outcome.success,
                        severity=severity_of(check.blocking),
                        metadata={"rows_validated": len(rows), **outcome.metadata},
                    )
            return
        # Every partition of the run is judged on its own rows and against its own materialization,
        # and its result is recorded for that partition (a range run's AssetCheckResult would be
        # stored unpartitioned, and the UI would show the run's partitions as never evaluated).
        assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
        run_window = context.partition_time_window
        rows = read_rows(suite, run_window, iceberg, warehouse)
        windows = {key: partitions_def.time_window_for_partition_key(key) for key in context.partition_keys}
        checked = latest_materializations(context.instance, suite.asset_key, list(windows))
        judged = {key: judged_window(window, checked.get(key), run_window) for key, window in windows.items()}
        slices = partition_slices(
            rows, suite.time_column or suite.date_column, {**windows, **{w: w for w in judged.values()}}
        )
        own_suite, reported_suite = split_by_reported_numbers(suite)
        over_reported_window: dict[tuple[dg.TimeWindow, str | None], list[Outcome]] = {}
        for key, window in windows.items():
            target = checked.get(key)
            if judged[key] == window:  # the materialization reported this partition's own numbers
                outcomes = outcomes_over(suite, slices[key], window, suite_parameters(window, target))
            else:
                # Checks of the rows alone judge this partition; those of the reported numbers judge the
                # window the numbers were reported for (once per window).
                outcomes = outcomes_over(own_suite, slices[key], window, suite_parameters(window, None))
                group = (judged[key], target.run_id if target else None)
                if group not in over_reported_window:
                    params = suite_parameters(judged[key], target)
                    over_reported_window[group] = outcomes_over(
                        reported_suite, slices[judged[key]], judged[key], params
                    )
                outcomes += over_reported_window[group]
            for outcome, rows_validated, evaluated_window in outcomes:
                if outcome.check not in selected:
                    continue
                check = by_name[outcome.check]
                yield dg.AssetCheckEvaluation(
                    asset_key=suite.asset_key,
                    check_name=outcome.check,
                    passed=outcome.success,
                    severity=severity_of(check.blocking),
                    blocking=check.blocking,
                    partition=key,
                    metadata={
                        "rows_validated": rows_validated,
                        "strata/evaluated_window": format_window(evaluated_window),
                        **outcome.metadata,
                    },
                    target_materialization_data=target_materialization(target),
                )
        # Each selected check's output, as Dagster yields it for an AssetCheckResult.
        for name in sorted(selected):
            yield dg.Output(None, output_name=specs_by_name[name].get_python_identifier())

    return suite_checks


def build_quality_checks(
    partitions_by_asset: Mapping[dg.AssetKey, dg.PartitionsDefinition | None],
    suites: Sequence[SuiteFile] | None = None,
) -> list[dg.AssetChecksDefinition]:
    """Checks for every suite file whose table is an asset of this code location."""
    checks = []
    for suite in load_suite_files() if suites is None else suites:
        if suite.asset_key not in partitions_by_asset:
            raise SuiteFileError(f"{suite.path.name}: no asset {suite.asset_key.to_user_string()} to guard")
        checks.append(build_suite_checks(suite, partitions_by_asset[suite.asset_key]))
    return checks
