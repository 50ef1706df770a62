"""Environment settings: the only module that reads environment variables.

`STRATA_ENV` picks the environment (`local` default, `prod`). Every path, endpoint and credential
reference is derived here so that assets never look at the process environment themselves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt"
DEFAULT_DEMO_DAYS = 30
# Shared by every process that opens the Iceberg catalog: pyiceberg stores it in each catalog row.
ICEBERG_CATALOG_NAME = "strata"
# The weather API: the demo server's address (`python -m demo weather-api`) and the name of its token secret.
DEFAULT_WEATHER_API_URL = "http://127.0.0.1:8765"
WEATHER_AUTH_SECRET = "weather/api_token"
# Where the dbt docs site (`make docs`, then `make docs-serve`) is served; dbt assets link to their page there.
DEFAULT_DBT_DOCS_URL = "http://127.0.0.1:8580"


def default_demo_end() -> date:
    """The demo window ends at today's UTC midnight (exclusive), so its last day is yesterday."""
    return datetime.now(UTC).date()


def default_start_date() -> date:
    return default_demo_end() - timedelta(days=DEFAULT_DEMO_DAYS)


@dataclass(frozen=True)
class StrataSettings:
    """Resolved configuration for one environment."""

    env: str = "local"
    root: Path = field(default_factory=lambda: REPO_ROOT / ".strata")
    start_date: date = field(default_factory=default_start_date)
    # May still carry a password (deprecated): `resources.environment` moves it into an in-memory secret.
    source_url: str | None = field(default=None, repr=False)
    # Secret name of the source DB password (STRATA_SOURCE_PASSWORD_SECRET, e.g. "source_db/password").
    source_password_secret: str = ""
    landing_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    catalog_uri: str | None = None
    warehouse_url: str | None = None
    catalog_properties: dict[str, str] = field(default_factory=dict, repr=False)
    # Iceberg property -> secret name (STRATA_ICEBERG_SECRET_PROP_*): values come from the secrets backend.
    catalog_secret_properties: dict[str, str] = field(default_factory=dict)
    trino: dict[str, str] = field(default_factory=dict)
    # The SQL engine dbt builds Silver/Gold with: Trino in prod; DuckDB locally and for prod-shaped runs
    # on a machine without Trino (STRATA_WAREHOUSE_ENGINE=duckdb with STRATA_ENV=prod).
    warehouse_engine: str = "duckdb"
    # DuckDB's memory limit and threads, for dbt and every warehouse connection: past the limit DuckDB
    # spills to `duckdb_temp_directory` instead of growing (a 181-day build took 5.5 GiB without it).
    duckdb_memory_limit: str = "2GB"
    duckdb_threads: int = 2
    # How a run executes its steps: one Kubernetes Job per step in prod (`k8s`, jobs/executor.py), else
    # processes of the run worker (`multiprocess`; also prod-shaped runs on a machine without Kubernetes).
    executor: str = "multiprocess"
    image: str = ""
    git_sha: str = ""
    # Secrets: where `SecretsResource` reads them. Values never live here (the UI shows resource config).
    secrets_backend: str = "env"
    dotenv_path: Path = field(default_factory=lambda: REPO_ROOT / ".env")
    vault: dict[str, str] = field(default_factory=dict)
    # Alerting: channels and their non-secret settings; webhook URL and SMTP password are secret names.
    alert_channels: tuple[str, ...] = ("log",)
    alert_webhook_url_secret: str = "alerting/webhook_url"
    smtp: dict[str, str] = field(default_factory=dict)
    dagster_ui_url: str = ""
    # The weather API (STRATA_WEATHER_*: url, locations, auth_secret, timeout_seconds); the token is a secret name.
    weather: dict[str, str] = field(default_factory=dict)
    # Where published outputs (the weekly report) go: a folder (default .strata/outputs) or s3://bucket/prefix.
    outputs_url: str | None = None
    # The MLflow tracking server of the model registry (STRATA_MLFLOW_TRACKING_URI); "" keeps a SQLite
    # registry under the root (.strata/mlflow/). Credentials go in MLflow's own variables, never here.
    mlflow_tracking_uri: str = ""
    # OpenLineage (STRATA_OPENLINEAGE_URL, an http(s) endpoint such as Marquez; STRATA_OPENLINEAGE_FILE, a
    # JSON-lines file); both empty: lineage is off. STRATA_OPENLINEAGE_NAMESPACE names Strata's jobs.
    # STRATA_OPENLINEAGE_API_KEY_SECRET is the NAME of the endpoint's API key secret ("" = no key).
    openlineage_url: str = ""
    openlineage_file: str = ""
    openlineage_namespace: str = "strata"
    openlineage_api_key_secret: str = ""
    # The dbt docs site the dbt assets link to (STRATA_DBT_DOCS_URL).
    dbt_docs_url: str = DEFAULT_DBT_DOCS_URL
    # The Prometheus textfile the metrics sensor rewrites (STRATA_METRICS_TEXTFILE); "" = metrics off.
    metrics_textfile: str = ""

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def landing_root(self) -> str:
        return self.landing_url or str(self.root / "landing")

    @property
    def outputs_root(self) -> str:
        return self.outputs_url or str(self.root / "outputs")

    @property
    def source_database_url(self) -> str:
        return self.source_url or f"sqlite:///{self.root / 'source' / 'oltp.sqlite'}"

    @property
    def iceberg_catalog_uri(self) -> str:
        return self.catalog_uri or f"sqlite:///{self.root / 'iceberg' / 'catalog.db'}"

    @property
    def iceberg_warehouse(self) -> str:
        return self.warehouse_url or f"file://{self.root / 'iceberg' / 'warehouse'}"

    @property
    def duckdb_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def duckdb_temp_directory(self) -> Path:
        """Where DuckDB spills what does not fit in its memory limit (under the Strata root, not /tmp)."""
        return self.root / "duckdb_tmp"

    @property
    def duckdb_extension_dir(self) -> Path:
        return self.root / "duckdb_extensions"

    @property
    def demo_dir(self) -> Path:
        """Where the demo generator keeps its state and ground truth."""
        return self.root / "demo"

    @property
    def dbt_target(self) -> str:
        """dbt/profiles.yml's output: `prod` (Trino), `local_s3` (DuckDB over an Iceberg warehouse on S3,
        which needs DuckDB's S3 settings) or `local`."""
        if self.warehouse_engine == "trino":
            return "prod"
        return "local_s3" if self.iceberg_warehouse.startswith("s3://") else "local"


SECRET_ENV_PREFIX = "STRATA_SECRET_"


def secret_env_var(name: str) -> str:
    """The variable holding secret `name`: "alerting/webhook_url" -> STRATA_SECRET_ALERTING__WEBHOOK_URL."""
    return SECRET_ENV_PREFIX + name.replace("/", "__").replace("-", "_").replace(".", "_").upper()


def environment_secret(name: str, dotenv_path: Path | None = None, environ: dict[str, str] | None = None) -> str | None:
    """A secret's value from the environment, else from the `.env` file, read at the moment it is needed.

    Secrets are looked up on use rather than copied into settings or resource config, which Dagster
    shows in the UI; `.env` is read here too so `make demo` and pytest see what `dagster dev` loads.
    """
    env = os.environ if environ is None else environ
    var = secret_env_var(name)
    if env.get(var):
        return env[var]
    if dotenv_path is not None and dotenv_path.is_file():
        from dotenv import dotenv_values

        return dotenv_values(dotenv_path).get(var) or None
    return None


def iceberg_secret_property(suffix: str) -> str:
    """The pyiceberg property an environment suffix names: `S3__SECRET_ACCESS_KEY` -> `s3.secret-access-key`.
    Every secret property of pyiceberg is spelled with dots and hyphens, which variable names cannot hold."""
    return suffix.lower().replace("__", ".").replace("_", "-")


def _prefixed(environ: dict[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix) :].lower(): v for k, v in environ.items() if k.startswith(prefix)}


def load_settings(environ: dict[str, str] | None = None) -> StrataSettings:
    """Build settings from the environment (or a given mapping, for tests)."""
    env = dict(os.environ if environ is None else environ)
    strata_env = env.get("STRATA_ENV", "local")
    if strata_env not in ("local", "prod"):
        raise ValueError(f"STRATA_ENV must be 'local' or 'prod', got {strata_env!r}")
    root = Path(env.get("STRATA_ROOT", REPO_ROOT / ".strata")).resolve()
    start = env.get("STRATA_START_DATE")
    engine = env.get("STRATA_WAREHOUSE_ENGINE", "trino" if strata_env == "prod" else "duckdb")
    if engine not in ("duckdb", "trino"):
        raise ValueError(f"STRATA_WAREHOUSE_ENGINE must be 'duckdb' or 'trino', got {engine!r}")
    threads = env.get("STRATA_DUCKDB_THREADS", "2")
    if not threads.isdigit() or int(threads) < 1:
        raise ValueError(f"STRATA_DUCKDB_THREADS must be a whole number >= 1, got {threads!r}")
    executor = env.get("STRATA_EXECUTOR", "k8s" if strata_env == "prod" else "multiprocess")
    if executor not in ("multiprocess", "k8s"):
        raise ValueError(f"STRATA_EXECUTOR must be 'multiprocess' or 'k8s', got {executor!r}")
    return StrataSettings(
        env=strata_env,
        root=root,
        start_date=date.fromisoformat(start) if start else default_start_date(),
        source_url=env.get("STRATA_SOURCE_URL"),
        source_password_secret=env.get("STRATA_SOURCE_PASSWORD_SECRET", ""),
        landing_url=env.get("STRATA_LANDING_URL"),
        s3_endpoint_url=env.get("STRATA_S3_ENDPOINT_URL"),
        s3_region=env.get("STRATA_S3_REGION", "us-east-1"),
        catalog_uri=env.get("STRATA_CATALOG_URI"),
        warehouse_url=env.get("STRATA_ICEBERG_WAREHOUSE"),
        # e.g. STRATA_ICEBERG_S3__ENDPOINT -> s3.endpoint (double underscore stands for the dot)
        catalog_properties={k.replace("__", "."): v for k, v in _prefixed(env, "STRATA_ICEBERG_PROP_").items()},
        # e.g. STRATA_ICEBERG_SECRET_PROP_S3__SECRET_ACCESS_KEY=iceberg/s3_secret_access_key -> the property
        # s3.secret-access-key read from secret iceberg/s3_secret_access_key (pyiceberg spells these with '-')
        catalog_secret_properties={
            iceberg_secret_property(k): v for k, v in _prefixed(env, "STRATA_ICEBERG_SECRET_PROP_").items()
        },
        trino=_prefixed(env, "STRATA_TRINO_"),
        warehouse_engine=engine,
        duckdb_memory_limit=env.get("STRATA_DUCKDB_MEMORY_LIMIT", "2GB"),
        duckdb_threads=int(threads),
        executor=executor,
        image=env.get("STRATA_IMAGE", ""),
        git_sha=env.get("STRATA_GIT_SHA", ""),
        secrets_backend=env.get("STRATA_SECRETS_BACKEND", "vault" if strata_env == "prod" else "env"),
        dotenv_path=Path(env.get("STRATA_DOTENV", REPO_ROOT / ".env")),
        # e.g. STRATA_VAULT_URL, STRATA_VAULT_AUTH (kubernetes|approle), STRATA_VAULT_ROLE, STRATA_VAULT_ROLE_ID
        vault=_prefixed(env, "STRATA_VAULT_"),
        alert_channels=tuple(c.strip() for c in env.get("STRATA_ALERT_CHANNELS", "log").split(",") if c.strip()),
        alert_webhook_url_secret=env.get("STRATA_ALERT_WEBHOOK_URL_SECRET", "alerting/webhook_url"),
        # e.g. STRATA_SMTP_HOST, STRATA_SMTP_PORT, STRATA_SMTP_FROM, STRATA_SMTP_TO (comma list), STRATA_SMTP_USERNAME
        smtp=_prefixed(env, "STRATA_SMTP_"),
        dagster_ui_url=env.get("STRATA_DAGSTER_UI_URL", "http://localhost:3000" if strata_env == "local" else ""),
        # e.g. STRATA_WEATHER_URL, STRATA_WEATHER_LOCATIONS (comma list of ids), STRATA_WEATHER_AUTH_SECRET
        weather=_prefixed(env, "STRATA_WEATHER_"),
        outputs_url=env.get("STRATA_OUTPUTS_URL"),
        mlflow_tracking_uri=env.get("STRATA_MLFLOW_TRACKING_URI", ""),
        openlineage_url=env.get("STRATA_OPENLINEAGE_URL", ""),
        openlineage_file=env.get("STRATA_OPENLINEAGE_FILE", ""),
        openlineage_namespace=env.get("STRATA_OPENLINEAGE_NAMESPACE", "strata"),
        openlineage_api_key_secret=env.get("STRATA_OPENLINEAGE_API_KEY_SECRET", ""),
        metrics_textfile=env.get("STRATA_METRICS_TEXTFILE", ""),
        dbt_docs_url=env.get("STRATA_DBT_DOCS_URL", DEFAULT_DBT_DOCS_URL),
    )


# Shorter "secrets" (flags such as "1" or "true") would mangle every message they were scrubbed from.
MIN_SECRET_LENGTH = 4
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
# Strata's own variables that hold a secret's NAME or the backend's name, not a secret: masking
# "vault" or "source_db/password" everywhere would only garble messages.
SECRET_REFERENCE = re.compile(r"STRATA_(?!SECRET_)(?:\w+_SECRET|ICEBERG_SECRET_PROP_\w+|SECRETS_BACKEND)")


def secret_values(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Values of environment variables whose names look secret, to scrub from audit records and
    alerts. The set is open-ended (any credential a resource was given sits in some variable), so it
    is read from the whole environment; a test passes its own mapping."""
    env = os.environ if environ is None else environ
    return frozenset(
        value.strip()
        for name, value in env.items()
        if SECRET_NAME.search(name) and not SECRET_REFERENCE.fullmatch(name) and len(value.strip()) >= MIN_SECRET_LENGTH
    )
