"""Bulk writes of the simulated OLTP tables into SQLite or PostgreSQL through ADBC.

SQLite has no timestamp type: timestamps are stored as fixed-width TEXT 'YYYY-MM-DD HH:MM:SS.ffffff'
(UTC), so comparing the text compares the times. PostgreSQL gets `timestamp` (without time zone).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from assets.bronze.contracts import DECIMAL_TYPE, VARCHAR_TYPE, TableContract, oltp_contracts
from resources.source_db import connect_adbc

SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"  # Arrow prints the .ffffff fraction of timestamp[us] seconds
STAGING_PREFIX = "_demo_stage_"

SQL_TYPES = {
    # contract type: (SQLite, PostgreSQL)
    "int64": ("INTEGER", "BIGINT"),
    "float64": ("REAL", "DOUBLE PRECISION"),
    "string": ("TEXT", "TEXT"),
    "bool": ("INTEGER", "BOOLEAN"),
    "date": ("TEXT", "DATE"),
    "timestamp": ("TEXT", "TIMESTAMP"),
}


def sql_type(type_name: str, sqlite: bool) -> str:
    """The column type a contract type is stored as. SQLite keeps decimals as TEXT: its NUMERIC affinity
    would turn them into binary floats, which are not the decimals they print."""
    if DECIMAL_TYPE.fullmatch(type_name) or VARCHAR_TYPE.fullmatch(type_name):
        return "TEXT" if sqlite else type_name.upper()
    return SQL_TYPES[type_name][0 if sqlite else 1]


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:///")


def create_table_sql(contract: TableContract, sqlite: bool) -> str:
    columns = [f"{c.name} {sql_type(c.type_name, sqlite)}{'' if c.nullable else ' NOT NULL'}" for c in contract.columns]
    return f"CREATE TABLE {contract.name} ({', '.join(columns)}, PRIMARY KEY ({contract.primary_key}))"


def to_database_arrow(table: pa.Table, sqlite: bool) -> pa.Table:
    """SQLite receives timestamps as fixed-width text and decimals as their exact text (`12.5000`);
    PostgreSQL takes Arrow timestamps and decimals as they are."""
    if not sqlite:
        return table
    columns = [
        pc.strftime(col, format=SQLITE_TIMESTAMP_FORMAT)
        if pa.types.is_timestamp(col.type)
        else col.cast(pa.string())
        if pa.types.is_decimal(col.type)
        else col
        for col in table.columns
    ]
    return pa.Table.from_arrays(columns, names=table.column_names)


def replace_tables(url: str, tables: dict[str, pa.Table]) -> None:
    """Drop, recreate (with primary keys) and fill the given tables in one transaction."""
    sqlite = is_sqlite(url)
    if sqlite:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    contracts = oltp_contracts()
    with connect_adbc(url) as conn:
        with conn.cursor() as cur:
            for name, table in tables.items():
                cur.execute(f"DROP TABLE IF EXISTS {name}")
                cur.execute(create_table_sql(contracts[name], sqlite))
                if table.num_rows:
                    cur.adbc_ingest(name, to_database_arrow(table, sqlite), mode="append")
        conn.commit()


def upsert_rows(url: str, tables: dict[str, pa.Table]) -> None:
    """Replace rows by primary key (and insert new ones) in one transaction, touching no other row.

    The rows go to a temporary staging table first; delete + insert is portable across SQLite and
    PostgreSQL, unlike their respective upsert syntaxes.
    """
    sqlite = is_sqlite(url)
    contracts = oltp_contracts()
    with connect_adbc(url) as conn:
        with conn.cursor() as cur:
            for name, table in tables.items():
                if not table.num_rows:
                    continue
                key, staging = contracts[name].primary_key, f"{STAGING_PREFIX}{name}"
                columns = ", ".join(table.column_names)
                cur.execute(f"DROP TABLE IF EXISTS {staging}")
                cur.adbc_ingest(staging, to_database_arrow(table, sqlite), mode="create", temporary=True)
                cur.execute(f"DELETE FROM {name} WHERE {key} IN (SELECT {key} FROM {staging})")
                cur.execute(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {staging}")
                cur.execute(f"DROP TABLE {staging}")
        conn.commit()
