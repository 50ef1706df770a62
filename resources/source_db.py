"""The OLTP source database, read Arrow-natively through ADBC (SQLite file or PostgreSQL URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from resources.redaction import scrub_url, split_url_password, with_url_password
from resources.secrets import SecretsResource


def connect_adbc(url: str) -> Any:
    """Open an ADBC DB-API connection for `sqlite:///path` or `postgresql://...` URLs."""
    if url.startswith("sqlite:///"):
        import adbc_driver_sqlite.dbapi

        path = Path(url.removeprefix("sqlite:///"))
        if not path.parent.is_dir():
            # SQLite would only say 'failed to allocate memory' here.
            raise FileNotFoundError(f"source database folder {path.parent} does not exist (for {path.name})")
        return adbc_driver_sqlite.dbapi.connect(str(path))
    if url.startswith(("postgresql://", "postgres://")):
        import adbc_driver_postgresql.dbapi

        return adbc_driver_postgresql.dbapi.connect(url)
    raise ValueError(f"unsupported source database URL scheme in {redact_url(url)!r}; use sqlite:/// or postgresql://")


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
        with connect_adbc(self.connection_url()) as conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetch_arrow_table()

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
