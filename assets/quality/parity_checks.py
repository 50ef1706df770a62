"""Dual-run parity as asset checks: one check per migrated table (`assets/quality/parity.yaml`).

Each partition of a run is compared with the legacy output of the same day and judged for that
partition. During the dual run a difference is a warning; once the table is declared cut over it is an
error and the check blocks what is downstream (the state is configuration, read when the code location
loads). Every evaluation publishes its parity report (Markdown + JSON) to the outputs area under
`parity/<table>/<day>/<run id>/`, kept as a release artifact, and links it from the check's metadata;
`audit cutover` reads those reports back.
"""

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime

import dagster as dg

from assets.quality.checks import latest_materializations, target_materialization
from assets.quality.parity import ParityResult, compare_legacy_output, report_json, report_markdown
from assets.quality.parity_config import ParityConfigError, ParityTable, load_parity_tables
from resources.landing import LandingZone
from resources.outputs import OutputsArea
from resources.warehouse import WAREHOUSE_POOL, Warehouse, quote_identifier, relation_name

PARITY_FOLDER = "parity"
PARITY_CHECK = "parity_with_legacy"


def report_folder(table: ParityTable, day: date, run_id: str) -> str:
    return f"{PARITY_FOLDER}/{table.table}/{day.isoformat()}/{run_id}"


def read_legacy(landing: LandingZone, key: str) -> bytes | None:
    return landing.read_bytes(key) if landing.exists(key) else None


def governed_rows(table: ParityTable, warehouse: Warehouse, start: date, end: date):
    """The governed table's rows of days [start, end), only the compared columns (portable SQL)."""
    columns = ", ".join(quote_identifier(c.name) for c in table.columns)
    day = quote_identifier(table.day_column)
    sql = f"SELECT {columns} FROM {relation_name(table.layer, table.name)} WHERE {day} >= ? AND {day} < ?"
    return warehouse.query_arrow(sql, [start, end])


def rows_of_day(rows, day_column: str, day: date):
    import pyarrow.compute as pc

    days = pc.cast(rows.column(day_column), "date32") if rows.num_rows else rows.column(day_column)
    return rows.filter(pc.equal(days, day)) if rows.num_rows else rows


def result_metadata(result: ParityResult, report_uri: str) -> dict[str, dg.MetadataValue]:
    return {
        "strata/parity_report": dg.MetadataValue.url(f"{report_uri}/report.md")
        if report_uri.startswith(("s3://", "http"))
        else dg.MetadataValue.path(f"{report_uri}/report.md"),
        "strata/parity_report_json": dg.MetadataValue.path(f"{report_uri}/report.json"),
        "strata/parity_state": result.state,
        "legacy_file": result.legacy_file,
        "rows_legacy": result.rows_legacy,
        "rows_new": result.rows_new,
        "keys_only_in_legacy": len(result.keys_only_in_legacy),
        "keys_only_in_new": len(result.keys_only_in_new),
        "duplicate_keys": len(result.duplicate_keys_legacy) + len(result.duplicate_keys_new),
        "columns_out_of_tolerance": dg.MetadataValue.json(
            {c.column: c.mismatches for c in result.columns if c.mismatches}
        ),
        "differing_rows": result.differing_rows,
        "summary": result.summary(),
    }


def evaluate_day(
    table: ParityTable,
    day: date,
    rows,
    landing: LandingZone,
    outputs: OutputsArea,
    run_id: str,
) -> tuple[ParityResult, str]:
    """Compare one day and publish its report; (the result, the report folder's URI)."""
    legacy_key = table.legacy_key(day)
    result = compare_legacy_output(table, day, read_legacy(landing, legacy_key), rows, landing.uri(legacy_key))
    checked_at = datetime.now(UTC).isoformat(timespec="seconds")
    publication = outputs.publish(
        report_folder(table, day, run_id),
        {
            "report.json": report_json(result, run_id, checked_at, table.ready_after_days),
            "report.md": report_markdown(result, run_id, checked_at),
        },
    )
    return result, publication.uri


def build_parity_check(table: ParityTable, partitions_def: dg.PartitionsDefinition | None) -> dg.AssetChecksDefinition:
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        raise ParityConfigError(f"{table.source}: {table.table} is not partitioned by day: parity compares days")
    spec = dg.AssetCheckSpec(
        PARITY_CHECK,
        asset=table.asset_key,
        blocking=table.blocking,
        description=(
            f"{'error, blocking (cut over)' if table.blocking else 'warning (dual run)'}: each day equals the "
            f"legacy output {table.legacy_file} on key {', '.join(table.key)} within the declared tolerances"
        ),
        partitions_def=partitions_def,
    )
    severity = dg.AssetCheckSeverity.ERROR if table.blocking else dg.AssetCheckSeverity.WARN

    @dg.multi_asset_check(
        specs=[spec],
        name=f"parity_{table.layer}_{table.name}",
        compute_kind="datacompy",
        description=f"Dual-run parity of {table.table} with the legacy batch ({table.source})",
        pool=WAREHOUSE_POOL,  # reads the warehouse, like the GX checks of Silver and Gold
    )
    def parity_check(
        context: dg.AssetCheckExecutionContext, warehouse: Warehouse, landing: LandingZone, outputs: OutputsArea
    ):
        window = context.partition_time_window
        days = {key: partitions_def.time_window_for_partition_key(key).start.date() for key in context.partition_keys}
        rows = governed_rows(table, warehouse, window.start.date(), window.end.date())
        checked = latest_materializations(context.instance, table.asset_key, list(days))
        for key, day in days.items():
            result, report_uri = evaluate_day(
                table, day, rows_of_day(rows, table.day_column, day), landing, outputs, context.run.run_id
            )
            (context.log.info if result.matched else context.log.warning)(f"{result.summary()} ({report_uri})")
            yield dg.AssetCheckEvaluation(
                asset_key=table.asset_key,
                check_name=spec.name,
                passed=result.matched,
                severity=severity,
                blocking=table.blocking,
                partition=key,
                metadata=result_metadata(result, report_uri),
                target_materialization_data=target_materialization(checked.get(key)),
            )
        yield dg.Output(None, output_name=spec.get_python_identifier())

    return parity_check


def build_parity_checks(
    partitions_by_asset: Mapping[dg.AssetKey, dg.PartitionsDefinition | None],
    tables: Sequence[ParityTable] | None = None,
) -> list[dg.AssetChecksDefinition]:
    """One parity check per declared table; a table that is not an asset here is a configuration error."""
    checks = []
    for table in load_parity_tables() if tables is None else tables:
        if table.asset_key not in partitions_by_asset:
            raise ParityConfigError(f"{table.source}: no asset {table.asset_key.to_user_string()} to compare")
        checks.append(build_parity_check(table, partitions_by_asset[table.asset_key]))
    return checks
