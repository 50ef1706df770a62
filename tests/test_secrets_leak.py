"""No planted secret reaches STRATA_ROOT: real runs of the real definitions, secrets in every supported form.

Secrets are planted where production keeps them: the source DB password, the Iceberg S3 secret key and
the alert webhook URL (its path is the credential) in Vault (the local stand-in of its HTTP API), the
Vault AppRole secret id in the environment, the Vault session token in Vault's login answer, and a
password written into STRATA_SOURCE_URL (the deprecated form).

An OpenLineage API key is planted in Vault too: the lineage sensor reads it by name and sends it only as
a header to a local receiver, while its file transport writes the same events under STRATA_ROOT.

Four real run processes (`dagster job execute`) on an instance in STRATA_ROOT: an hour of telemetry
(dbt's staging view needs the table), a successful refresh (Bronze from PostgreSQL, dbt), a failing one
(a table the role may no longer read: retried, then failed), and one with the deprecated URL to a
database that is gone (the guard's `not_run`). Then the alert, audit and lineage sensors. Every file under
STRATA_ROOT is read in its own format (SQLite cells and their zlib blobs, Parquet rows, Avro records,
DuckDB tables, gzip, plain bytes), and so are the dbt target and log folders of these runs: none holds
any planted secret.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import secrets as random_tokens
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import dagster as dg
import pytest

from assets.transform.dbt_models import STABLE_TARGETS_DIR
from audit.metadata import NOT_RUN_TAG
from resources.settings import DBT_PROJECT_DIR, REPO_ROOT
from tests.conftest import TEST_START
from tests.local_http import QuietHandler, serve_http
from tests.test_alerting import VaultServer, WebhookServer, vault_server, webhook_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # three real run processes and a dbt build

DAYS = 1
ROLE = "strata_reader_" + random_tokens.token_hex(3)


def planted(kind: str) -> str:
    return f"{kind}-{random_tokens.token_hex(10)}"


# --- the source: a PostgreSQL database whose reader role needs its password -------------------------------


def admin_execute(url: str, *statements: str) -> None:
    import adbc_driver_postgresql.dbapi

    with adbc_driver_postgresql.dbapi.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def admin_query(url: str, statement: str) -> list[tuple]:
    import adbc_driver_postgresql.dbapi

    with adbc_driver_postgresql.dbapi.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchall()


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture
def source(postgres_url: str) -> dict[str, str]:
    """A fresh database and a reader role with a password. The embedded server trusts local connections
    (its pg_hba.conf cannot be reloaded here), so the password is planted and sent, not checked."""
    database = "leak_" + random_tokens.token_hex(4)
    password = planted("source-password")
    admin = with_database(postgres_url, database)
    parts = urlsplit(admin)
    reader = urlunsplit((parts.scheme, f"{ROLE}@{parts.netloc.rpartition('@')[2]}", parts.path, parts.query, ""))
    admin_execute(postgres_url, f"CREATE DATABASE {database}", f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'")
    # Left in place: DROP DATABASE checkpoints, and the embedded server cannot open its own files by
    # absolute path under pytest's private temp folder (its checkpointer PANICs); the names are unique.
    return {"admin": admin, "reader": reader, "password": password, "database": database}


# --- reading every file in its own format ----------------------------------------------------------------


def sqlite_text(path: Path) -> bytes:
    """Every cell of every table, zlib blobs (Dagster's compressed snapshots) decompressed."""
    out = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    if isinstance(cell, bytes):
                        out.append(cell)
                        with contextlib.suppress(zlib.error):
                            out.append(zlib.decompress(cell))
                    elif cell is not None:
                        out.append(str(cell).encode())
    return b"\n".join(out)


def parquet_text(path: Path) -> bytes:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    return (str(parquet.metadata.metadata) + str(parquet.read().to_pylist())).encode()


def avro_text(path: Path) -> bytes:
    from pyiceberg.avro.file import AvroFile
    from pyiceberg.io.pyarrow import PyArrowFileIO

    with AvroFile(PyArrowFileIO().new_input(str(path))) as records:
        return (str(records.header.meta) + str(list(records))).encode()


def duckdb_text(path: Path) -> bytes:
    import duckdb

    out = []
    with duckdb.connect(str(path), read_only=True) as con:
        names = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in names:
            out.append(str(con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()))
        out.append(str(con.execute("SELECT sql FROM duckdb_views()").fetchall()))
    return "\n".join(out).encode()


def readable(path: Path) -> bytes:
    """The file's bytes plus what its format hides from a byte scan (compression, encodings)."""
    raw = path.read_bytes()
    decoded = b""
    if raw.startswith(b"SQLite format 3"):
        decoded = sqlite_text(path)
    elif raw.startswith(b"PAR1"):
        decoded = parquet_text(path)
    elif raw.startswith(b"Obj\x01"):
        decoded = avro_text(path)
    elif path.suffix == ".duckdb":
        decoded = duckdb_text(path)
    elif raw.startswith(b"\x1f\x8b"):
        decoded = gzip.decompress(raw)
    return raw + b"\n" + decoded


def find_secrets(folders: list[Path], planted_values: dict[str, str]) -> list[tuple[str, str]]:
    """(file, which secret) for every planted secret found, in any of its encodings."""
    forms = {
        name: {v.encode(), quote(v, safe="").encode(), json.dumps(v).encode()} for name, v in planted_values.items()
    }
    found, files = [], 0
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            files += 1
            text = readable(path)
            found += [(str(path), name) for name, encodings in forms.items() if any(e in text for e in encodings)]
    assert files > 50, f"only {files} files scanned: the runs did not write what the scan is about"
    return found


# --- the runs ----------------------------------------------------------------------------------------------


def execute_job(job: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    """One real run process, as `dagster job execute` starts it (in-process executor: one process)."""
    command = ["dagster", "job", "execute", "-m", "definitions", "-j", job, "-c", env["RUN_CONFIG"], *extra]
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(f"{job}: {time.monotonic() - started:.1f} s")
    return process


def test_no_planted_secret_reaches_strata_root(
    strata_root: Path,
    source: dict[str, str],
    vault_server: VaultServer,  # noqa: F811
    webhook_server: WebhookServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    began = time.time() - 1  # folders written from here on are this test's (mtime resolution)
    from definitions import build_definitions
    from demo.simulator import DemoConfig, generate
    from resources.settings import load_settings
    from sensors.alert_sensors import RUN_FAILURE_SENSOR
    from sensors.audit_sensor import build_audit_sensor
    from sensors.lineage_sensor import SENSOR_NAME as LINEAGE_SENSOR

    secrets = {
        "source password": source["password"],
        "s3 secret key": planted("s3-secret-key"),
        "webhook token": planted("webhook-token"),
        "vault secret id": planted("vault-secret-id"),
        "vault token": "hvs." + random_tokens.token_hex(16),
        "password in STRATA_SOURCE_URL": planted("url-password"),
        "openlineage api key": planted("openlineage-key"),
    }
    vault_server.secret_id = secrets["vault secret id"]
    vault_server.token = secrets["vault token"]
    webhook_url = webhook_server.url.replace("secret-token", secrets["webhook token"])
    vault_server.secrets.update(
        {
            "secret/strata/source_db": {"password": secrets["source password"]},
            "secret/strata/iceberg": {"s3_secret_access_key": secrets["s3 secret key"]},
            "secret/strata/alerting": {"webhook_url": webhook_url},
            "secret/strata/openlineage": {"api_key": secrets["openlineage api key"]},
        }
    )

    # The demo's source tables, written by the admin; the reader may read them.
    generate(
        DemoConfig(start=TEST_START, days=DAYS, scale=0.01, seed=7),
        source_url=source["admin"],
        landing_root=strata_root / "landing",
        truth_dir=strata_root / "demo",
    )
    admin_execute(source["admin"], f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE}")

    home = strata_root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    run_config = tmp_path / "in_process.yaml"
    run_config.write_text("execution:\n  config:\n    in_process: {}\n")
    environment = {
        "DAGSTER_HOME": str(home),
        "STRATA_SECRETS_BACKEND": "vault",
        "STRATA_VAULT_URL": vault_server.url,
        "STRATA_VAULT_AUTH": "approle",
        "STRATA_VAULT_ROLE_ID": vault_server.role_id,
        "STRATA_SECRET_VAULT_SECRET_ID": secrets["vault secret id"],
        "STRATA_SOURCE_URL": source["reader"],
        "STRATA_SOURCE_PASSWORD_SECRET": "source_db/password",
        "STRATA_ICEBERG_SECRET_PROP_S3__SECRET_ACCESS_KEY": "iceberg/s3_secret_access_key",
        "STRATA_ICEBERG_PROP_S3__REGION": "us-east-1",
        "STRATA_ALERT_CHANNELS": "webhook,log",
        "STRATA_DOTENV": str(tmp_path / "no.env"),
        "STRATA_OPENLINEAGE_FILE": str(strata_root / "lineage" / "events.jsonl"),
        "STRATA_OPENLINEAGE_API_KEY_SECRET": "openlineage/api_key",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RUN_CONFIG": str(run_config)}

    # 0. One hour of telemetry from the landing zone: dbt's staging view needs bronze.telemetry.
    hour = execute_job("load_hourly", env, "--tags", json.dumps({"dagster/partition": f"{TEST_START}-00:00"}))
    assert hour.returncode == 0, hour.stderr[-3000:]
    # 1. A successful extraction: Bronze from PostgreSQL with the password from Vault, then the dbt models.
    first = execute_job("extract_oltp", env)
    assert first.returncode == 0, first.stderr[-3000:]
    with dg.DagsterInstance.get() as instance:  # rows loaded: the password from Vault opened the source
        assert instance.get_latest_materialization_event(dg.AssetKey(["bronze", "payments"])), first.stderr[-3000:]
    models = execute_job("refresh_unpartitioned", env)
    assert models.returncode == 0, models.stderr[-3000:]
    # 2. The reader loses access to one table: a network-class error, retried, then the run fails.
    admin_execute(source["admin"], f"REVOKE SELECT ON payments FROM {ROLE}")
    second = execute_job("extract_oltp", env)
    assert second.returncode != 0
    # 3. The deprecated form (`?password=` in the URL), to a database that is gone: the guard finds the
    # source down and the run ends `not_run`; the reason quotes the URL, which reached the run tag before.
    separator = "&" if "?" in source["reader"] else "?"
    gone = source["reader"].replace(source["database"], source["database"] + "_gone")
    deprecated = f"{gone}{separator}password={secrets['password in STRATA_SOURCE_URL']}"
    third = execute_job("extract_oltp", {**env, "STRATA_SOURCE_URL": deprecated, "STRATA_SOURCE_PASSWORD_SECRET": ""})
    assert third.returncode == 0, third.stderr[-3000:]
    for process in (hour, first, models, second, third):  # the console of each run process
        console = process.stdout + process.stderr
        assert [name for name, value in secrets.items() if value in console] == []

    with dg.DagsterInstance.get() as instance:
        runs = list(reversed(instance.get_runs()))  # oldest first
        assert [run.status for run in runs] == [
            dg.DagsterRunStatus.SUCCESS,
            dg.DagsterRunStatus.SUCCESS,
            dg.DagsterRunStatus.SUCCESS,
            dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.SUCCESS,
        ]
        _, ok, _models, failed, not_run = runs
        loaded = instance.get_latest_materialization_event(dg.AssetKey(["bronze", "payments"]))
        assert loaded is not None and loaded.run_id == ok.run_id
        assert f'database "{source["database"]}_gone" does not exist' in not_run.tags[NOT_RUN_TAG]
        assert "password=" not in not_run.tags[NOT_RUN_TAG]  # the URL in config has no password at all

        # The alert and audit sensors of the real definitions, with their resources from this environment.
        defs = build_definitions(load_settings())
        failure = next(
            record.event_log_entry.dagster_event
            for record in instance.get_records_for_run(failed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        )
        with dg.build_run_status_sensor_context(
            sensor_name=RUN_FAILURE_SENSOR,
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=failed,
            resources={"alerting": defs.resources["alerting"]},
        ) as context:
            defs.resolve_sensor_def(RUN_FAILURE_SENSOR)(context.for_run_failure())
        with dg.build_sensor_context(instance=instance, resources={"iceberg": defs.resources["iceberg"]}) as context:
            build_audit_sensor()(context)
        # The lineage sensor, to a receiver that records the Authorization header of each POST.
        authorizations: list[str | None] = []

        class Receiver(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                authorizations.append(self.headers.get("Authorization"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        with serve_http(Receiver) as server:
            monkeypatch.setenv("STRATA_OPENLINEAGE_URL", f"http://127.0.0.1:{server.server_address[1]}")
            lineage_defs = build_definitions(load_settings())
            with dg.build_sensor_context(
                instance=instance,
                repository_def=lineage_defs.get_repository_def(),
                resources={name: lineage_defs.resources[name] for name in ("lineage", "iceberg", "warehouse")},
            ) as context:
                lineage_defs.resolve_sensor_def(LINEAGE_SENSOR)(context)
        assert authorizations and set(authorizations) == {f"Bearer {secrets['openlineage api key']}"}
        assert (strata_root / "lineage" / "events.jsonl").stat().st_size > 0  # scanned below

    [alert] = [request["json"]["alert"] for request in webhook_server.received]
    assert webhook_server.received[0]["path"].endswith(secrets["webhook token"])  # the URL came from Vault
    assert "permission denied for table payments" in alert["details"]  # what failed, not only the retry count
    assert "exceeded max_retries of 3" in alert["details"]
    assert [name for name, value in secrets.items() if value in json.dumps(webhook_server.received[0]["json"])] == []

    # dbt writes into a target path kept per multi-asset across runs (partial parsing), or into a one-off
    # folder named after the run when that one is busy: both kinds written by these runs are scanned.
    run_prefixes = tuple(run.run_id[:7] for run in runs)
    stable = DBT_PROJECT_DIR / "target" / STABLE_TARGETS_DIR
    dbt_folders = [
        folder
        for folder in [*(DBT_PROJECT_DIR / "target").iterdir(), *(stable.iterdir() if stable.is_dir() else [])]
        if folder.is_dir()
        and (
            any(f"-{prefix}-" in folder.name for prefix in run_prefixes)
            or (folder.parent == stable and folder.stat().st_mtime >= began)
        )
    ]
    assert dbt_folders, "the successful run's dbt build left no target folder"
    assert find_secrets([strata_root, *dbt_folders], secrets) == []
