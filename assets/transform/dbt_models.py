"""dbt models (Silver and Gold) as Dagster assets, wired to the Bronze tables they read.

The translator keys every model as `[layer, model]` (staging/intermediate -> silver, marts -> gold)
and every dbt source as its Bronze asset, so Python and dbt assets form one graph. Models tagged
`daily` run as one daily-partitioned multi-asset with a single-run backfill policy: a 30-day backfill
is one `dbt build` with a 30-day window, not 30 runs.
"""

import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from assets.transform.dbt_metadata import (
    content_data_version,
    day_metadata,
    model_table,
    read_table_facts,
    table_metadata,
)
from audit.metadata import code_identity
from resources.iceberg import IcebergCatalog
from resources.settings import DEFAULT_DBT_DOCS_URL
from resources.warehouse import WAREHOUSE_POOL, Warehouse, WarehouseQueryError

DAILY_TAG = "daily"
RUN_ID_ENV = "STRATA_DAGSTER_RUN_ID"
TRINO_PASSWORD_ENV = "STRATA_TRINO_PASSWORD"  # what dbt/profiles.yml reads
# A person rebuilding an incomplete day on purpose tags the run `strata/incomplete_ok=true`; the dbt test
# expected_daily_volume reads STRATA_INCOMPLETE_OK and lets that run publish the day.
INCOMPLETE_OK_TAG = "strata/incomplete_ok"
INCOMPLETE_OK_ENV = "STRATA_INCOMPLETE_OK"
# The data window of a daily run, read by dbt/macros/data_window.sql (and the daily tests' `where`).
WINDOW_START_ENV = "STRATA_WINDOW_START"
WINDOW_END_ENV = "STRATA_WINDOW_END"
# The Bronze snapshots a run pins, as JSON table -> snapshot id: on Trino dbt reads each Bronze table
# `for version as of` its snapshot (dbt/macros/bronze_snapshots.sql).
BRONZE_SNAPSHOTS_ENV = "STRATA_BRONZE_SNAPSHOTS"
# What the window covers without a partition: all data (the macros' defaults, set explicitly so a value
# left in the process environment never narrows an unpartitioned build).
FULL_WINDOW = ("1900-01-01", "2999-12-31")
# Under the dbt project's target directory: one target path per dbt target and multi-asset, kept across runs.
STABLE_TARGETS_DIR = "strata"


DBT_DOCS_METADATA = "strata/dbt_docs"


def dbt_docs_page(docs_url: str, resource_type: str, unique_id: str) -> str:
    """A node's page in the dbt docs site (`make docs`): `<site>/#!/model/model.strata.kpi_daily`."""
    return f"{docs_url.rstrip('/')}/#!/{resource_type}/{unique_id}"


class StrataDbtTranslator(DagsterDbtTranslator):
    """Maps dbt nodes onto the platform's `[layer, table]` asset keys and layer groups, and links each model
    to its page in the dbt docs site served at `docs_url`."""

    def __init__(self, docs_url: str = DEFAULT_DBT_DOCS_URL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.docs_url = docs_url

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec.replace_attributes(key=dg.AssetKey(["bronze", props["name"]]))
        layer = layer_of(props)
        page = dg.MetadataValue.url(dbt_docs_page(self.docs_url, props["resource_type"], unique_id))
        return spec.replace_attributes(
            key=dg.AssetKey([layer, props["name"]]),
            group_name=layer,
            metadata={**spec.metadata, DBT_DOCS_METADATA: page},
        )

    def get_asset_check_spec(
        self, asset_spec: dg.AssetSpec, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetCheckSpec | None:
        """dbt tests of severity `error` become BLOCKING checks. dagster-dbt leaves them non-blocking,
        so a failed dbt test did not gate Python assets downstream of the model (within a run only the
        failed dbt step did, and across runs nothing did)."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None:
            return None
        severity = str(manifest["nodes"][unique_id].get("config", {}).get("severity", "error")).lower()
        return spec._replace(blocking=severity == "error")


def layer_of(props: Mapping[str, Any]) -> str:
    """Marts are Gold (restricted marts, personal data in clear: `gold_restricted`, their schema); staging
    and intermediate models are Silver."""
    fqn = props.get("fqn", [])
    if "marts" in fqn:
        return "gold_restricted" if "restricted" in fqn else "gold"
    return "silver"


def window_environment(window: dg.TimeWindow | None) -> dict[str, str]:
    """The partition window for dbt as STRATA_WINDOW_START / STRATA_WINDOW_END (end exclusive).

    Not `--vars`: any change of `--vars` makes dbt discard its partial parse and re-parse the whole
    project, while a changed environment variable re-parses only the files that read it."""
    start, end = (f"{window.start:%Y-%m-%d}", f"{window.end:%Y-%m-%d}") if window is not None else FULL_WINDOW
    return {WINDOW_START_ENV: start, WINDOW_END_ENV: end}


@contextmanager
def stable_target_path(
    dbt: DbtCliResource, multi_asset: str, log: logging.Logger | logging.LoggerAdapter
) -> Iterator[Path | None]:
    """A target path that this multi-asset reuses run after run in this environment, so dbt finds its
    previous `partial_parse.msgpack` there and parses only what changed (dagster-dbt's default is a
    fresh directory per call: a full parse every time). dagster-dbt seeds an empty one with the
    project's prepared partial parse (dbt/target, from `make manifest`).

    Two dbt processes must not share one target path. Each multi-asset has its own; two runs of the
    same multi-asset at once (prod may run several, local DuckDB runs one dbt step at a time through
    the `warehouse` pool) are kept apart by an exclusive lock: the run that does not get it yields
    None, i.e. dagster-dbt's one-off path (correct, only slower)."""
    name = f"{dbt.target or 'default'}-{multi_asset}"
    path = Path(dbt.project_dir) / "target" / STABLE_TARGETS_DIR / name
    path.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{name}.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"dbt target path {path} is in use by another run; this run parses in a fresh one")
            yield None
            return
        # Nothing may read the previous run's results as this run's, should dbt stop before writing its own.
        path.joinpath("run_results.json").unlink(missing_ok=True)
        yield path


def run_dbt(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: Warehouse,
    iceberg: IcebergCatalog,
    window: dg.TimeWindow | None,
    exclude: list[str] | None = None,
) -> Iterator[Any]:
    """Pin Bronze snapshots for this run, run `dbt build` (without the `exclude`d nodes), then yield its
    events with what each model's table holds (assets/transform/dbt_metadata.py): per day for a daily
    range, per table otherwise, and its content checksum as the data version.

    The events are held until dbt exits: DuckDB has a single writer, so the warehouse can be read only
    then, and a day's metadata must be registered before its model's Output is yielded (Dagster builds
    each partition's materialization from the Output). dbt's log lines still stream as it runs. When
    dbt fails, the models it did build are still reported before the error is raised.
    """
    snapshots = warehouse.publish_bronze_views(iceberg)
    context.log.info(f"dbt reads Bronze snapshots {snapshots}")
    git_sha, image = code_identity()
    events: list[Any] = []
    failure: Exception | None = None
    environment = {
        **dbt_environment(context.run.run_id, warehouse),
        **window_environment(window),
        BRONZE_SNAPSHOTS_ENV: json.dumps(snapshots),
    }
    with (
        subprocess_environment(environment),
        stable_target_path(dbt, context.op_execution_context.op.name, context.log) as target_path,
    ):
        args = ["build", *(["--exclude", " ".join(exclude)] if exclude else [])]
        invocation = dbt.cli(args, context=context, target_path=target_path)
        try:
            events.extend(invocation.stream())
        except Exception as error:  # re-raised below, once the built models are reported
            failure = error
    read = bronze_tables_read(invocation.manifest, executed_nodes(invocation, events), warehouse.engine)
    run_level = {
        "strata/input_snapshots": dg.MetadataValue.json({t: s for t, s in snapshots.items() if t in read}),
        "strata/git_sha": git_sha,
        "strata/image": image,
    }
    tables = {
        event.output_name: model_table(
            invocation.manifest["nodes"][str(event.metadata["unique_id"].value)], partitioned=window is not None
        )
        for event in events
        if isinstance(event, dg.Output)
    }
    try:
        facts = read_table_facts(warehouse, list(tables.values()), window)
    except WarehouseQueryError as error:
        # The tables are built: their materializations are still recorded, without the counts.
        context.log.error(f"row counts and columns of the dbt models not read: {error}")
        facts = {}
    for event in events:
        if isinstance(event, dg.Output):
            table = tables[event.output_name]
            table_facts = facts.get(table.name)
            if window is not None:
                asset_key = context.asset_key_for_output(event.output_name)
                for partition_key in context.partition_keys:
                    day = context.assets_def.partitions_def.time_window_for_partition_key(partition_key)
                    context.add_asset_metadata(
                        day_metadata(table, table_facts, day), asset_key=asset_key, partition_key=partition_key
                    )
            event = with_data_version(
                event.with_metadata({**event.metadata, **run_level, **table_metadata(table, table_facts)}),
                content_data_version(table, table_facts, window),
            )
        yield event
    if failure is not None:
        raise failure


def with_data_version(output: dg.Output, version: dg.DataVersion | None) -> dg.Output:
    """`output` carrying `version` (dagster-dbt's Outputs carry none); unchanged when there is none."""
    if version is None:
        return output
    return dg.Output(output.value, output.output_name, metadata=output.metadata, data_version=version, tags=output.tags)


def executed_nodes(invocation: Any, events: list[Any]) -> set[str]:
    """The dbt nodes (models and tests) this invocation ran, passed or failed, from its run_results.json;
    without that file, the models it reported."""
    try:
        return {str(result["unique_id"]) for result in invocation.get_artifact("run_results.json")["results"]}
    except (OSError, KeyError, ValueError):
        return {str(e.metadata["unique_id"].value) for e in events if isinstance(e, dg.Output)}


def bronze_tables_read(manifest: Mapping[str, Any], executed: set[str], engine: str) -> set[str]:
    """The Bronze tables that the SQL of the `executed` nodes read at the run's pinned snapshots, so the
    run records exactly those (the audit must never name a snapshot dbt did not read).

    A node reads its own sources, and through every view upstream of it the views' sources. On DuckDB a
    view resolves when it is queried, through the `bronze` views re-pointed for this run. On Trino a
    view holds the pins of the run that built it: its sources count only when this run built the view
    (then it is executed itself); a view built by an earlier run was recorded by that run.
    """
    nodes, sources = manifest["nodes"], manifest["sources"]
    read: set[str] = set()
    pending, seen = list(executed), set(executed)
    while pending:
        node = nodes.get(pending.pop())
        for parent in (node or {}).get("depends_on", {}).get("nodes", []):
            if parent in sources and sources[parent]["source_name"] == "bronze":
                read.add(sources[parent]["name"])
            elif (
                engine == "duckdb"
                and parent not in seen
                and nodes.get(parent, {}).get("config", {}).get("materialized") == "view"
            ):
                seen.add(parent)
                pending.append(parent)
    return read


# dbt (and dagster-dbt when it subsets a multi-asset) read the test selection mode from here.
INDIRECT_SELECTION_ENV = "DBT_INDIRECT_SELECTION"
EAGER_TESTS = {INDIRECT_SELECTION_ENV: "eager"}


def excluded_tests(context: dg.AssetExecutionContext) -> list[str]:
    """What `dbt build` leaves out of a run of some of the unpartitioned models (automation requests a
    subset): the tests of the models this run does not build, and the daily models' tests.

    dbt's default test selection (`eager`) runs every test that touches a model it builds. dagster-dbt
    selects a subset by model name, without the multi-asset's `--exclude tag:daily`, so `eager` alone
    also ran the daily models' relationship tests against daily tables that may not exist yet, and the
    tests of other models (a dimension's test of a staging view it reads) against tables not built yet.
    `cautious` (only tests all of whose models the run builds) avoided both, but it also dropped the
    run's own tests that read another model, e.g. `stg_bookings`' relationship test to `stg_stations`.
    That blocking check then had no result for the model's newest materialization, and automation held
    everything downstream of it back for good: after its first hour a lights-out platform never updated
    `silver/bookings` again (the simulated week). So: `eager`, minus these."""
    assets_def = context.assets_def  # in a subset run, the subset; its node still holds every check
    if assets_def.partitions_def is not None or assets_def.keys_by_output_name == assets_def.node_keys_by_output_name:
        return []  # a whole run keeps its own `--exclude tag:daily`; the daily models' tests run with them
    from dagster_dbt.asset_utils import DAGSTER_DBT_UNIQUE_ID_METADATA_KEY, get_manifest_and_translator_from_dbt_assets

    manifest, _translator, _project = get_manifest_and_translator_from_dbt_assets([assets_def])
    selected = set(context.selected_asset_keys)
    names = {f"tag:{DAILY_TAG}"}
    for spec in assets_def.node_check_specs_by_output_name.values():
        node = manifest["nodes"].get((spec.metadata or {}).get(DAGSTER_DBT_UNIQUE_ID_METADATA_KEY, ""))
        if spec.asset_key not in selected and node is not None:
            names.add(".".join(node["fqn"]))
    return sorted(names)


def dbt_environment(run_id: str, warehouse: Warehouse) -> dict[str, str]:
    """Values the dbt subprocess needs that only the run knows: the Dagster run id (quarantine rows
    record it); on DuckDB the warehouse's memory limit, threads and spill directory; on Trino with
    password auth, the password from the secrets backend, which dbt/profiles.yml reads as
    STRATA_TRINO_PASSWORD. A `--vars` value that changes every run would
    force dbt to re-parse the whole project each time."""
    values = {RUN_ID_ENV: run_id}
    if warehouse.engine == "duckdb":
        values.update(warehouse.duckdb_environment())
    if warehouse.engine == "trino" and (password := warehouse.trino_password()) is not None:
        values[TRINO_PASSWORD_ENV] = password
    return values


@contextmanager
def subprocess_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set `values` in this process's environment for the duration, then restore what was there.
    dagster-dbt passes the process environment to dbt and offers no other channel."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def incomplete_ok_environment(context: dg.AssetExecutionContext) -> dict[str, str]:
    """STRATA_INCOMPLETE_OK for the dbt subprocess: "true" only for a run tagged `strata/incomplete_ok=true`,
    set explicitly to "false" otherwise so a value left in the process environment never leaks in."""
    if context.run.tags.get(INCOMPLETE_OK_TAG, "").lower() == "true":
        context.log.warning(
            f"{INCOMPLETE_OK_TAG}=true: the expected-volume test is off for this run; incomplete days are published"
        )
        return {INCOMPLETE_OK_ENV: "true"}
    return {INCOMPLETE_OK_ENV: "false"}


def build_dbt_assets(
    project: DbtProject, daily: dg.DailyPartitionsDefinition, docs_url: str = DEFAULT_DBT_DOCS_URL
) -> list[dg.AssetsDefinition]:
    """The unpartitioned models, and the `daily` ones as one daily-partitioned multi-asset."""
    translator = StrataDbtTranslator(docs_url, settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))

    def dbt_multi_asset(name: str, **selection: Any) -> dg.AssetsDefinition:
        @dbt_assets(
            manifest=project.manifest_path,
            project=project,
            dagster_dbt_translator=translator,
            name=name,
            pool=WAREHOUSE_POOL,
            **selection,
        )
        def models(
            context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: Warehouse, iceberg: IcebergCatalog
        ):
            partitioned = context.has_partition_key or context.has_partition_key_range
            window = context.partition_time_window if partitioned else None
            with subprocess_environment({**incomplete_ok_environment(context), **EAGER_TESTS}):
                yield from run_dbt(context, dbt, warehouse, iceberg, window=window, exclude=excluded_tests(context))

        return models

    return [
        dbt_multi_asset("dbt_models", exclude=f"tag:{DAILY_TAG}"),
        dbt_multi_asset(
            "dbt_daily_models",
            select=f"tag:{DAILY_TAG}",
            partitions_def=daily,
            backfill_policy=dg.BackfillPolicy.single_run(),
        ),
    ]
