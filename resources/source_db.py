"""The OLTP source database, read Arrow-natively through ADBC (SQLite file or PostgreSQL URL).

The platform only reads the source, and says so to the engine: SQLite is opened with `mode=ro` (so a
missing file is an error, not a new empty database that a health check would find reachable), and
PostgreSQL sessions default to read-only transactions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import pyarrow as pa

from resources.redaction import scrub_url, split_url_password, with_url_password
from resources.secrets import SecretsResource


def connect_adbc(url: str, *, read_only: bool = False) -> Any:
    """Open an ADBC DB-API connection for `sqlite:///path` or `postgresql://...` URLs.

    `read_only` is how the platform reads a source; writers (the demo generator, tests) leave it off.
    """
    if url.startswith("sqlite:///"):
        import adbc_driver_sqlite.dbapi

        path = Path(url.removeprefix("sqlite:///"))
        if not path.parent.is_dir():
            # SQLite would only say 'failed to allocate memory' here.
            raise FileNotFoundError(f"source database folder {path.parent} does not exist (for {path.name})")
        if not read_only:
            return adbc_driver_sqlite.dbapi.connect(str(path))
        if not path.is_file():
            raise FileNotFoundError(f"source database file {path} does not exist")
        return adbc_driver_sqlite.dbapi.connect(f"file:{quote(str(path.resolve()))}?mode=ro")
    if url.startswith(("postgresql://", "postgres://")):
        import adbc_driver_postgresql.dbapi

        if read_only:  # libpq `options`: every transaction of the session is READ ONLY
            url += ("&" if "?" in url else "?") + "options=-c%20default_transaction_read_only%3Don"
        return adbc_driver_postgresql.dbapi.connect(url)
    raise ValueError(f"unsupported source database URL scheme in {redact_url(url)!r}; use sqlite:/// or postgresql://")


def sqlite_affinity_type(declared: str) -> pa.DataType | None:
    """The Arrow type SQLite's type affinity rules give a declared column type (sqlite.org/datatype3)."""
    upper = declared.upper()
    if "INT" in upper:
        return pa.int64()
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    if "BLOB" in upper:
        return pa.binary()
    return None  # no declared type or NUMERIC affinity: the stored values decide


def redact_url(url: str) -> str:
    """Hide the password of a URL (userinfo or `?password=`) so it can appear in logs and errors."""
    return scrub_url(url)


class SourceDatabase(dg.ConfigurableResource):
    """Read-only access to the upstream OLTP database.

    `url` holds no password, because Dagster stores resource config in every run's job snapshot and
    shows it in the UI: a source with a password is a `SourceDatabaseWithPassword`.
    """

    url: str

    def connection_url(self) -> str:
        """The URL to connect with, password included: pass it to the driver only, never log it."""
        if split_url_password(self.url)[1] is not None:
            raise ValueError(
                f"source database URL {self.display_url} carries a password in resource config, which Dagster "
                "stores and shows; give the URL without it and the password's secret name (password_secret)"
            )
        return self.url

    def read_arrow(self, query: str) -> pa.Table:
        with connect_adbc(self.connection_url(), read_only=True) as conn, conn.cursor() as cur:
            cur.execute(query)
            return without_extension_types(cur.fetch_arrow_table())

    def table_columns(self, table: str) -> dict[str, pa.DataType | None] | None:
        """The source table's columns and their Arrow types as the engine declares them, before any row is
        read; None when the table does not exist. A type is None when the engine cannot say (SQLite
        columns without a declared type or with NUMERIC affinity: their values decide, row by row)."""
        with connect_adbc(self.connection_url(), read_only=True) as conn:
            if self.url.startswith("sqlite:///"):
                with conn.cursor() as cur:
                    cur.execute(f"SELECT name, type FROM pragma_table_info('{table}')")
                    declared = cur.fetchall()
                return {name: sqlite_affinity_type(decl) for name, decl in declared} or None
            try:
                schema = conn.adbc_get_table_schema(table)
            except Exception as exc:
                if "SQLSTATE: 42P01" in str(exc):  # undefined_table
                    return None
                raise
            return {field.name: storage_type(field.type) for field in schema}

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


class SourceDatabaseWithPassword(SourceDatabase):
    """A source whose password is the secret `password_secret`, read from `secrets` at each connection and
    put into the URL handed to the driver. A class of its own because a nested resource makes Dagster
    open the whole resource as a context manager; the source without password stays a plain resource."""

    password_secret: str
    secrets: SecretsResource

    def connection_url(self) -> str:
        return with_url_password(super().connection_url(), self.secrets.get(self.password_secret))


def storage_type(arrow_type: pa.DataType) -> pa.DataType:
    """An extension type's storage: the ADBC PostgreSQL driver returns NUMERIC as an opaque extension over
    its exact decimal text, which the contracts read losslessly as `decimal(p,s)` (never through a float)."""
    return arrow_type.storage_type if isinstance(arrow_type, pa.BaseExtensionType) else arrow_type


def without_extension_types(table: pa.Table) -> pa.Table:
    """`table` with every extension-typed column replaced by its storage (see `storage_type`)."""
    for index, field in enumerate(table.schema):
        if isinstance(field.type, pa.BaseExtensionType):
            column = table.column(index)
            storage = pa.chunked_array([chunk.storage for chunk in column.chunks], type=field.type.storage_type)
            table = table.set_column(index, pa.field(field.name, field.type.storage_type, field.nullable), storage)
    return table
