"""The SQL warehouse dbt runs on: DuckDB locally, Trino in production.

Locally dbt reads Bronze through DuckDB views over `iceberg_scan(<metadata file>)`: the scan is lazy
(only the columns, partitions and row groups a query needs are read), so no table is copied into
memory. The views are re-pointed at the current Iceberg snapshot at the start of every dbt run, which
also pins the input snapshot ids that the run's metadata records. On Trino, dbt reads the Iceberg
catalog directly and there is nothing to publish.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import dagster as dg

from resources.iceberg import IcebergCatalog

BRONZE_NAMESPACE = "bronze"
# The pool of every step that writes or reads the warehouse (dbt, Silver/Gold checks, ML).
WAREHOUSE_POOL = "warehouse"
# DuckDB cannot download extensions here; these PyPI wheels carry them for duckdb 1.5.5.
EXTENSION_WHEELS = ("avro", "iceberg")


def extension_file(name: str) -> Path:
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"DuckDB extension wheel duckdb-extension-{name} is not installed")
    return next(Path(spec.submodule_search_locations[0]).rglob(f"{name}.duckdb_extension"))


class Warehouse(dg.ConfigurableResource):
    """Where dbt builds Silver and Gold. `engine` is `duckdb` (local) or `trino` (prod)."""

    engine: str = "duckdb"
    duckdb_path: str = ""
    extension_dir: str = ""

    def install_extensions(self, con) -> None:
        """Install the bundled extensions into our extension directory once (a file copy)."""
        con.execute(f"SET extension_directory = '{self.extension_dir}'")
        installed = Path(self.extension_dir)
        for name in EXTENSION_WHEELS:
            if not any(installed.rglob(f"{name}.duckdb_extension")):
                con.execute(f"INSTALL '{extension_file(name)}'")
            con.execute(f"LOAD {name}")

    def connect(self, read_only: bool = False):
        import duckdb

        Path(self.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.duckdb_path, read_only=read_only)
        self.install_extensions(con)
        return con

    def publish_bronze_views(self, catalog: IcebergCatalog) -> dict[str, int]:
        """Point `bronze.<table>` at each Bronze table's current snapshot; return the snapshot ids."""
        iceberg = catalog.load()
        tables = {}
        if BRONZE_NAMESPACE in {ns[0] for ns in iceberg.list_namespaces()}:
            for identifier in iceberg.list_tables(BRONZE_NAMESPACE):
                table = iceberg.load_table(identifier)
                if table.current_snapshot() is not None:
                    tables[identifier[-1]] = table
        if self.engine == "duckdb":
            with self.connect() as con:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {BRONZE_NAMESPACE}")
                for name, table in tables.items():
                    location = table.metadata_location.replace("'", "''")
                    con.execute(
                        f"CREATE OR REPLACE VIEW {BRONZE_NAMESPACE}.{name} AS SELECT * FROM iceberg_scan('{location}')"
                    )
        return {name: table.current_snapshot().snapshot_id for name, table in sorted(tables.items())}
