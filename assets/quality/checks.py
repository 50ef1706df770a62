"""Great Expectations suites in `expectations/` as Dagster asset checks.

Each suite file becomes one `multi_asset_check` on its table, one check per expectation. `critical`
checks are blocking, so a failure stops what is downstream in the same run (and, through the
automation conditions of jobs/policies.py, in later runs until the table passes); `warning` checks
are reported but block nothing. Adding or editing a suite file changes the checks without any Python
change. A check reads only the partition's rows and only the columns its suite names, Bronze from
Iceberg and Silver/Gold from the warehouse, and hands them to `assets.quality.gx_validation`.
"""

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from assets.quality.gx_validation import validate
from assets.quality.suites import SuiteFile, SuiteFileError, columns_to_read, load_suite_files
from resources.iceberg import IcebergCatalog
from resources.warehouse import WAREHOUSE_POOL, Warehouse, quote_identifier, relation_name


def suite_parameters(
    context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey, window: dg.TimeWindow | None
) -> dict[str, Any]:
    """Values suites may reference as {"$PARAMETER": name}: the partition window and what the
    materialization being checked reported (see `reported_parameters`)."""
    params: dict[str, Any] = {}
    if window is not None:
        end = window.end.replace(tzinfo=None)
        params.update(
            window_start=window.start.replace(tzinfo=None).isoformat(),
            window_end=end.isoformat(),
            window_last_15_minutes=(end - timedelta(minutes=15)).isoformat(),
        )
    records = latest_materializations(context, asset_key)
    for record in records:
        metadata = record.asset_materialization.metadata
        for name, value in reported_parameters({key: value.value for key, value in metadata.items()}).items():
            # A range run is checked as a whole: each partition reports its own counts, so add them up.
            params[name] = params.get(name, 0) + value
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


def latest_materializations(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey) -> list:
    """The latest materialization of each partition being checked (of the asset when unpartitioned)."""
    if not (context.has_partition_key or context.has_partition_key_range):
        records = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key), limit=1).records
        return list(records)
    partitions = list(context.partition_keys)
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=partitions), limit=len(partitions)
    ).records
    latest: dict[str, object] = {}
    for record in records:  # newest first
        latest.setdefault(record.partition_key, record)
    return list(latest.values())


def read_rows(suite: SuiteFile, window: dg.TimeWindow | None, iceberg: IcebergCatalog, warehouse: Warehouse):
    """The rows to validate, as pandas (GX 1.x has no polars support): Bronze from Iceberg, Silver
    and Gold from the warehouse; only the partition's rows when the check runs for a partition, and
    only the columns the suite reads."""
    start = window.start.replace(tzinfo=None) if window else None
    end = window.end.replace(tzinfo=None) if window else None
    if suite.layer == "bronze":
        table = iceberg.load().load_table(f"bronze.{suite.table}")
        columns = tuple(columns_to_read(suite, table.schema().column_names))
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
        names = columns_to_read(suite, warehouse.column_names(relation))
        select = ", ".join(quote_identifier(name) for name in names)
        rows = warehouse.query_arrow(f"SELECT {select} FROM {relation}{where}", params)
    # Straight from Arrow, as polars' to_pandas() did it (dates as datetime64, not objects) minus
    # the copy into polars and back.
    return rows.to_pandas(date_as_object=False)


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
        partitioned = context.has_partition_key or context.has_partition_key_range
        window = context.partition_time_window if partitioned else None
        rows = read_rows(suite, window, iceberg, warehouse)
        outcomes = validate(suite, rows, suite_parameters(context, suite.asset_key, window))
        selected = {key.name for key in context.selected_asset_check_keys}
        by_name = {c.name: c for c in suite.checks}
        for outcome in outcomes:
            if outcome.check not in selected:
                continue
            check = by_name[outcome.check]
            yield dg.AssetCheckResult(
                asset_key=suite.asset_key,
                check_name=outcome.check,
                passed=outcome.success,
                severity=dg.AssetCheckSeverity.ERROR if check.blocking else dg.AssetCheckSeverity.WARN,
                metadata={"rows_validated": len(rows), **outcome.metadata},
            )

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
