"""The OLTP source database, read Arrow-natively through ADBC (SQLite file or PostgreSQL URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa


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
    """Hide the password of a URL so it can appear in logs and errors."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else url


class SourceDatabase(dg.ConfigurableResource):
    """Read-only access to the upstream OLTP database."""

    url: str

    def read_arrow(self, query: str) -> pa.Table:
        with connect_adbc(self.url) as conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetch_arrow_table()

    @property
    def display_url(self) -> str:
        return redact_url(self.url)
