"""Column-schema-change checks for published tables (dbt models, Gold): a column added, removed or retyped
since the previous run fails the check, naming the column and both types.

Dagster's `build_column_schema_change_checks` compares the asset's two most recent materializations.
A range run writes one materialization per partition, so after a two-day run those two are the same
run's and a change made by that run is never seen. This check compares the latest materialization with
the latest one of an EARLIER run, with Dagster's own diff (`TableSchemaDiff`) and message. The schemas
are the `dagster/column_schema` every dbt materialization carries (the warehouse's columns and types,
assets/transform/dbt_metadata.py). Severity comes from the policy table (`SCHEMA_CHANGE_CHECKS`).
"""

from collections.abc import Iterable, Mapping

import dagster as dg

CHECK_NAME = "column_schema_change"
COLUMN_SCHEMA = "dagster/column_schema"
PAGE = 100
# How far back to look for an earlier run: a range run of more partitions than this is compared with
# itself (passes), never with a wrong run.
MAX_RECORDS = 2000


def previous_run_schemas(
    instance: dg.DagsterInstance, key: dg.AssetKey
) -> tuple[dg.TableSchema | None, dg.TableSchema | None, str | None]:
    """(latest schema, schema of the latest materialization of an earlier run, that run's id)."""
    latest_run: str | None = None
    latest: dg.TableSchema | None = None
    cursor = None
    read = 0
    while read < MAX_RECORDS:
        result = instance.fetch_materializations(records_filter=key, limit=PAGE, cursor=cursor)
        for record in result.records:
            entry = record.asset_materialization.metadata.get(COLUMN_SCHEMA)
            schema = entry.value if entry is not None else None
            if latest_run is None:
                latest_run, latest = record.run_id, schema
            elif record.run_id != latest_run:
                return latest, schema, record.run_id
        read += len(result.records)
        if not result.has_more:
            break
        cursor = result.cursor
    return latest, None, None


def schema_change_result(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> tuple[bool, str, dict]:
    """(passed, description, metadata) for one asset's check."""
    from dagster._core.definitions.asset_checks.asset_check_factories.schema_change_checks import TableSchemaDiff

    latest, previous, previous_run = previous_run_schemas(instance, key.asset_key)
    if previous_run is None:
        return True, "No earlier run materialized the asset", {}
    if latest is None or previous is None:
        which = "latest" if latest is None else f"run {previous_run}'s"
        return False, f"The {which} materialization has no column schema metadata", {}
    diff = TableSchemaDiff.from_table_schemas(previous, latest)
    changes = {
        "added": {c.name: c.type for c in diff.added_columns},
        "removed": {c.name: c.type for c in diff.removed_columns},
        "retyped": {name: f"{t.old_type} -> {t.new_type}" for name, t in diff.column_type_changes.items()},
    }
    metadata = {"strata/compared_with_run": previous_run, "strata/schema_changes": dg.MetadataValue.json(changes)}
    if not any(changes.values()):
        return True, "No changes to column schema since the previous run", metadata
    lines = ["Column schema changed since the previous run."]
    if changes["added"]:
        lines.append("Added columns: " + ", ".join(f"{n} ({t})" for n, t in changes["added"].items()))
    if changes["removed"]:
        lines.append("Removed columns: " + ", ".join(f"{n} ({t})" for n, t in changes["removed"].items()))
    if changes["retyped"]:
        lines.append("Column type changes: " + ", ".join(f"{n}: {t}" for n, t in changes["retyped"].items()))
    return False, "\n".join(lines), metadata


def build_schema_change_checks(
    severity_by_key: Mapping[dg.AssetKey, dg.AssetCheckSeverity],
) -> list[dg.AssetChecksDefinition]:
    """One multi-asset check per severity over the given assets (run by every job that builds one of them)."""
    by_severity: dict[dg.AssetCheckSeverity, list[dg.AssetKey]] = {}
    for key, severity in sorted(severity_by_key.items(), key=lambda item: item[0].to_user_string()):
        by_severity.setdefault(severity, []).append(key)
    return [_checks(keys, severity) for severity, keys in by_severity.items()]


def _checks(keys: Iterable[dg.AssetKey], severity: dg.AssetCheckSeverity) -> dg.AssetChecksDefinition:
    specs = [
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=key,
            description="Columns added, removed or retyped since the previous run's materialization",
        )
        for key in keys
    ]

    @dg.multi_asset_check(specs=specs, can_subset=True, name=f"column_schema_change_{severity.value.lower()}")
    def column_schema_change(context: dg.AssetCheckExecutionContext):
        for check_key in context.selected_asset_check_keys:
            passed, description, metadata = schema_change_result(context.instance, check_key)
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=CHECK_NAME,
                passed=passed,
                severity=severity,
                description=description,
                metadata=metadata,
            )

    return column_schema_change
