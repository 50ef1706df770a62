"""The SQL warehouse dbt runs on: DuckDB locally, Trino in production.

Locally dbt reads Bronze through DuckDB views over `iceberg_scan(<metadata file>)`: the scan is lazy
(only the columns, partitions and row groups a query needs are read), so no table is copied into
memory. The views are re-pointed at the current Iceberg snapshot at the start of every dbt run, which
also pins the input snapshot ids that the run's metadata records. On Trino, dbt reads the Iceberg
catalog directly and there is nothing to publish.

Python consumers of Silver/Gold (quality checks, ML) read through `Warehouse.query_arrow` and
`Warehouse.column_names`, which run the same SQL on either engine: write it portably (quoted
identifiers, `?` parameters, no DuckDB-only syntax). `connect()` stays DuckDB-only, for the code that
manages the local warehouse file itself.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from resources.iceberg import IcebergCatalog
from resources.secrets import SecretsResource
from resources.trino_results import TRINO_AUTH_METHODS, TRINO_SOURCE, pinned_ca_session, rows_to_arrow

if TYPE_CHECKING:
    import pyarrow as pa

BRONZE_NAMESPACE = "bronze"
# The pool of every step that writes or reads the warehouse (dbt, Silver/Gold checks, ML).
WAREHOUSE_POOL = "warehouse"
# DuckDB cannot download extensions here; these PyPI wheels carry them for duckdb 1.5.5.
EXTENSION_WHEELS = ("avro", "iceberg")
# Loaded only for an S3-compatible endpoint (Bronze on S3 read by DuckDB, in prod-shaped runs).
S3_EXTENSION = "httpfs"
ENGINES = ("duckdb", "trino")
MAX_SQL_IN_ERRORS = 500


def extension_file(name: str) -> Path:
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"DuckDB extension wheel duckdb-extension-{name} is not installed")
    return next(Path(spec.submodule_search_locations[0]).rglob(f"{name}.duckdb_extension"))


class WarehouseQueryError(RuntimeError):
    """A warehouse read failed. The message names the engine, the SQL and its parameters, and never a
    credential (it ends up in run logs, the UI and alerts)."""


def quote_identifier(name: str) -> str:
    """A double-quoted SQL identifier, valid in DuckDB and Trino alike."""
    return '"' + name.replace('"', '""') + '"'


def relation_name(schema: str, table: str) -> str:
    """`"schema"."table"`: the portable way to name a Silver/Gold relation in either engine."""
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"


def describe_query(sql: str, params: Sequence[Any]) -> str:
    """The SQL on one line (cut to MAX_SQL_IN_ERRORS characters) and its parameters, for error messages."""
    text = " ".join(sql.split())
    if len(text) > MAX_SQL_IN_ERRORS:
        text = text[:MAX_SQL_IN_ERRORS] + "..."
    return text + (f" with parameters {[str(p) for p in params]}" if params else "")


class Warehouse(dg.ConfigurableResource):
    """Where dbt builds Silver and Gold. `engine` is `duckdb` (local) or `trino` (prod).

    The Trino fields mirror dbt/profiles.yml's prod target. The password is never part of this
    config (Dagster shows resource config in the UI): `trino_password_secret` names it in `secrets`.
    """

    engine: str = "duckdb"
    duckdb_path: str = ""
    extension_dir: str = ""
    # DuckDB's resources (settings.py: STRATA_DUCKDB_MEMORY_LIMIT / _THREADS), also handed to dbt's profile;
    # past the memory limit DuckDB spills to `duckdb_temp_directory` rather than growing.
    duckdb_memory_limit: str = "2GB"
    duckdb_threads: int = 2
    duckdb_temp_directory: str = ""
    # DuckDB reading Bronze on an S3-compatible store (MinIO, moto): its endpoint URL and region. The
    # credentials come from the standard AWS variables, which DuckDB reads itself.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    # Only needed for Trino with a password; DuckDB-only callers may leave it out.
    secrets: SecretsResource | None = None
    trino_host: str = "trino"
    trino_port: int = 8080
    trino_user: str = "strata"
    trino_catalog: str = "iceberg"
    trino_schema: str = "silver"
    trino_http_scheme: str = "http"
    trino_method: str = "none"  # one of TRINO_AUTH_METHODS
    trino_password_secret: str = "trino/password"
    trino_ca_bundle: str = ""  # a CA file to verify Trino's certificate; empty: the system's CAs
    trino_request_timeout_seconds: float = 30.0
    # False: parameters are bound with one `EXECUTE IMMEDIATE ... USING` request (Trino 418+). True:
    # PREPARE / EXECUTE / DEALLOCATE, for older servers. Never None: the client would then probe the
    # server on first use and, on any error, quietly fall back to the legacy flow for an hour.
    trino_legacy_prepared_statements: bool = False

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
        con = duckdb.connect(self.duckdb_path, read_only=read_only, config=self.duckdb_config())
        self.install_extensions(con)
        if self.s3_endpoint_url:
            self.configure_s3(con)
        return con

    def duckdb_config(self) -> dict[str, str]:
        """DuckDB's limits as options of the database open, not `SET`s on each connection: connections a
        process holds at once share one open database (DuckDB caches it per file), and DuckDB refuses any
        `SET temp_directory`, even to the same path, once a query has spilled (issue 12)."""
        config = {"memory_limit": self.duckdb_memory_limit, "threads": str(int(self.duckdb_threads))}
        if self.duckdb_temp_directory:
            Path(self.duckdb_temp_directory).mkdir(parents=True, exist_ok=True)
            config["temp_directory"] = self.duckdb_temp_directory
        return config

    def duckdb_environment(self) -> dict[str, str]:
        """The same limits for the dbt subprocess: dbt/profiles.yml's DuckDB targets read these variables."""
        values = {
            "STRATA_DUCKDB_MEMORY_LIMIT": self.duckdb_memory_limit,
            "STRATA_DUCKDB_THREADS": str(self.duckdb_threads),
        }
        if self.duckdb_temp_directory:
            values["STRATA_DUCKDB_TEMP_DIRECTORY"] = self.duckdb_temp_directory
        return values

    def configure_s3(self, con) -> None:
        """Point DuckDB's S3 reads at `s3_endpoint_url` (path-style URLs, TLS as the URL says); dbt's
        `local_s3` profile derives the same settings from STRATA_S3_ENDPOINT_URL."""
        scheme, _, host = str(self.s3_endpoint_url).partition("://")
        if not list(Path(self.extension_dir).rglob(f"{S3_EXTENSION}.duckdb_extension")):
            con.execute(f"INSTALL '{extension_file(S3_EXTENSION)}'")
        con.execute(f"LOAD {S3_EXTENSION}")
        for name, value in (
            ("s3_endpoint", host.rstrip("/")),
            ("s3_use_ssl", "true" if scheme == "https" else "false"),
            ("s3_url_style", "path"),
            ("s3_region", self.s3_region),
        ):
            con.execute(f"SET {name} = '{value}'")

    def query_arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """Run a read-only query with `?` parameters on this engine; the result as Arrow.

        DuckDB hands back its own Arrow types. Trino results are built from the client's rows: typed
        from each column's Trino type where `trino_arrow_type` maps it, else inferred from the Python
        values, which is enough for what dbt models produce (numbers, text, dates, timestamps).
        """
        if self.engine == "duckdb":
            return self._duckdb_query(sql, params)
        if self.engine == "trino":
            return self._trino_query(sql, params)
        raise ValueError(f"unknown warehouse engine {self.engine!r}; use one of {ENGINES}")

    def query_arrow_many(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[pa.Table]:
        """`query_arrow` for several queries, on DuckDB over one connection: opening one (limits, loading
        the extensions) costs 0.3-0.7 s, far more than a small query over a mart."""
        if self.engine != "duckdb":
            return [self.query_arrow(sql, params) for sql, params in queries]
        with self.connect(read_only=True) as con:
            results = []
            for sql, params in queries:
                try:
                    results.append(con.execute(sql, list(params)).to_arrow_table())
                except Exception as error:
                    raise WarehouseQueryError(
                        f"DuckDB query failed ({self.duckdb_path}): {type(error).__name__}: {error}; "
                        f"SQL: {describe_query(sql, params)}"
                    ) from error
            return results

    def column_names(self, relation: str) -> list[str]:
        """The columns of a table or view, in table order (e.g. `relation_name("silver", "bookings")`)."""
        return self.query_arrow(f"SELECT * FROM {relation} LIMIT 0").column_names

    def _duckdb_query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        try:
            with self.connect(read_only=True) as con:
                return con.execute(sql, list(params)).to_arrow_table()
        except Exception as error:
            raise WarehouseQueryError(
                f"DuckDB query failed ({self.duckdb_path}): {type(error).__name__}: {error}; "
                f"SQL: {describe_query(sql, params)}"
            ) from error

    def _trino_query(self, sql: str, params: Sequence[Any]) -> pa.Table:
        import trino

        password = self.trino_password()
        try:
            connection = trino.dbapi.connect(
                host=self.trino_host,
                port=self.trino_port,
                user=self.trino_user,
                catalog=self.trino_catalog,
                schema=self.trino_schema,
                http_scheme=self.trino_http_scheme,
                auth=trino.auth.BasicAuthentication(self.trino_user, password) if password is not None else None,
                http_session=pinned_ca_session(self.trino_ca_bundle) if self.trino_ca_bundle else None,
                source=TRINO_SOURCE,
                request_timeout=self.trino_request_timeout_seconds,
                legacy_prepared_statements=self.trino_legacy_prepared_statements,
            )
            try:
                cursor = connection.cursor()
                # The client binds parameters on the server (see trino_legacy_prepared_statements);
                # without parameters it sends the SQL as it is.
                cursor.execute(sql, list(params) or None)
                rows = cursor.fetchall()
                columns = [(column.name, column.type_code) for column in cursor.description or ()]
            finally:
                connection.close()
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            if password:
                message = message.replace(password, "***")
            # `from None`: the client's exception (and its HTTP request, with the Authorization
            # header) stays out of the traceback that Dagster stores and shows; its text is above.
            raise WarehouseQueryError(
                f"Trino query failed ({self.trino_http_scheme}://{self.trino_host}:{self.trino_port}, "
                f"catalog {self.trino_catalog}): {message}; SQL: {describe_query(sql, params)}"
            ) from None
        return rows_to_arrow(columns, rows)

    def trino_password(self) -> str | None:
        """The password for basic/ldap auth from `secrets`, read on use; None for method `none`.
        Also handed to the dbt subprocess (assets/transform/dbt_models.py), so prod keeps it in one place."""
        if self.trino_method not in TRINO_AUTH_METHODS:
            raise ValueError(f"unknown Trino auth method {self.trino_method!r}; use one of {TRINO_AUTH_METHODS}")
        if self.trino_method == "none":
            return None
        if self.secrets is None:
            raise ValueError(f"Trino auth method {self.trino_method!r} needs the secrets resource for its password")
        return self.secrets.get(self.trino_password_secret)

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
