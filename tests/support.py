"""Helpers the integration tests share: generate demo data into a temp root and read tables back."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from audit.metadata import table_checksum
from demo.simulator import DemoConfig, generate
from resources.settings import StrataSettings


def generate_demo(settings: StrataSettings, start: date, days: int, as_of: datetime | None = None) -> dict:
    cfg = DemoConfig(start=start, days=days, scale=0.01, seed=7)
    return generate(
        cfg,
        source_url=settings.source_database_url,
        landing_root=Path(settings.landing_root),
        truth_dir=settings.demo_dir,
        as_of=as_of,
    )


def warehouse_tables(settings: StrataSettings) -> dict[str, pa.Table]:
    """Every Silver/Gold table of the local warehouse, by `schema.table`."""
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        names = con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('silver', 'gold') AND table_type = 'BASE TABLE'"
        ).fetchall()
        return {name: con.execute(f"SELECT * FROM {name}").to_arrow_table() for (name,) in names}


def fingerprints(tables: dict[str, pa.Table]) -> dict[str, tuple[int, str]]:
    """(row count, content checksum) per table: what must not change when a run is repeated."""
    return {name: (t.num_rows, table_checksum(t, t.column_names)) for name, t in tables.items()}
