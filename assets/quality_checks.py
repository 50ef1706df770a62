"""Great Expectations 1.x suites in `expectations/` as Dagster asset checks (dagster-ge needs GX < 1.0).

One JSON file per guarded table, named after the table (`bronze.telemetry.json` guards
`bronze/telemetry`). Each expectation becomes one asset check named by its `meta.check`. Its GX
`severity` decides whether the check gates: `critical` checks are blocking, so a failure stops what
is downstream in the same run; `warning` checks are reported but block nothing. Adding or editing a
suite file changes the checks without any Python change.

Defining the checks only reads JSON. Great Expectations (about 5 s to import) is loaded when a check
runs, so the code location stays fast.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from resources.iceberg import IcebergCatalog
from resources.settings import REPO_ROOT
from resources.warehouse import Warehouse

EXPECTATIONS_DIR = REPO_ROOT / "expectations"
BLOCKING_SEVERITY = "critical"
SEVERITIES = {"critical", "warning"}
SAMPLE_SIZE = 10


@dataclass(frozen=True)
class SuiteCheck:
    name: str
    blocking: bool
    description: str
    expectation: dict


@dataclass(frozen=True)
class SuiteFile:
    """A parsed suite file: the table it guards and one check per expectation."""

    path: Path
    asset_key: dg.AssetKey
    suite: dict
    checks: tuple[SuiteCheck, ...]
    time_column: str | None = None  # filters a partitioned table's rows to the partition window
    date_column: str | None = None

    @property
    def layer(self) -> str:
        return self.asset_key.path[0]

    @property
    def table(self) -> str:
        return self.asset_key.path[-1]


class SuiteFileError(ValueError):
    """A suite file that cannot become checks; the message names the file and the expectation."""


def describe(expectation: dict) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in expectation.get("kwargs", {}).items())
    return f"{expectation['type']}({kwargs})"


def parse_suite_file(path: Path) -> SuiteFile:
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SuiteFileError(f"{path.name}: not valid JSON ({exc})") from exc
    name = suite.get("name", "")
    if name != path.name.removesuffix(".json") or name.count(".") != 1:
        raise SuiteFileError(f"{path.name}: 'name' must be '<layer>.<table>' and match the file name, got {name!r}")
    checks, seen = [], set()
    for index, expectation in enumerate(suite.get("expectations", [])):
        check = expectation.get("meta", {}).get("check")
        severity = expectation.get("severity", BLOCKING_SEVERITY)
        where = f"{path.name}: expectation {index} ({expectation.get('type')})"
        if not check:
            raise SuiteFileError(f"{where}: needs meta.check, the name of its asset check")
        if check in seen:
            raise SuiteFileError(f"{where}: check name {check!r} is used twice")
        if severity not in SEVERITIES:
            raise SuiteFileError(f"{where}: severity must be one of {sorted(SEVERITIES)}, got {severity!r}")
        seen.add(check)
        checks.append(SuiteCheck(check, severity == BLOCKING_SEVERITY, describe(expectation), expectation))
    strata = suite.get("meta", {}).get("strata", {})
    return SuiteFile(
        path=path,
        asset_key=dg.AssetKey(name.split(".")),
        suite=suite,
        checks=tuple(checks),
        time_column=strata.get("time_column"),
        date_column=strata.get("date_column"),
    )


def load_suite_files(folder: Path = EXPECTATIONS_DIR) -> list[SuiteFile]:
    return [parse_suite_file(path) for path in sorted(folder.glob("*.json"))]


def suite_parameters(
    context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey, window: dg.TimeWindow | None
) -> dict[str, Any]:
    """Values suites may reference as {"$PARAMETER": name}: the partition window and what the
    materialization being checked reported (e.g. `rows_in`, the manifest's row count)."""
    params: dict[str, Any] = {}
    if window is not None:
        end = window.end.replace(tzinfo=None)
        params.update(
            window_start=window.start.replace(tzinfo=None).isoformat(),
            window_end=end.isoformat(),
            window_last_15_minutes=(end - timedelta(minutes=15)).isoformat(),
        )
    record = latest_materialization(context, asset_key)
    if record is not None:
        for key, value in record.asset_materialization.metadata.items():
            if key.startswith("strata/") and isinstance(value.value, int | float):
                params[key.removeprefix("strata/")] = value.value
    return params


def latest_materialization(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey):
    partition = context.partition_key if context.has_partition_key else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0] if records else None


def read_rows(suite: SuiteFile, window: dg.TimeWindow | None, iceberg: IcebergCatalog, warehouse: Warehouse):
    """The rows to validate, as pandas (GX 1.x has no polars support): Bronze from Iceberg, Silver
    and Gold from the warehouse; only the partition's rows when the check runs for a partition."""
    import polars as pl

    start = window.start.replace(tzinfo=None) if window else None
    end = window.end.replace(tzinfo=None) if window else None
    if suite.layer == "bronze":
        table = iceberg.load().load_table(f"bronze.{suite.table}")
        if window is not None and suite.time_column:
            from assets.bronze_telemetry import time_range_filter

            rows = table.scan(row_filter=time_range_filter(suite.time_column, start, end)).to_arrow()
        else:
            rows = table.scan().to_arrow()
    else:
        column = suite.time_column or suite.date_column
        where, params = "", []
        if window is not None and column:
            where, params = f" WHERE {column} >= ? AND {column} < ?", [start, end]
            if suite.date_column:
                params = [start.date(), end.date()]
        with warehouse.connect(read_only=True) as con:
            rows = con.execute(f'SELECT * FROM {suite.layer}."{suite.table}"{where}', params).to_arrow_table()
    return pl.from_arrow(rows).to_pandas()


@dataclass(frozen=True)
class ExpectationOutcome:
    check: str
    success: bool
    metadata: dict[str, Any]


def validate(suite: SuiteFile, rows, parameters: Mapping[str, Any]) -> list[ExpectationOutcome]:
    """Run the suite on `rows` in an ephemeral GX context; one outcome per expectation."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("strata")
        .add_dataframe_asset(suite.suite["name"])
        .add_batch_definition_whole_dataframe("partition")
    )
    expectations = [{k: v for k, v in c.expectation.items() if k != "id"} for c in suite.checks]
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite.suite["name"], expectations=expectations))
    batch = batch_definition.get_batch(batch_parameters={"dataframe": rows})
    result = batch.validate(
        gx_suite,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE},
        expectation_parameters=dict(parameters),
    )
    outcomes = []
    for item in result.results:
        details = item.result or {}
        metadata: dict[str, Any] = {"expectation": describe(item.expectation_config.to_json_dict())}
        for key in ("element_count", "unexpected_count", "unexpected_percent", "observed_value"):
            if details.get(key) is not None:
                metadata[key] = _plain(details[key])
        if details.get("partial_unexpected_list"):
            metadata["unexpected_sample"] = dg.MetadataValue.json(_plain(details["partial_unexpected_list"]))
        if item.exception_info and item.exception_info.get("raised_exception"):
            metadata["error"] = item.exception_info.get("exception_message", "")
        outcomes.append(ExpectationOutcome(item.expectation_config.meta["check"], bool(item.success), metadata))
    return outcomes


def _plain(value: Any) -> Any:
    """JSON-safe values for metadata (numpy scalars, timestamps)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)


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
