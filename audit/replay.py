"""`audit replay RUN_ID`: run a recorded dbt run's transformations again and compare the result.

An auditor asks "would the same inputs give the same numbers today?". The event log says what a dbt run
read and wrote: every materialization carries the Bronze snapshot ids the run pinned
(`strata/input_snapshots`) and a content checksum of what it wrote (`strata/checksum`, of the table or of
each day; resources/table_checksums.py). Replay:

1. plans stages: the run's models, and for every Silver/Gold *table* they read but the run did not build,
   the run that last materialized that table before this one started, with its own pins (recursively).
   Views are re-created in each stage (on DuckDB they resolve at query time, as in the original run);
2. builds each stage, oldest run first, into a scratch DuckDB warehouse (`<root>/replay/<run id>/`), with
   `bronze.<table>` pointing at the pinned Iceberg snapshot (time travel: `iceberg_scan(...,
   snapshot_from_id => id)`), the stage's data window and its Dagster run id (quarantine rows hold it);
   a Bronze table a stage did not pin is read as it was when that run started;
3. computes the same checksums over the scratch tables and compares them, per table and per day, with
   the ones recorded: "identical", or the tables and partitions that differ.

What cannot be replayed (reported, never guessed):
- a pinned snapshot expired by table maintenance (Bronze keeps 7 days, `TABLE_RETENTION`): the run's
  inputs are gone, replay stops and names the table and snapshot;
- a run recorded before dbt materializations carried checksums: nothing to compare with;
- a run recorded by other code (git sha / image): replay runs today's models; it warns, and a difference
  may then come from the code rather than the data;
- incremental state: tables are rebuilt in full (`--full-refresh`) from the pinned snapshots. A merge
  that kept a row's last *valid* version (silver/bookings) after its newer version broke the contract
  rebuilds without it, and that table then differs; a daily model that read days before its window
  reads them empty.
Replay runs on DuckDB (the local engine); on Trino the checksums use Trino's own hash and a scratch schema
would be needed: not implemented.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from audit.metadata import code_identity
from resources.environment import dbt_executable
from resources.iceberg import IcebergCatalog
from resources.settings import DBT_PROJECT_DIR, StrataSettings
from resources.table_checksums import EMPTY, format_checksum, partition_column, row_hash_sum_sql
from resources.warehouse import BRONZE_NAMESPACE, Warehouse, quote_identifier, relation_name

FULL_WINDOW = ("1900-01-01", "2999-12-31")
CHECKSUM = "strata/checksum"
PINS = "strata/input_snapshots"


class ReplayError(RuntimeError):
    """The run cannot be replayed; the message says which run, table or snapshot and why."""


@dataclass
class RecordedRun:
    """What a dbt run's materializations recorded."""

    run_id: str
    start: datetime
    models: dict[str, dg.AssetKey] = field(default_factory=dict)  # dbt unique id -> asset key
    checksums: dict[tuple[str, str | None], str] = field(default_factory=dict)  # (asset, partition) -> value
    pins: dict[str, int] = field(default_factory=dict)  # Bronze table -> snapshot id
    days: set[str] = field(default_factory=set)  # daily partitions materialized
    git_shas: set[str] = field(default_factory=set)

    @property
    def window(self) -> tuple[str, str]:
        if not self.days:
            return FULL_WINDOW
        last = date.fromisoformat(max(self.days)) + timedelta(days=1)
        return min(self.days), f"{last:%Y-%m-%d}"


@dataclass
class Stage:
    run: RecordedRun
    models: set[str]  # unique ids to build (tables and the views they read)


@dataclass
class Difference:
    asset: str
    partition: str | None
    recorded: str
    replayed: str

    def __str__(self) -> str:
        where = f"{self.asset}[{self.partition}]" if self.partition else self.asset
        return f"{where}: recorded {self.recorded}, replayed {self.replayed}"


@dataclass
class ReplayResult:
    run_id: str
    compared: int
    differences: list[Difference]
    warnings: list[str]
    scratch: Path

    @property
    def identical(self) -> bool:
        return not self.differences

    def report(self) -> str:
        lines = [f"warning: {w}" for w in self.warnings]
        if self.identical:
            lines.append(f"identical: {self.compared} table partition(s) of run {self.run_id} reproduce exactly")
        else:
            lines.append(f"differs: {len(self.differences)} of {self.compared} table partition(s) of run {self.run_id}")
            lines += [f"  {d}" for d in self.differences]
        return "\n".join(lines)


# --- reading the record --------------------------------------------------------------------------------


def recorded_run(instance: dg.DagsterInstance, run_id: str) -> RecordedRun:
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        raise ReplayError(f"run {run_id} is not in the Dagster instance")
    run = RecordedRun(
        run_id=run_id, start=datetime.fromtimestamp(record.start_time or record.create_timestamp.timestamp(), UTC)
    )
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.dagster_event.event_specific_data.materialization
        metadata = {k: v.value for k, v in mat.metadata.items()}
        if "unique_id" not in metadata:
            continue  # not a dbt model
        asset = mat.asset_key.to_user_string()
        run.models[str(metadata["unique_id"])] = mat.asset_key
        if CHECKSUM in metadata:
            run.checksums[(asset, mat.partition)] = str(metadata[CHECKSUM])
        run.pins.update({str(t): int(s) for t, s in (metadata.get(PINS) or {}).items()})
        if mat.partition:
            run.days.add(mat.partition)
        if metadata.get("strata/git_sha"):
            run.git_shas.add(str(metadata["strata/git_sha"]))
    return run


def latest_producer(instance: dg.DagsterInstance, key: dg.AssetKey, before: datetime) -> str | None:
    """The run that last materialized `key` before `before`."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, before_timestamp=before.timestamp()), limit=1
    )
    return result.records[0].run_id if result.records else None


def plan_stages(instance: dg.DagsterInstance, manifest: Mapping[str, Any], run_id: str) -> list[Stage]:
    """The stages that rebuild what `run_id` read and wrote, oldest run first (see the module docstring)."""
    nodes = manifest["nodes"]
    stages: dict[str, Stage] = {}
    runs: dict[str, RecordedRun] = {}

    def plan(rid: str, wanted: set[str] | None, depth: int) -> None:
        if depth > 20:
            raise ReplayError(f"run {run_id}: the chain of upstream runs is too deep to replay")
        run = runs.setdefault(rid, recorded_run(instance, rid))
        if not run.models:
            raise ReplayError(f"run {rid} materialized no dbt model: there is nothing to replay")
        models = set(run.models) if wanted is None else set(wanted)
        pending, seen = list(models), set(models)
        while pending:
            for parent in nodes.get(pending.pop(), {}).get("depends_on", {}).get("nodes", []):
                node = nodes.get(parent)
                if node is None or node["resource_type"] != "model" or parent in seen:
                    continue
                seen.add(parent)
                if node["config"].get("materialized") == "view" or parent in run.models:
                    models.add(parent)  # a view read through, or a table this same run built
                    pending.append(parent)
                    continue
                key = dg.AssetKey([node["schema"], node["name"]])
                producer = latest_producer(instance, key, run.start)
                if producer is None:
                    raise ReplayError(f"run {rid} read {key.to_user_string()}, which no run had materialized before it")
                plan(producer, {parent}, depth + 1)
        stage = stages.setdefault(rid, Stage(run, set()))
        stage.models |= models

    plan(run_id, None, 0)
    return sorted(stages.values(), key=lambda s: s.run.start)


# --- rebuilding ---------------------------------------------------------------------------------------


def pinned_bronze(catalog: IcebergCatalog, run: RecordedRun) -> dict[str, tuple[str, int]]:
    """Bronze table -> (metadata file, snapshot id) as the run read it."""
    iceberg = catalog.load()
    if BRONZE_NAMESPACE not in {ns[0] for ns in iceberg.list_namespaces()}:
        return {}
    tables = {}
    for identifier in iceberg.list_tables(BRONZE_NAMESPACE):
        table = iceberg.load_table(identifier)
        name = identifier[-1]
        if name in run.pins:
            snapshot_id = run.pins[name]
            if table.snapshot_by_id(snapshot_id) is None:
                raise ReplayError(
                    f"run {run.run_id} read bronze.{name} at snapshot {snapshot_id}, which has expired "
                    "(table maintenance, TABLE_RETENTION): its inputs can no longer be replayed"
                )
        else:
            snapshot = table.snapshot_as_of_timestamp(int(run.start.timestamp() * 1000))
            if snapshot is None:
                continue
            snapshot_id = snapshot.snapshot_id
        tables[name] = (table.metadata_location, snapshot_id)
    return tables


def point_bronze_views(warehouse: Warehouse, tables: Mapping[str, tuple[str, int]]) -> None:
    with warehouse.connect() as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {BRONZE_NAMESPACE}")
        for name, (location, snapshot_id) in tables.items():
            path = location.replace("'", "''")
            con.execute(
                f"CREATE OR REPLACE VIEW {BRONZE_NAMESPACE}.{quote_identifier(name)} AS "
                f"SELECT * FROM iceberg_scan('{path}', snapshot_from_id => {int(snapshot_id)})"
            )


def run_stage(stage: Stage, manifest: Mapping[str, Any], warehouse: Warehouse, work: Path, number: int) -> None:
    names = sorted(manifest["nodes"][uid]["name"] for uid in stage.models if uid in manifest["nodes"])
    start, end = stage.run.window
    environment = {
        **os.environ,
        "STRATA_DBT_TARGET": "local",
        "STRATA_DUCKDB_PATH": warehouse.duckdb_path,
        "STRATA_DUCKDB_EXTENSION_DIR": warehouse.extension_dir,
        "STRATA_DAGSTER_RUN_ID": stage.run.run_id,
        "STRATA_WINDOW_START": start,
        "STRATA_WINDOW_END": end,
        "STRATA_BRONZE_SNAPSHOTS": json.dumps(stage.run.pins),
        **warehouse.duckdb_environment(),
    }
    command = [
        dbt_executable(), "run", "--full-refresh", "--select", *names,
        "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR), "--target", "local",
        "--target-path", str(work / f"target-{number}"), "--log-path", str(work / "logs"),
    ]  # fmt: skip
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ReplayError(f"dbt failed replaying run {stage.run.run_id} (models {', '.join(names)}):\n{tail}")


# --- comparing ----------------------------------------------------------------------------------------


def replayed_checksums(
    warehouse: Warehouse, manifest: Mapping[str, Any], run: RecordedRun
) -> dict[tuple[str, str | None], str]:
    """The checksums of the scratch tables, computed as the recorded ones were (per table or per day)."""
    wanted = {asset for asset, _ in run.checksums}
    out: dict[tuple[str, str | None], str] = {}
    for uid, key in run.models.items():
        asset = key.to_user_string()
        node = manifest["nodes"].get(uid)
        if asset not in wanted or node is None:
            continue
        schema, table = str(node["schema"]), str(node.get("alias") or node["name"])
        columns = warehouse.query_arrow(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND "
            "table_name = ? ORDER BY ordinal_position",
            [schema, table],
        ).to_pylist()
        if not columns:
            continue
        types = {c["column_name"]: str(c["data_type"]) for c in columns}
        row_hash = row_hash_sum_sql(warehouse.engine, list(types))
        relation = relation_name(schema, table)
        day_column = partition_column(node)
        if run.days and day_column in types:
            column = quote_identifier(day_column)
            start, end = run.window
            rows = warehouse.query_arrow(
                f"SELECT CAST({column} AS DATE) AS d, count(*) AS n, {row_hash} AS c FROM {relation} "
                f"WHERE CAST({column} AS DATE) >= CAST(? AS DATE) AND CAST({column} AS DATE) < CAST(? AS DATE) "
                f"GROUP BY CAST({column} AS DATE)",
                [start, end],
            ).to_pylist()
            by_day = {f"{r['d']:%Y-%m-%d}": format_checksum(int(r["n"]), r["c"]) for r in rows}
            out.update({(asset, day): by_day.get(day, EMPTY) for day in run.days})
        else:
            (row,) = warehouse.query_arrow(f"SELECT count(*) AS n, {row_hash} AS c FROM {relation}").to_pylist()
            out[(asset, None)] = format_checksum(int(row["n"]), row["c"])
    return out


def compare(
    recorded: Mapping[tuple[str, str | None], str], replayed: Mapping[tuple[str, str | None], str]
) -> list[Difference]:
    return [
        Difference(asset, partition, value, replayed.get((asset, partition), "missing"))
        for (asset, partition), value in sorted(recorded.items(), key=lambda item: (item[0][0], item[0][1] or ""))
        if replayed.get((asset, partition)) != value
    ]


def replay_run(
    instance: dg.DagsterInstance,
    run_id: str,
    settings: StrataSettings,
    *,
    manifest_path: Path | None = None,
    keep: bool = False,
) -> ReplayResult:
    """Replay `run_id` into a scratch warehouse under `<root>/replay/` and compare its checksums."""
    if settings.warehouse_engine != "duckdb":
        raise ReplayError("replay runs on the DuckDB warehouse only (see audit/replay.py)")
    manifest = json.loads((manifest_path or DBT_PROJECT_DIR / "target" / "manifest.json").read_text())
    stages = plan_stages(instance, manifest, run_id)
    target = stages[-1].run
    if not target.checksums:
        raise ReplayError(f"run {run_id} recorded no checksums of its dbt models (recorded by an older version)")
    warnings = []
    current_sha = code_identity()[0]
    if target.git_shas and target.git_shas != {current_sha}:
        warnings.append(
            f"run {run_id} ran code {', '.join(sorted(target.git_shas))}, this is {current_sha}: a difference "
            "may come from the code, not the data"
        )
    work = settings.root / "replay" / run_id
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    warehouse = Warehouse(
        duckdb_path=str(work / "warehouse.duckdb"),
        extension_dir=str(settings.duckdb_extension_dir),
        duckdb_memory_limit=settings.duckdb_memory_limit,
        duckdb_threads=settings.duckdb_threads,
        duckdb_temp_directory=str(work / "tmp"),
    )
    catalog = IcebergCatalog.from_settings(settings)
    for number, stage in enumerate(stages):
        point_bronze_views(warehouse, pinned_bronze(catalog, stage.run))
        run_stage(stage, manifest, warehouse, work, number)
    differences = compare(target.checksums, replayed_checksums(warehouse, manifest, target))
    result = ReplayResult(run_id, len(target.checksums), differences, warnings, work)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def stage_summary(stages: Iterable[Stage]) -> str:
    return "; ".join(f"{s.run.run_id}: {len(s.models)} model(s)" for s in stages)
