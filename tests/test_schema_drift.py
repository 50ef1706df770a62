"""Schema drift of an OLTP source, checked against the contract before any row is read (issue 11, item 10).

A missing or retyped column refuses the load once (no retry) with the table, column, expected and found
types; a new column is reported and, by the contract's `on_new_columns`, added to Bronze by Iceberg
schema evolution (every row read once so older rows get its values) or left out. SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from assets.bronze.contracts import _parse_table
from assets.bronze.oltp import build_oltp_asset
from assets.bronze.schema_drift import SchemaDriftError, new_source_columns
from jobs.policies import apply_global_policies
from resources.iceberg import IcebergCatalog
from resources.ingestion_guard import IngestionGuard
from resources.source_db import SourceDatabase, sqlite_affinity_type
from tests.test_bronze_oltp import CREATE, STATIONS, catalog_at, execute, row

ENGINES = ["sqlite", "postgresql"]


def source(engine: str, tmp_path: Path, request: pytest.FixtureRequest, create: str = CREATE) -> str:
    if engine == "postgresql":
        url = request.getfixturevalue("postgres_url")
        execute(url, "DROP TABLE IF EXISTS stations", create.format(ts="TIMESTAMP"))
        return url
    url = f"sqlite:///{tmp_path / 'oltp.sqlite'}"
    execute(url, create.format(ts="TEXT"))
    return url


def run(url: str, root: Path, contract=STATIONS, instance=None) -> dg.ExecuteInProcessResult:
    """Materialize bronze/stations with the platform's retry policy applied, as in production."""
    return dg.materialize(
        apply_global_policies([build_oltp_asset(contract)]),
        instance=instance,
        resources={
            "source_db": SourceDatabase(url=url),
            "guard": IngestionGuard(data_path=str(root)),
            "iceberg": IcebergCatalog(uri=f"sqlite:///{root / 'cat.db'}", warehouse=f"file://{root / 'wh'}"),
        },
        raise_on_error=False,
    )


def failure_of(result: dg.ExecuteInProcessResult) -> tuple[str, int]:
    """The step failure's description and how many times the step started."""
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    starts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    return failure.step_failure_data.user_failure_data.description, len(starts)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_missing_column_refuses_the_load_once_naming_table_column_and_type(engine, tmp_path, request):
    url = source(engine, tmp_path, request, CREATE.replace("capacity BIGINT NOT NULL, ", ""))
    result = run(url, tmp_path)
    assert not result.success
    assert failure_of(result) == (
        "source table stations drifted from its contract: column 'capacity' is missing (contract says int64). "
        "Nothing extracted; fix the source or update assets/bronze/source_contracts.yaml",
        1,  # not retried
    )
    assert catalog_at(tmp_path).table_or_none("bronze.stations") is None  # nothing created either


@pytest.mark.parametrize("engine", ENGINES)
def test_a_retyped_column_refuses_the_load_naming_expected_and_found_types(engine, tmp_path, request):
    url = source(engine, tmp_path, request, CREATE.replace("capacity BIGINT", "capacity TEXT"))
    execute(url, row(1, "Bellecour", "2026-10-01 08:00:00.000000"))
    description, starts = failure_of(run(url, tmp_path))
    assert starts == 1
    assert description.startswith(
        "source table stations drifted from its contract: column 'capacity' has type string, contract says int64."
    )


def test_a_missing_table_refuses_the_load(tmp_path):
    url = f"sqlite:///{tmp_path / 'oltp.sqlite'}"
    execute(url, "CREATE TABLE unrelated (x INTEGER)")
    assert failure_of(run(url, tmp_path)) == (
        "source table stations does not exist (contract 'stations' expects it); nothing extracted",
        1,
    )


def bronze(root: Path) -> pa.Table:
    return catalog_at(root).load().load_table("bronze.stations").scan().to_arrow().sort_by("station_id")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_new_column_is_reported_and_evolved_into_bronze_with_every_row(engine, tmp_path, request):
    url = source(engine, tmp_path, request)
    execute(url, row(1, "Bellecour", "2026-10-01 08:00:00.000000"), row(2, "Vaise", "2026-10-02 08:00:00.000000"))
    assert run(url, tmp_path).success
    # The producer adds a column and fills it for old rows without touching updated_at.
    execute(url, "ALTER TABLE stations ADD COLUMN operator TEXT", "UPDATE stations SET operator = 'TCL'")

    instance = dg.DagsterInstance.ephemeral()
    result = run(url, tmp_path, instance=instance)
    meta = {k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()}
    assert meta["strata/new_source_columns"] == "operator (string)"
    assert meta["strata/evolved_columns"] == "operator"
    assert (meta["strata/rows_in"], meta["strata/rows_updated"]) == (2, 2)  # every row read once
    assert "operator" in [c.name for c in meta["dagster/column_schema"].columns]
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert warnings == [
        "bronze.stations: source column(s) not in the contract: operator (string); added to bronze.stations by "
        "schema evolution, every row read once: operator"
    ]
    table = bronze(tmp_path)
    assert table.schema.field("operator").type == pa.string()
    assert table.column("operator").to_pylist() == ["TCL", "TCL"]

    later = run(url, tmp_path)  # back to incremental reads; the column is still reported
    meta = {k: v.value for k, v in later.get_asset_materialization_events()[0].materialization.metadata.items()}
    assert (meta["strata/rows_in"], meta["strata/new_source_columns"]) == (1, "operator (string)")
    assert "strata/evolved_columns" not in meta

    # Switching the table to `ignore` keeps extracting what Bronze already holds (upserts carry every column).
    execute(
        url, "UPDATE stations SET operator = 'Keolis', updated_at = '2026-10-03 08:00:00.000000' WHERE station_id = 1"
    )
    assert run(url, tmp_path, replace(STATIONS, on_new_columns="ignore")).success
    assert bronze(tmp_path).column("operator").to_pylist() == ["Keolis", "TCL"]

    # The source drops the column again: reported; Bronze keeps it with the last values the source had.
    execute(url, "ALTER TABLE stations DROP COLUMN operator")
    execute(url, "UPDATE stations SET updated_at = '2026-10-04 08:00:00.000000' WHERE station_id = 2")
    dropped = run(url, tmp_path)
    meta = {k: v.value for k, v in dropped.get_asset_materialization_events()[0].materialization.metadata.items()}
    assert (meta["strata/vanished_source_columns"], meta["strata/rows_updated"]) == ("operator", 1)
    assert bronze(tmp_path).column("operator").to_pylist() == ["Keolis", "TCL"]
    assert bronze(tmp_path).column("updated_at").to_pylist()[1] == datetime(2026, 10, 4, 8)


def test_a_new_column_is_left_out_when_the_contract_says_ignore(tmp_path, request):
    url = source("sqlite", tmp_path, request, CREATE.replace("updated_at {ts} NOT NULL", "updated_at {ts} NOT NULL, "
                 "operator TEXT"))  # fmt: skip
    execute(url, row(1, "Bellecour", "2026-10-01 08:00:00.000000").replace("')", "', 'TCL')"))
    result = run(url, tmp_path, replace(STATIONS, on_new_columns="ignore"))
    meta = {k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()}
    assert meta["strata/new_source_columns"] == "operator (string)"
    assert "strata/evolved_columns" not in meta
    assert bronze(tmp_path).column_names == STATIONS.column_names


def test_the_declared_schema_is_judged_like_the_values():
    found = {c.name: c.arrow_type for c in STATIONS.columns}
    # SQLite's timestamps are text, PostgreSQL's INTEGER is int32: both read losslessly.
    assert new_source_columns(STATIONS, {**found, "updated_at": pa.string(), "capacity": pa.int32()}) == []
    assert new_source_columns(STATIONS, {**found, "lat": None}) == []  # SQLite NUMERIC affinity: values decide
    [extra] = new_source_columns(STATIONS, {**found, "note": pa.large_string(), "tags": None})[:1]
    assert (extra.name, extra.type_name) == ("note", "string")
    with pytest.raises(SchemaDriftError, match=r"column 'lat' has type timestamp\[us, tz=UTC\], contract says float64; "
                       r"column 'lon' is missing"):  # fmt: skip
        new_source_columns(
            STATIONS, {**{k: v for k, v in found.items() if k != "lon"}, "lat": pa.timestamp("us", "UTC")}
        )
    assert [sqlite_affinity_type(t) for t in ("BIGINT", "VARCHAR(20)", "DOUBLE PRECISION", "DATETIME", "")] == [
        pa.int64(), pa.string(), pa.float64(), None, None
    ]  # fmt: skip


def test_on_new_columns_must_be_evolve_or_ignore():
    entry = {"primary_key": "id", "watermark": "ts", "columns": {"id": "int64", "ts": "timestamp"}}
    assert _parse_table("t", entry, "oltp").on_new_columns == "evolve"
    with pytest.raises(ValueError, match=r"oltp.t.on_new_columns is 'drop'; use one of \['evolve', 'ignore'\]"):
        _parse_table("t", {**entry, "on_new_columns": "drop"}, "oltp")
