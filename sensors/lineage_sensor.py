"""The lineage sensor: every finished run's OpenLineage events (audit/lineage.py), sent in one batch per tick.

It follows finished runs exactly like the audit sensor (same cursor: newest update time processed plus
the runs seen within the overlap), and advances its cursor only after the batch was accepted: a tick
whose endpoint is down fails and the next one sends the same events again, with the same run ids.
With no OpenLineage target configured (the default), a tick reads nothing and skips.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from audit.lineage import AssetLineage, DatasetName, LineageGraph, build_lineage_events, lineage_events_of
from audit.record import iter_audit_records
from resources.iceberg import IcebergCatalog
from resources.lineage import OpenLineageSink
from resources.warehouse import Warehouse
from sensors.audit_sensor import AuditCursor, advance_cursor, finished_runs_since

SENSOR_NAME = "openlineage_sensor"
MAX_RUNS_PER_TICK = 200
TICK_BUDGET_SECONDS = 30.0
DBT_UNIQUE_ID = "dagster_dbt/unique_id"
DBT_MANIFEST = "dagster_dbt/manifest"


def warehouse_dataset_namespace(warehouse: Warehouse) -> tuple[str, str]:
    """(namespace, name prefix) of the SQL warehouse's tables, after OpenLineage's naming: the DuckDB file
    locally, `trino://host:port` with the catalog as the name's first part in prod."""
    if warehouse.engine == "trino":
        return f"trino://{warehouse.trino_host}:{warehouse.trino_port}", f"{warehouse.trino_catalog}."
    return f"duckdb://{warehouse.duckdb_path}", ""


def lineage_graph(
    repository: dg.RepositoryDefinition, iceberg: IcebergCatalog, warehouse: Warehouse, job_namespace: str
) -> LineageGraph:
    """Each asset's table, upstream assets and (dbt models) SQL, from the code location's definitions.
    dbt models live in the SQL warehouse; every other table Strata writes is an Iceberg table."""
    sql_namespace, sql_prefix = warehouse_dataset_namespace(warehouse)
    assets: dict[dg.AssetKey, AssetLineage] = {}
    graph = repository.asset_graph
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        metadata: Mapping[str, Any] = node.metadata or {}
        unique_id = getattr(metadata.get(DBT_UNIQUE_ID), "value", metadata.get(DBT_UNIQUE_ID))
        manifest = getattr(metadata.get(DBT_MANIFEST), "manifest", None)
        dbt_node = (manifest or {}).get("nodes", {}).get(unique_id) if unique_id else None
        if dbt_node is not None:
            table = f"{dbt_node['schema']}.{dbt_node.get('alias') or dbt_node['name']}"
            sql = dbt_node.get("compiled_code") or dbt_node.get("raw_code")
            dialect = "trino" if warehouse.engine == "trino" else "duckdb"
            dataset = DatasetName(sql_namespace, sql_prefix + table)
            assets[key] = AssetLineage(dataset, tuple(node.parent_keys), sql, dialect)
        else:
            assets[key] = AssetLineage(DatasetName(iceberg.warehouse, ".".join(key.path)), tuple(node.parent_keys))
    return LineageGraph(assets=assets, job_namespace=job_namespace, fallback_namespace=iceberg.warehouse)


def lineage_for_finished_runs(
    instance: dg.DagsterInstance,
    graph: LineageGraph,
    cursor: AuditCursor,
    *,
    limit: int = MAX_RUNS_PER_TICK,
    budget_s: float = TICK_BUDGET_SECONDS,
) -> tuple[list[Any], AuditCursor, int]:
    """(events, next cursor, runs read) for the runs finished since `cursor`, oldest first."""
    deadline = time.monotonic() + budget_s
    done: list[dg.RunRecord] = []
    events: list[Any] = []
    for run_record, record in iter_audit_records(instance, finished_runs_since(instance, cursor, limit)):
        events.extend(
            build_lineage_events(run_record, lineage_events_of(instance, run_record.dagster_run.run_id), record, graph)
        )
        done.append(run_record)
        if time.monotonic() > deadline:
            break
    return events, advance_cursor(cursor, done), len(done)


def build_lineage_sensor(repository: Callable[[], dg.RepositoryDefinition] | None = None) -> dg.SensorDefinition:
    """`repository`: the definitions whose tables the events name, when they are not the sensor's own code
    location's (the sensor runs in one location and reports the runs of all of them)."""

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Sends a START and a COMPLETE/FAIL OpenLineage event for every finished run and every asset "
            "partition it materialized, to STRATA_OPENLINEAGE_URL and/or STRATA_OPENLINEAGE_FILE. "
            "Off (skips) when neither is set. Launches no runs."
        ),
    )
    def openlineage_sensor(
        context: dg.SensorEvaluationContext, lineage: OpenLineageSink, iceberg: IcebergCatalog, warehouse: Warehouse
    ) -> dg.SensorResult | dg.SkipReason:
        if not lineage.enabled:
            return dg.SkipReason("OpenLineage is off: set STRATA_OPENLINEAGE_URL or STRATA_OPENLINEAGE_FILE")
        graph = lineage_graph(
            repository() if repository else context.repository_def, iceberg, warehouse, lineage.namespace
        )
        events, cursor, runs = lineage_for_finished_runs(context.instance, graph, AuditCursor.parse(context.cursor))
        sent = lineage.emit(events)
        summary = f"{runs} finished run(s) -> {sent} OpenLineage event(s) sent"
        context.log.info(summary)
        return dg.SensorResult(cursor=cursor.serialize(), skip_reason=dg.SkipReason(summary))

    return openlineage_sensor
