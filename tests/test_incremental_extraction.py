"""Incremental extraction on the simulator: after bookings change status and new rows arrive, the next
Bronze run picks up exactly those changes (updated rows replaced, new rows added, none duplicated)."""

from datetime import datetime

import dagster as dg
import pyarrow as pa

from assets.bronze.contracts import oltp_contracts
from assets.bronze.oltp import build_oltp_assets
from demo.simulator import DemoConfig, advance
from resources.iceberg import IcebergCatalog
from resources.ingestion_guard import IngestionGuard
from resources.source_db import SourceDatabase
from tests.conftest import TEST_START
from tests.support import generate_demo

MIDDAY = datetime(2026, 10, 1, 12, 37)  # inside a trip slot: some bookings reserved or active
END = datetime(2026, 10, 2, 0, 0)


def extract_all(settings) -> dict[str, dict]:
    result = dg.materialize(
        build_oltp_assets(),
        resources={
            "source_db": SourceDatabase(url=settings.source_database_url),
            "guard": IngestionGuard(data_path=str(settings.root)),
            "iceberg": IcebergCatalog(uri=settings.iceberg_catalog_uri, warehouse=settings.iceberg_warehouse),
        },
    )
    return {
        e.asset_key.path[-1]: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


def sorted_rows(table: pa.Table, key: str) -> list[dict]:
    return table.sort_by(key).to_pylist()


def comparable(value: object) -> str | None:
    """A source or Bronze value as text; a timestamp (a datetime, or SQLite's text of one) as its ISO form."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    text = str(value)
    if len(text) >= 19 and text[4] == "-" and text[10] in " T" and text[13] == ":":
        try:
            return datetime.fromisoformat(text).isoformat(sep=" ")
        except ValueError:
            return text
    return text


def test_the_next_run_picks_up_exactly_the_changes(settings):
    generate_demo(settings, TEST_START, 1, as_of=MIDDAY)
    first = extract_all(settings)
    assert first["bookings"]["strata/rows_inserted"] > 0

    changes = advance(
        DemoConfig(start=TEST_START, days=1, scale=0.01, seed=7),
        source_url=settings.source_database_url,
        landing_root=settings.root / "landing",
        truth_dir=settings.demo_dir,
        as_of=END,
    )["changes"]
    assert changes["bookings"]["updated"] > 0 and changes["bookings"]["inserted"] > 0

    second = extract_all(settings)
    for table in ("bookings", "payments", "customers", "vehicles"):
        assert second[table]["strata/rows_updated"] == changes[table]["updated"], table
        assert second[table]["strata/rows_inserted"] == changes[table]["inserted"], table

    source = SourceDatabase(url=settings.source_database_url)
    catalog = IcebergCatalog(uri=settings.iceberg_catalog_uri, warehouse=settings.iceberg_warehouse).load()
    for name, contract in oltp_contracts().items():
        bronze = catalog.load_table(f"bronze.{name}").scan().to_arrow()
        upstream = source.read_arrow(f"SELECT * FROM {name}")
        assert bronze.num_rows == upstream.num_rows, name
        assert len(set(bronze.column(contract.primary_key).to_pylist())) == bronze.num_rows, name
        # Same values: compare on the string form, since SQLite hands timestamps over as text (with or
        # without the microseconds), so timestamps are compared as the instants they name.
        as_text = [{k: comparable(v) for k, v in row.items()} for row in sorted_rows(bronze, contract.primary_key)]
        expected = [
            {k: comparable(v) for k, v in row.items()}
            for row in sorted_rows(upstream.select(contract.column_names), contract.primary_key)
        ]
        assert as_text == expected, name
