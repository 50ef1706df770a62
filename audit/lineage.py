"""OpenLineage events for one finished run, built from the run's record and event log (pure: no I/O).

Why after the run, from the event log, and not from inside the steps: an emission inside a step is a
network call on the step's hot path per event (and a lost event when the endpoint is down). The event
log already holds everything a lineage consumer needs, with the time of each transition, so the
lineage sensor (sensors/lineage_sensor.py) folds each finished run into its events here and sends
them in one batch per tick. The cost to a run is nil; the delay is one sensor interval.

What a run becomes:
- one OpenLineage run for the Dagster run (job = the Dagster job, runId = the Dagster run id), START
  at the run's start and COMPLETE / FAIL / ABORT at its end;
- one child run per materialized (or planned) asset partition, whose job is the asset (so every job
  that builds `gold/kpi_daily` feeds one lineage node), with the parent facet pointing at the Dagster
  run. Its output is the table by its storage identity (Iceberg warehouse or SQL warehouse namespace,
  `schema.table` name) with the partition (subset facet), the partition's rows (output statistics),
  the columns (schema facet) and the Iceberg snapshot written (version facet); its inputs are the
  asset's upstream tables; a dbt model's job carries its SQL. Child run ids are derived from
  (run id, asset, partition), so emitting a run twice sends the same events, not new runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from audit.record import AuditRecord

# Identifies the emitter in every event and facet (`producer`, `_producer`): a URI, as the spec asks.
PRODUCER = "urn:strata:dagster:lineage-sensor"
DEFAULT_JOB_NAMESPACE = "strata"
# Child run ids: uuid5 in this namespace of "run id/asset/partition", stable across re-emissions.
CHILD_RUN_NAMESPACE = uuid.UUID("6c1d5d7e-7a43-4f0b-9f51-2f0c0b6d2e11")
TERMINAL_EVENT = {"SUCCESS": "COMPLETE", "FAILURE": "FAIL", "CANCELED": "ABORT"}
LINEAGE_EVENT_TYPES = frozenset(
    {
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.STEP_START,
    }
)


@dataclass(frozen=True)
class DatasetName:
    namespace: str  # where the table lives: the Iceberg warehouse, or the SQL engine
    name: str  # the table within it: `schema.table` (Trino: `catalog.schema.table`)


@dataclass(frozen=True)
class AssetLineage:
    """What the definitions say about an asset: its table, its upstream assets, its SQL (dbt models)."""

    dataset: DatasetName
    parents: tuple[dg.AssetKey, ...] = ()
    sql: str | None = None
    sql_dialect: str | None = None


@dataclass(frozen=True)
class LineageGraph:
    """The asset -> AssetLineage map of a code location, plus how to name an asset it does not know."""

    assets: Mapping[dg.AssetKey, AssetLineage] = field(default_factory=dict)
    job_namespace: str = DEFAULT_JOB_NAMESPACE
    fallback_namespace: str = "strata"

    def dataset(self, key: dg.AssetKey, table_name: str | None = None) -> DatasetName:
        known = self.assets.get(key)
        if known is not None:
            return DatasetName(known.dataset.namespace, _prefixed(known.dataset, table_name))
        return DatasetName(self.fallback_namespace, table_name or ".".join(key.path))


def _prefixed(dataset: DatasetName, table_name: str | None) -> str:
    """The materialization's `dagster/table_name` wins over the definitions' guess, keeping a Trino
    catalog prefix (`iceberg.gold.kpi_daily`) that the warehouse naming adds."""
    if not table_name or dataset.name.endswith(table_name):
        return dataset.name
    prefix = dataset.name.rsplit(".", 2)[0] + "." if dataset.name.count(".") >= 2 else ""
    return prefix + table_name


def child_run_id(run_id: str, asset: str, partition: str | None) -> str:
    return str(uuid.uuid5(CHILD_RUN_NAMESPACE, f"{run_id}/{asset}/{partition or ''}"))


def _iso(timestamp: float | datetime | None) -> str:
    if timestamp is None:
        timestamp = datetime.now(UTC)
    if isinstance(timestamp, int | float):
        timestamp = datetime.fromtimestamp(timestamp, UTC)
    return timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


@dataclass
class _AssetPartition:
    """One (asset, partition) of the run: when its step started and what its materialization said."""

    key: dg.AssetKey
    partition: str | None
    step_key: str | None = None
    materialized_at: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _asset_partitions(events: Iterable[dg.EventLogEntry]) -> tuple[list[_AssetPartition], dict[str, float]]:
    """Planned and materialized (asset, partition) pairs in event order, and each step's start time."""
    pairs: dict[tuple[dg.AssetKey, str | None], _AssetPartition] = {}
    step_starts: dict[str, float] = {}
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        data = event.event_specific_data
        if event.event_type == dg.DagsterEventType.STEP_START and entry.step_key:
            step_starts.setdefault(entry.step_key, entry.timestamp)
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
            pair = pairs.setdefault((data.asset_key, data.partition), _AssetPartition(data.asset_key, data.partition))
            pair.step_key = pair.step_key or entry.step_key
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = data.materialization
            pair = pairs.setdefault((mat.asset_key, mat.partition), _AssetPartition(mat.asset_key, mat.partition))
            pair.step_key = pair.step_key or entry.step_key
            pair.materialized_at = entry.timestamp
            pair.metadata = mat.metadata
    return list(pairs.values()), step_starts


def _partition_window(partition: str | None, metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """The partition's `[start, end)` from its `strata/data_window`, for the nominal-time facet."""
    window = _value(metadata, "strata/data_window")
    if not partition or not isinstance(window, str) or not window.startswith("["):
        return None
    start, _, end = window.strip("[)").partition(", ")
    try:
        return _iso(datetime.fromisoformat(start).replace(tzinfo=UTC)), _iso(
            datetime.fromisoformat(end).replace(tzinfo=UTC)
        )
    except ValueError:
        return None


def build_lineage_events(
    run_record: dg.RunRecord, events: Sequence[dg.EventLogEntry], record: AuditRecord, graph: LineageGraph
) -> list[Any]:
    """The OpenLineage RunEvents of one finished run, oldest first (see the module docstring)."""
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        error_message_run,
        job_type_job,
        output_statistics_output_dataset,
        parent_run,
        processing_engine_run,
        schema_dataset,
        sql_job,
        tags_run,
    )
    from openlineage.client.generated import base_subset_dataset as subset
    from openlineage.client.generated import nominal_time_run

    run = run_record.dagster_run
    state = RunState(TERMINAL_EVENT[run.status.value])
    namespace = graph.job_namespace
    started = run_record.start_time or run_record.create_timestamp.timestamp()
    ended = run_record.end_time or run_record.update_timestamp.timestamp()

    tags = [
        tags_run.TagsRunFacetFields(key, value, "STRATA")
        for key, value in (
            ("code_version", record.code_version),
            ("git_sha", record.git_sha),
            ("image", record.image),
            ("trigger", record.trigger),
            ("partitions", ",".join(record.partitions)),
        )
        if value
    ]
    common_run_facets = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=dg.__version__, name="Dagster", openlineageAdapterVersion=_client_version(), producer=PRODUCER
        ),
        "tags": tags_run.TagsRunFacet(tags=tags, producer=PRODUCER),
    }
    error = (
        {
            "errorMessage": error_message_run.ErrorMessageRunFacet(
                message=record.error_summary or f"run {run.status.value.lower()}",
                programmingLanguage="PYTHON",
                producer=PRODUCER,
            )
        }
        if state != RunState.COMPLETE
        else {}
    )
    job_type = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="DAGSTER", jobType="JOB", producer=PRODUCER
        )
    }
    run_job = Job(namespace=namespace, name=run.job_name, facets=job_type)
    out: list[Any] = [
        RunEvent(
            eventType=RunState.START,
            eventTime=_iso(started),
            run=Run(runId=run.run_id, facets=common_run_facets),
            job=run_job,
            producer=PRODUCER,
        )
    ]

    pairs, step_starts = _asset_partitions(events)
    for pair in pairs:
        asset = pair.key.to_user_string()
        info = graph.assets.get(pair.key)
        metadata = pair.metadata
        output = graph.dataset(pair.key, _value(metadata, "dagster/table_name"))
        parent = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=run.run_id),
            job=parent_run.Job(namespace=namespace, name=run.job_name),
            producer=PRODUCER,
        )
        run_facets: dict[str, Any] = {**common_run_facets, "parent": parent}
        if window := _partition_window(pair.partition, metadata):
            run_facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
                nominalStartTime=window[0], nominalEndTime=window[1], producer=PRODUCER
            )
        job_facets: dict[str, Any] = {
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="DAGSTER", jobType="ASSET", producer=PRODUCER
            )
        }
        if info is not None and info.sql:
            job_facets["sql"] = sql_job.SQLJobFacet(query=info.sql, dialect=info.sql_dialect, producer=PRODUCER)
        job = Job(namespace=namespace, name=asset, facets=job_facets)
        partition_facets = (
            {
                "subset": subset.OutputSubsetOutputDatasetFacet(
                    outputCondition=subset.PartitionSubsetCondition(
                        partitions=[
                            subset.Partition(dimensions={"partition": pair.partition}, identifier=pair.partition)
                        ]
                    ),
                    producer=PRODUCER,
                )
            }
            if pair.partition
            else {}
        )
        inputs = [
            InputDataset(namespace=d.namespace, name=d.name)
            for d in (graph.dataset(parent_key) for parent_key in (info.parents if info else ()))
        ]
        child_id = child_run_id(run.run_id, asset, pair.partition)
        planned_output = [OutputDataset(namespace=output.namespace, name=output.name, outputFacets=partition_facets)]
        out.append(
            RunEvent(
                eventType=RunState.START,
                eventTime=_iso(step_starts.get(pair.step_key or "", started)),
                run=Run(runId=child_id, facets=run_facets),
                job=job,
                inputs=inputs,
                outputs=planned_output,
                producer=PRODUCER,
            )
        )
        if pair.materialized_at is None:  # planned, never materialized: the run failed or stopped first
            end_state = state if state != RunState.COMPLETE else RunState.ABORT
            end_facets = {**run_facets, **(error if end_state == RunState.FAIL else {})}
            out.append(
                RunEvent(
                    eventType=end_state,
                    eventTime=_iso(ended),
                    run=Run(runId=child_id, facets=end_facets),
                    job=job,
                    inputs=inputs,
                    outputs=planned_output,
                    producer=PRODUCER,
                )
            )
            continue
        # A partition's rows, or none: the table's total (`dagster/row_count`, e.g. of a view over all days)
        # is no statistic of the partition's output.
        rows = _value(metadata, "dagster/partition_row_count" if pair.partition else "dagster/row_count")
        output_facets = dict(partition_facets)
        if rows is not None:
            output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=int(rows), producer=PRODUCER
            )
        dataset_facets: dict[str, Any] = {}
        columns = _value(metadata, "dagster/column_schema")
        if columns is not None:
            dataset_facets["schema"] = schema_dataset.SchemaDatasetFacet(
                fields=[
                    schema_dataset.SchemaDatasetFacetFields(
                        name=c.name, type=c.type, description=c.description, ordinal_position=i
                    )
                    for i, c in enumerate(columns.columns, start=1)
                ],
                producer=PRODUCER,
            )
        snapshot = _value(metadata, "strata/snapshot_id")
        if snapshot not in (None, "", "none"):
            dataset_facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=str(snapshot), producer=PRODUCER
            )
        out.append(
            RunEvent(
                eventType=RunState.COMPLETE,
                eventTime=_iso(pair.materialized_at),
                run=Run(runId=child_id, facets=run_facets),
                job=job,
                inputs=inputs,
                outputs=[
                    OutputDataset(
                        namespace=output.namespace, name=output.name, facets=dataset_facets, outputFacets=output_facets
                    )
                ],
                producer=PRODUCER,
            )
        )

    out.append(
        RunEvent(
            eventType=state,
            eventTime=_iso(ended),
            run=Run(runId=run.run_id, facets={**common_run_facets, **error}),
            job=run_job,
            producer=PRODUCER,
        )
    )
    return out


def _client_version() -> str:
    from openlineage.client.constants import __version__

    return __version__


def lineage_events_of(instance: dg.DagsterInstance, run_id: str) -> Sequence[dg.EventLogEntry]:
    return instance.all_logs(run_id, of_type=set(LINEAGE_EVENT_TYPES))
