"""Resources per environment, chosen in one place (`build_resources`) from `StrataSettings`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

from resources.alerting import build_alerting_resource
from resources.dbt_dies_with_parent import PLATFORM_PYTHON_ENV
from resources.iceberg import IcebergCatalog
from resources.ingestion_guard import IngestionGuard
from resources.landing import LandingZone
from resources.lineage import build_lineage_sink
from resources.metrics import MetricsTextfile
from resources.model_registry import ModelRegistry
from resources.outputs import OutputsArea
from resources.redaction import split_url_password
from resources.secrets import SecretsResource, build_secrets_resource, hold_in_memory
from resources.settings import DBT_PROJECT_DIR, StrataSettings
from resources.source_db import SourceDatabase, SourceDatabaseWithPassword
from resources.trino_results import TRINO_AUTH_METHODS
from resources.warehouse import Warehouse
from resources.weather_api import build_weather_api


def build_dbt_project(settings: StrataSettings) -> DbtProject:
    """The dbt project for this environment; parses it when no manifest exists yet (fresh clone)."""
    project = DbtProject(project_dir=DBT_PROJECT_DIR, target=settings.dbt_target)
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        project.preparer.prepare(project)
    return project


def dbt_executable() -> str:
    """On Linux, the wrapper that ends dbt when its step process dies (even by SIGKILL), so no dbt is left
    writing the warehouse for a failed run. Elsewhere dbt from PATH, else the one next to this interpreter
    (a venv that is not activated)."""
    if sys.platform.startswith("linux"):
        # The wrapper's shebang finds `python3` on PATH; this tells it which interpreter has dbt (a venv that
        # is not activated, `.venv/bin/dagster dev`, has dbt beside its python but not on PATH).
        os.environ.setdefault(PLATFORM_PYTHON_ENV, sys.executable)
        return str(Path(__file__).with_name("dbt_dies_with_parent.py"))
    return shutil.which("dbt") or str(Path(sys.executable).with_name("dbt"))


def trino_fields(trino: dict[str, str]) -> dict[str, object]:
    """`Warehouse`'s Trino fields from `STRATA_TRINO_*` (settings.trino), with dbt/profiles.yml's defaults.

    dbt's prod target reads the password from STRATA_TRINO_PASSWORD; the resource never copies it into
    its config (the UI shows that) but asks the secrets backend for `STRATA_TRINO_PASSWORD_SECRET`
    (default `trino/password`) when a query runs.
    """
    method = trino.get("method", "none").lower()
    if method not in TRINO_AUTH_METHODS:
        raise ValueError(f"STRATA_TRINO_METHOD {method!r} is not supported here; use one of {TRINO_AUTH_METHODS}")
    return {
        "trino_host": trino.get("host", "trino"),
        "trino_port": int(trino.get("port", "8080")),
        "trino_user": trino.get("user", "strata"),
        "trino_catalog": trino.get("catalog", "iceberg"),
        "trino_schema": trino.get("schema", "silver"),
        "trino_http_scheme": trino.get("http_scheme", "http"),
        "trino_method": method,
        "trino_password_secret": trino.get("password_secret", "trino/password"),
        "trino_ca_bundle": trino.get("ca_bundle", ""),
        "trino_legacy_prepared_statements": trino.get("legacy_prepared_statements", "false").lower()
        in ("1", "true", "yes"),
    }


# Where a password found inside STRATA_SOURCE_URL (deprecated) is kept: this process's memory only.
SOURCE_URL_PASSWORD_SECRET = "source_db/password_from_url"


def source_database(settings: StrataSettings, secrets: SecretsResource) -> SourceDatabase:
    """The source DB resource: the URL without password, plus the password's secret name.

    A password still written into STRATA_SOURCE_URL (as `user:pass@` or `?password=`) is accepted for
    backwards compatibility: it is moved out of the URL into an in-memory secret, so it never enters
    resource config. STRATA_SOURCE_PASSWORD_SECRET (e.g. `source_db/password`) is the supported way.
    """
    url, password = split_url_password(settings.source_database_url)
    secret = hold_in_memory(SOURCE_URL_PASSWORD_SECRET, password) if password else settings.source_password_secret
    if not secret:
        return SourceDatabase(url=url)
    return SourceDatabaseWithPassword(url=url, password_secret=secret, secrets=secrets)


def build_resources(settings: StrataSettings, dbt_project: DbtProject) -> dict[str, object]:
    secrets = build_secrets_resource(settings)
    return {
        "secrets": secrets,
        "alerting": build_alerting_resource(settings, secrets),
        "iceberg": IcebergCatalog.from_settings(settings, secrets),
        "source_db": source_database(settings, secrets),
        "landing": LandingZone(
            root=settings.landing_root, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
        ),
        "warehouse": Warehouse(
            engine=settings.warehouse_engine,
            duckdb_path=str(settings.duckdb_path),
            extension_dir=str(settings.duckdb_extension_dir),
            duckdb_memory_limit=settings.duckdb_memory_limit,
            duckdb_threads=settings.duckdb_threads,
            duckdb_temp_directory=str(settings.duckdb_temp_directory),
            s3_endpoint_url=settings.s3_endpoint_url,
            s3_region=settings.s3_region,
            secrets=secrets,
            **(trino_fields(settings.trino) if settings.warehouse_engine == "trino" else {}),
        ),
        "guard": IngestionGuard(data_path=str(settings.root)),
        "weather_api": build_weather_api(settings, secrets),
        "outputs": OutputsArea(
            root=settings.outputs_root, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
        ),
        "registry": ModelRegistry.from_settings(settings),
        "lineage": build_lineage_sink(settings, secrets),
        "metrics": MetricsTextfile(path=settings.metrics_textfile),
        "dbt": DbtCliResource(project_dir=dbt_project, target=settings.dbt_target, dbt_executable=dbt_executable()),
    }
