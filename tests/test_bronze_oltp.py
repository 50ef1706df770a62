"""Incremental OLTP extraction: watermark, upsert by key, against SQLite and a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from assets.bronze.contracts import oltp_contracts
from assets.bronze.oltp import build_oltp_asset, extraction_query, latest_version_per_key, stored_watermark
from assets.bronze.quarantine import quarantined_rows
from audit.metadata import NOT_RUN_TAG
from resources.iceberg import IcebergCatalog
from resources.ingestion_guard import IngestionGuard
from resources.source_db import SourceDatabase, connect_adbc

STATIONS = oltp_contracts()["stations"]
CREATE = (
    "CREATE TABLE stations (station_id BIGINT PRIMARY KEY, station_name TEXT NOT NULL, city TEXT NOT NULL, "
    "lat DOUBLE PRECISION NOT NULL, lon DOUBLE PRECISION NOT NULL, capacity BIGINT NOT NULL, "
    "created_at {ts} NOT NULL, updated_at {ts} NOT NULL)"
)


def execute(url: str, *statements: str) -> None:
    with connect_adbc(url) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        conn.commit()


def row(station_id: int, name: str, updated: str) -> str:
    return (
        f"INSERT INTO stations VALUES ({station_id}, '{name}', 'Lyon', 45.7, 4.8, 20, "
        f"'2026-09-01 00:00:00.000000', '{updated}')"
    )


def source_urls(tmp_path: Path, postgres_url: str | None) -> str:
    if postgres_url:
        execute(postgres_url, "DROP TABLE IF EXISTS stations", CREATE.format(ts="TIMESTAMP"))
        return postgres_url
    url = f"sqlite:///{tmp_path / 'oltp.sqlite'}"
    execute(url, CREATE.format(ts="TEXT"))
    return url


def catalog_at(root: Path) -> IcebergCatalog:
    return IcebergCatalog(uri=f"sqlite:///{root / 'cat.db'}", warehouse=f"file://{root / 'wh'}")


def materialize(
    url: str, root: Path, instance: dg.DagsterInstance | None = None, *, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    """Materialize bronze/stations from `url` into an Iceberg catalog under `root`."""
    return dg.materialize(
        [build_oltp_asset(STATIONS)],
        instance=instance,
        resources={
            "source_db": SourceDatabase(url=url),
            "guard": IngestionGuard(data_path=str(root)),
            "iceberg": catalog_at(root),
        },
        raise_on_error=raise_on_error,
    )


def bronze_rows(tmp_path: Path) -> dict[int, tuple[str, str]]:
    table = catalog_at(tmp_path).load().load_table("bronze.stations").scan().to_arrow()
    return {
        r["station_id"]: (r["station_name"], str(r["updated_at"]))
        for r in table.select(["station_id", "station_name", "updated_at"]).to_pylist()
    }


def metadata_of(result: dg.ExecuteInProcessResult) -> dict:
    return result.get_asset_materialization_events()[0].materialization.metadata


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_incremental_extraction_replaces_updated_rows_and_adds_new_ones(engine, tmp_path, request):
    url = source_urls(tmp_path, request.getfixturevalue("postgres_url") if engine == "postgresql" else None)
    execute(
        url,
        row(1, "Bellecour", "2026-10-01 08:00:00.000000"),
        row(2, "Part-Dieu", "2026-10-01 09:00:00.000000"),
        row(3, "Perrache", "2026-10-01 09:30:00.000000"),
    )
    first = metadata_of(materialize(url, tmp_path))
    assert first["strata/rows_in"].value == 3
    assert first["strata/rows_inserted"].value == 3
    assert first["dagster/row_count"].value == 3

    execute(
        url,
        "UPDATE stations SET station_name = 'Bellecour Nord', updated_at = '2026-10-02 07:00:00.000000' "
        "WHERE station_id = 1",
        row(4, "Vaise", "2026-10-02 08:00:00.000000"),
    )
    second = metadata_of(materialize(url, tmp_path))
    # Rows at the old watermark (station 3) are read again but change nothing.
    assert second["strata/rows_in"].value == 3
    assert second["strata/rows_updated"].value == 1
    assert second["strata/rows_inserted"].value == 1
    assert second["strata/watermark"].value == "2026-10-02 08:00:00"
    assert bronze_rows(tmp_path) == {
        1: ("Bellecour Nord", "2026-10-02 07:00:00"),
        2: ("Part-Dieu", "2026-10-01 09:00:00"),
        3: ("Perrache", "2026-10-01 09:30:00"),
        4: ("Vaise", "2026-10-02 08:00:00"),
    }

    third = metadata_of(materialize(url, tmp_path))
    assert third["strata/rows_out"].value == 0
    assert third["dagster/row_count"].value == 4


def test_watermark_is_kept_in_the_iceberg_snapshot(tmp_path):
    url = source_urls(tmp_path, None)
    execute(url, row(7, "Croix-Rousse", "2026-10-03 10:00:00.000000"))
    materialize(url, tmp_path)
    catalog = IcebergCatalog(uri=f"sqlite:///{tmp_path / 'cat.db'}", warehouse=f"file://{tmp_path / 'wh'}")
    assert stored_watermark(catalog.load().load_table("bronze.stations")) == "2026-10-03 10:00:00"


def test_extraction_query_uses_the_watermark_inclusively_and_reads_null_watermarks():
    assert extraction_query(STATIONS, None).endswith("FROM stations")
    query = extraction_query(STATIONS, "2026-10-02 08:00:00")
    assert query.endswith("WHERE updated_at >= '2026-10-02 08:00:00.000000' OR updated_at IS NULL")
    with pytest.raises(ValueError):
        extraction_query(STATIONS, "2026-10-02'; DROP TABLE stations; --")


def test_latest_version_per_key_keeps_the_newest_row():
    rows = pa.table({"station_id": [5, 5, 6], "updated_at": pa.array([1, 3, 2], pa.int64()).cast(pa.timestamp("us"))})
    kept = latest_version_per_key(rows, STATIONS)
    assert kept.column("station_id").to_pylist() == [5, 6]
    assert [t.value for t in kept.column("updated_at")] == [3, 2]


def test_null_in_a_required_column_is_quarantined_not_published(tmp_path):
    url = f"sqlite:///{tmp_path / 'oltp.sqlite'}"
    # SQLite lets the producer break the contract; the row must not be published, nor lost.
    execute(
        url,
        CREATE.replace(" NOT NULL", "").format(ts="TEXT"),
        row(1, "x", "2026-10-01 00:00:00.000000"),
        row(2, "y", "2026-10-01 01:00:00.000000"),
    )
    execute(url, "UPDATE stations SET city = NULL WHERE station_id = 1")
    result = materialize(url, tmp_path)
    meta = metadata_of(result)
    assert (meta["strata/rows_in"].value, meta["strata/rows_out"].value) == (2, 1)
    assert meta["strata/rows_quarantined"].value == 1
    assert meta["strata/quarantine_table"].value == "audit.bronze_quarantine"
    assert bronze_rows(tmp_path) == {2: ("y", "2026-10-01 01:00:00")}
    records = quarantined_rows(catalog_at(tmp_path), dataset="stations").to_pylist()
    assert [
        (r["row_key"], r["rule"], r["column_name"], r["offending_value"], r["dagster_run_id"]) for r in records
    ] == [("1", "city_not_null", "city", None, result.run_id)]


def test_an_unreachable_source_means_not_run_with_the_reason(tmp_path):
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'oltp.sqlite'}"
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(url, tmp_path, instance)
    assert result.success and result.get_asset_materialization_events() == []
    reason = instance.get_run_by_id(result.run_id).tags[NOT_RUN_TAG]
    assert reason.startswith(f"source {url} not reachable: FileNotFoundError: source database folder")
