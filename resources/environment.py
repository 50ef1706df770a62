"""Resources per environment, chosen in one place (`build_resources`) from `StrataSettings`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

from resources.alerting import build_alerting_resource
from resources.iceberg import IcebergCatalog
from resources.ingestion_guard import IngestionGuard
from resources.landing import LandingZone
from resources.secrets import build_secrets_resource
from resources.settings import DBT_PROJECT_DIR, StrataSettings
from resources.source_db import SourceDatabase
from resources.trino_results import TRINO_AUTH_METHODS
from resources.warehouse import Warehouse


def build_dbt_project(settings: StrataSettings) -> DbtProject:
    """The dbt project for this environment; parses it when no manifest exists yet (fresh clone)."""
    project = DbtProject(project_dir=DBT_PROJECT_DIR, target=settings.dbt_target)
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        project.preparer.prepare(project)
    return project


def dbt_executable() -> str:
    """dbt from PATH, else the one installed next to this interpreter (a venv that is not activated)."""
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


def build_resources(settings: StrataSettings, dbt_project: DbtProject) -> dict[str, object]:
    secrets = build_secrets_resource(settings)
    return {
        "secrets": secrets,
        "alerting": build_alerting_resource(settings, secrets),
        "iceberg": IcebergCatalog.from_settings(settings),
        "source_db": SourceDatabase(url=settings.source_database_url),
        "landing": LandingZone(
            root=settings.landing_root, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
        ),
        "warehouse": Warehouse(
            engine=settings.warehouse_engine,
            duckdb_path=str(settings.duckdb_path),
            extension_dir=str(settings.duckdb_extension_dir),
            s3_endpoint_url=settings.s3_endpoint_url,
            s3_region=settings.s3_region,
            secrets=secrets,
            **(trino_fields(settings.trino) if settings.warehouse_engine == "trino" else {}),
        ),
        "guard": IngestionGuard(data_path=str(settings.root)),
        "dbt": DbtCliResource(project_dir=dbt_project, target=settings.dbt_target, dbt_executable=dbt_executable()),
    }
