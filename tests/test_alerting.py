"""Alert channels against real local servers (webhook, SMTP, Vault on 127.0.0.1), and the alert sensors.

The servers are tiny stand-ins that speak just enough of each protocol for the real clients
(urllib, smtplib, hvac) to run their normal code paths. `tests/test_freshness.py` reuses them.
"""

from __future__ import annotations

import base64
import json
import logging
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path

import dagster as dg
import pytest

from assets.bronze.contracts import oltp_contracts
from assets.bronze.oltp import build_oltp_asset
from audit.metadata import NOT_RUN_TAG
from resources.alerting import Alert, AlertingResource, webhook_payload
from resources.iceberg import IcebergCatalog
from resources.ingestion_guard import IngestionGuard
from resources.redaction import scrub
from resources.secrets import SecretNotFoundError, SecretsResource, vault_location
from resources.source_db import SourceDatabase
from sensors.alert_sensors import (
    CHECK_FAILURE_SENSOR,
    NOT_RUN_SENSOR,
    RUN_FAILURE_SENSOR,
    build_check_failure_alert_sensor,
    build_not_run_alert_sensor,
    build_run_failure_alert_sensor,
)
from tests.local_http import HOST, QuietHandler, serve_http
from tests.test_bronze_oltp import CREATE, execute, row
from tests.test_bronze_telemetry import FIRST_HOUR, run_hours

WEBHOOK_SECRET_VAR = "STRATA_SECRET_ALERTING__WEBHOOK_URL"


# --- local servers ------------------------------------------------------------------------------------


@dataclass
class WebhookServer:
    url: str
    received: list[dict] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    """An HTTP server on 127.0.0.1 that records every JSON body POSTed to it."""
    state = WebhookServer(url="")

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
            self.send_response(state.status)
            self.end_headers()

    with serve_http(Handler) as server:
        state.url = f"http://{HOST}:{server.server_address[1]}/hooks/T000/B000/secret-token"
        yield state


@dataclass
class SmtpSink:
    port: int
    messages: list[dict] = field(default_factory=list)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A minimal SMTP server on 127.0.0.1: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT; stores each message."""
    state = SmtpSink(port=0)

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            envelope: dict = {"rcpt": [], "auth": None}
            self.reply("220 sink ESMTP")
            while line := self.rfile.readline():
                command = line.decode().rstrip("\r\n")
                verb = command.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    self.reply("250-sink")
                    self.reply("250 AUTH PLAIN")
                elif verb == "HELO":
                    self.reply("250 sink")
                elif verb == "AUTH":
                    _, user, password = base64.b64decode(command.split()[2]).split(b"\0")
                    envelope["auth"] = (user.decode(), password.decode())
                    self.reply("235 2.7.0 Authentication successful")
                elif verb == "MAIL":
                    envelope["from"] = command[10:]
                    self.reply("250 OK")
                elif verb == "RCPT":
                    envelope["rcpt"].append(command[8:])
                    self.reply("250 OK")
                elif verb == "DATA":
                    self.reply("354 End data with <CR><LF>.<CR><LF>")
                    data = b""
                    while (chunk := self.rfile.readline()) != b".\r\n":
                        data += chunk[1:] if chunk.startswith(b"..") else chunk
                    state.messages.append({**envelope, "message": message_from_bytes(data)})
                    self.reply("250 OK queued")
                elif verb == "QUIT":
                    self.reply("221 Bye")
                    return
                else:
                    self.reply("250 OK")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class VaultServer:
    url: str
    secrets: dict[str, dict[str, str]]  # "<mount>/<path>" -> data
    role_id: str = "strata-role"
    secret_id: str = "s3cr3t-id"
    k8s_jwt: str = "service-account-jwt"
    token: str = "hvs.test-token-0123456789"
    logins: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)


@pytest.fixture
def vault_server() -> Iterator[VaultServer]:
    """The Vault endpoints hvac uses here: AppRole and Kubernetes login, KV v2 read (token checked)."""
    state = VaultServer(url="", secrets={})

    class Handler(QuietHandler):
        def answer(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            auth = {"client_token": state.token, "accessor": "acc", "policies": ["strata"], "lease_duration": 3600}
            if self.path == "/v1/auth/approle/login":
                ok = body.get("role_id") == state.role_id and body.get("secret_id") == state.secret_id
            elif self.path == "/v1/auth/kubernetes/login":
                ok = body.get("role") == "strata" and body.get("jwt") == state.k8s_jwt
            else:
                return self.answer(404, {"errors": []})
            state.logins.append(self.path)
            return self.answer(200, {"auth": auth}) if ok else self.answer(400, {"errors": ["invalid credentials"]})

        def do_GET(self) -> None:
            if self.headers.get("X-Vault-Token") != state.token:
                return self.answer(403, {"errors": ["permission denied"]})
            mount, _, path = self.path.split("?")[0].removeprefix("/v1/").partition("/data/")
            state.reads.append(f"{mount}/{path}")
            data = state.secrets.get(f"{mount}/{path}")
            if data is None:
                return self.answer(404, {"errors": []})
            metadata = {"version": 1, "deletion_time": "", "destroyed": False, "created_time": "2026-11-01T00:00:00Z"}
            return self.answer(200, {"data": {"data": data, "metadata": metadata}})

    with serve_http(Handler) as server:
        state.url = f"http://{HOST}:{server.server_address[1]}"
        yield state


def env_secrets(tmp_path: Path, **values: str) -> SecretsResource:
    """An env-backend secrets resource whose values come from a `.env` file in tmp_path."""
    dotenv = tmp_path / ".env"
    dotenv.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return SecretsResource(backend="env", dotenv_path=str(dotenv))


def webhook_alerting(tmp_path: Path, url: str, **kwargs) -> AlertingResource:
    return AlertingResource(
        secrets=env_secrets(tmp_path, STRATA_SECRET_ALERTING__WEBHOOK_URL=url), channels=["webhook"], **kwargs
    )


BREACH = Alert(
    kind="freshness_breach",
    title="gold/kpi_daily is late",
    details="should be ready by 06:00 UTC",
    asset="gold/kpi_daily",
    partition="2026-11-01",
    url="http://localhost:3000/assets/gold/kpi_daily",
    facts={"Late since": "2026-11-02 06:00 UTC"},
)


# --- redaction and payloads -----------------------------------------------------------------------------


def test_scrub_masks_url_passwords_and_key_value_secrets():
    text = (
        "could not connect to postgresql://strata:hunter2@db:5432/oltp; "
        "password=hunter2 token: abc123 hvs.CAESIJ0123456789abcdef https://hooks.slack.com/services/T0/B0/XyZ"
    )
    clean = scrub(text)
    assert "hunter2" not in clean and "abc123" not in clean and "CAESIJ" not in clean and "XyZ" not in clean
    assert "postgresql://strata:***@db:5432/oltp" in clean
    assert scrub("s3://bucket/key and http://host/path") == "s3://bucket/key and http://host/path"


def test_webhook_payload_is_slack_compatible_with_structured_fields():
    payload = webhook_payload(BREACH, "prod", sent_at=__import__("datetime").datetime(2026, 11, 2, 7))
    assert payload["text"].startswith(":hourglass: [strata prod] Freshness breach: gold/kpi_daily is late")
    assert all(block["type"] in ("section", "context") for block in payload["blocks"])
    fields = [f["text"] for block in payload["blocks"] for f in block.get("fields", [])]
    assert "*Asset*\ngold/kpi_daily" in fields and "*Partition*\n2026-11-01" in fields
    assert payload["alert"]["kind"] == "freshness_breach"
    assert payload["alert"]["asset"] == "gold/kpi_daily"
    assert payload["alert"]["facts"] == {"Late since": "2026-11-02 06:00 UTC"}
    json.dumps(payload)  # serialisable as is


# --- channels -------------------------------------------------------------------------------------------------


def test_webhook_channel_posts_the_alert_to_the_url_from_secrets(tmp_path, webhook_server):
    alerting = webhook_alerting(tmp_path, webhook_server.url, environment="local")
    assert alerting.send(BREACH) == {"webhook": True}
    [request] = webhook_server.received
    assert request["path"] == "/hooks/T000/B000/secret-token"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["json"]
    assert body["text"] == ":hourglass: [strata local] Freshness breach: gold/kpi_daily is late"
    assert body["alert"]["url"] == "http://localhost:3000/assets/gold/kpi_daily"
    assert body["alert"]["details"] == "should be ready by 06:00 UTC"


def test_webhook_url_from_the_environment_wins_over_dotenv(tmp_path, webhook_server, monkeypatch):
    monkeypatch.setenv(WEBHOOK_SECRET_VAR, webhook_server.url)
    alerting = webhook_alerting(tmp_path, "http://127.0.0.1:9/never-used")
    assert alerting.send(BREACH) == {"webhook": True}
    assert len(webhook_server.received) == 1


def test_alerts_are_redacted_before_they_leave(tmp_path, webhook_server):
    alerting = webhook_alerting(tmp_path, webhook_server.url)
    leaky = Alert(kind="run_failure", title="load failed", details="OperationalError: postgresql://u:pw123@h/db")
    alerting.send(leaky)
    body = json.dumps(webhook_server.received[0]["json"])
    assert "pw123" not in body and "postgresql://u:***@h/db" in body


def test_smtp_channel_delivers_a_mail_with_the_password_from_secrets(tmp_path, smtp_sink):
    alerting = AlertingResource(
        secrets=env_secrets(tmp_path, STRATA_SECRET_ALERTING__SMTP_PASSWORD="mail-pass"),
        channels=["smtp"],
        environment="prod",
        smtp_host="127.0.0.1",
        smtp_port=smtp_sink.port,
        smtp_from="strata@example.org",
        smtp_to=["oncall@example.org", "data@example.org"],
        smtp_username="strata",
    )
    assert alerting.send(BREACH) == {"smtp": True}
    [mail] = smtp_sink.messages
    assert mail["auth"] == ("strata", "mail-pass")
    assert mail["rcpt"] == ["<oncall@example.org>", "<data@example.org>"]
    message = mail["message"]
    assert message["Subject"] == "[strata prod] Freshness breach: gold/kpi_daily is late"
    body = message.get_payload()
    assert "Asset: gold/kpi_daily" in body and "Late since: 2026-11-02 06:00 UTC" in body
    assert "Open in Dagster: http://localhost:3000/assets/gold/kpi_daily" in body


def test_log_channel_is_the_default(tmp_path, caplog):
    alerting = AlertingResource(secrets=SecretsResource())
    with caplog.at_level(logging.INFO):
        assert alerting.send(BREACH) == {"log": True}
    [record] = [r for r in caplog.records if "ALERT [freshness_breach]" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "Freshness breach: gold/kpi_daily is late" in record.getMessage()
    assert "Asset=gold/kpi_daily" in record.getMessage() and "Partition=2026-11-01" in record.getMessage()


def test_a_broken_channel_is_logged_not_raised_and_others_still_deliver(tmp_path, caplog):
    # Port 9 (discard) on 127.0.0.1 refuses the connection; the URL must not appear in the log.
    alerting = AlertingResource(
        secrets=env_secrets(tmp_path, STRATA_SECRET_ALERTING__WEBHOOK_URL="http://127.0.0.1:9/hooks/TOKEN123"),
        channels=["webhook", "log"],
        webhook_timeout_seconds=2,
    )
    with caplog.at_level(logging.INFO):
        assert alerting.send(BREACH) == {"webhook": False, "log": True}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("alert channel webhook failed" in m for m in errors)
    assert not any("TOKEN123" in r.getMessage() for r in caplog.records)


def test_a_missing_webhook_secret_is_a_logged_failure(tmp_path):
    alerting = AlertingResource(secrets=SecretsResource(dotenv_path=str(tmp_path / "none.env")), channels=["webhook"])
    assert alerting.send(BREACH) == {"webhook": False}


# --- secrets -----------------------------------------------------------------------------------------------------


def test_vault_location_splits_names_into_path_and_key():
    assert vault_location("alerting/webhook_url", "strata") == ("strata/alerting", "webhook_url")
    assert vault_location("smtp_password", "strata") == ("strata", "smtp_password")
    with pytest.raises(ValueError):
        vault_location("smtp_password", "")


def test_vault_approle_reads_kv_v2(tmp_path, vault_server):
    vault_server.secrets["secret/strata/alerting"] = {"webhook_url": "https://hooks.example/abc", "other": "x"}
    secrets = SecretsResource(
        backend="vault",
        vault_url=vault_server.url,
        vault_auth="approle",
        vault_role_id=vault_server.role_id,
        dotenv_path=str(env_secrets(tmp_path, STRATA_SECRET_VAULT_SECRET_ID=vault_server.secret_id).dotenv_path),
    )
    assert secrets.get("alerting/webhook_url") == "https://hooks.example/abc"
    assert secrets.get("alerting/other") == "x"
    assert secrets.get_optional("alerting/missing") is None
    with pytest.raises(SecretNotFoundError, match=r"'nothing/here'.*secret/strata/nothing, key here"):
        secrets.get("nothing/here")
    assert vault_server.logins == ["/v1/auth/approle/login"]  # one login, then the token is reused
    assert vault_server.reads.count("secret/strata/alerting") == 1  # one read per secret path


def test_vault_kubernetes_auth_uses_the_service_account_token(tmp_path, vault_server):
    vault_server.secrets["kv/platform/strata"] = {"smtp_password": "from-vault"}
    jwt = tmp_path / "token"
    jwt.write_text(vault_server.k8s_jwt + "\n")
    secrets = SecretsResource(
        backend="vault",
        vault_url=vault_server.url,
        vault_auth="kubernetes",
        vault_role="strata",
        vault_kv_mount="kv",
        vault_path="platform/strata",
        kubernetes_jwt_path=str(jwt),
    )
    assert secrets.get("smtp_password") == "from-vault"
    assert vault_server.logins == ["/v1/auth/kubernetes/login"]


def test_vault_rejects_bad_credentials(tmp_path, vault_server):
    import hvac.exceptions

    secrets = SecretsResource(
        backend="vault",
        vault_url=vault_server.url,
        vault_auth="approle",
        vault_role_id="wrong",
        dotenv_path=str(env_secrets(tmp_path, STRATA_SECRET_VAULT_SECRET_ID="nope").dotenv_path),
    )
    with pytest.raises(hvac.exceptions.InvalidRequest):
        secrets.get("alerting/webhook_url")


def test_alerting_with_the_webhook_url_in_vault(tmp_path, vault_server, webhook_server):
    vault_server.secrets["secret/strata/alerting"] = {"webhook_url": webhook_server.url}
    secrets = SecretsResource(
        backend="vault",
        vault_url=vault_server.url,
        vault_auth="approle",
        vault_role_id=vault_server.role_id,
        dotenv_path=str(env_secrets(tmp_path, STRATA_SECRET_VAULT_SECRET_ID=vault_server.secret_id).dotenv_path),
    )
    assert AlertingResource(secrets=secrets, channels=["webhook"]).send(BREACH) == {"webhook": True}
    assert webhook_server.received[0]["json"]["alert"]["asset"] == "gold/kpi_daily"


# --- alert sensors ------------------------------------------------------------------------------------------------


class SourceDb(dg.ConfigurableResource):
    url: str

    def connect(self) -> None:
        raise ConnectionError(f"could not connect to server: {self.url}\nIs the server running on that host?")


@dg.asset(key=["bronze", "customers"], group_name="bronze")
def failing_extract(source_db: SourceDb) -> None:
    source_db.connect()


def test_run_failure_sensor_alerts_with_run_job_step_and_redacted_error(tmp_path, webhook_server):
    job = dg.define_asset_job("refresh_unpartitioned", selection=[failing_extract])
    defs = dg.Definitions(
        assets=[failing_extract],
        jobs=[job],
        resources={"source_db": SourceDb(url="postgresql://strata:hunter2@db.internal:5432/oltp")},
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("refresh_unpartitioned").execute_in_process(
            instance=instance, raise_on_error=False
        )
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        alerting = webhook_alerting(tmp_path, webhook_server.url, ui_url="http://localhost:3000")
        sensor = build_run_failure_alert_sensor()
        # Resources with nested resources (alerting -> secrets) need the context opened as a context manager.
        with dg.build_run_status_sensor_context(
            sensor_name=RUN_FAILURE_SENSOR,
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=run,
            resources={"alerting": alerting},
        ) as context:
            sensor(context.for_run_failure())
    [request] = webhook_server.received
    alert = request["json"]["alert"]
    assert alert["kind"] == "run_failure"
    assert alert["run_id"] == result.run_id and alert["job"] == "refresh_unpartitioned"
    assert alert["title"] == f"refresh_unpartitioned run {result.run_id[:8]} failed at step bronze__customers"
    assert alert["details"] == (
        "ConnectionError: could not connect to server: postgresql://strata:***@db.internal:5432/oltp"
    )
    assert alert["url"] == f"http://localhost:3000/runs/{result.run_id}"
    assert "hunter2" not in json.dumps(request["json"])


@dg.asset(
    key=["bronze", "payments"],
    group_name="bronze",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=0.01),
)
def always_failing_extract(source_db: SourceDb) -> None:
    source_db.connect()


def test_a_run_that_ran_out_of_retries_alerts_with_the_error_of_its_last_attempt(tmp_path, webhook_server):
    """Dagster records "Exceeded max_retries of 2" as the step's error; the alert must say what failed."""
    job = dg.define_asset_job("refresh_unpartitioned", selection=[always_failing_extract])
    url = "postgresql://strata@db.internal:5432/oltp?password=pl4nted-in-query"
    defs = dg.Definitions(assets=[always_failing_extract], jobs=[job], resources={"source_db": SourceDb(url=url)})
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("refresh_unpartitioned").execute_in_process(
            instance=instance, raise_on_error=False
        )
        [step_failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        assert step_failure.step_failure_data.error.message.startswith("Exceeded max_retries of 2")
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        alerting = webhook_alerting(tmp_path, webhook_server.url)
        with dg.build_run_status_sensor_context(
            sensor_name=RUN_FAILURE_SENSOR,
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
            resources={"alerting": alerting},
        ) as context:
            build_run_failure_alert_sensor()(context.for_run_failure())
    [request] = webhook_server.received
    assert request["json"]["alert"]["details"] == (
        "ConnectionError: could not connect to server: postgresql://strata@db.internal:5432/oltp?password=*** "
        "(exceeded max_retries of 2)"
    )
    assert "pl4nted-in-query" not in json.dumps(request["json"])


@dg.asset(
    key=["gold", "kpi_daily"],
    group_name="gold",
    check_specs=[
        dg.AssetCheckSpec("revenue_matches_payments", asset=["gold", "kpi_daily"], blocking=True),
        dg.AssetCheckSpec("row_count_close_to_yesterday", asset=["gold", "kpi_daily"]),
        dg.AssetCheckSpec("unique_kpi_date", asset=["gold", "kpi_daily"], blocking=True),
    ],
)
def kpi_daily() -> Iterator:
    yield dg.Output(None)
    yield dg.AssetCheckResult(
        check_name="revenue_matches_payments",
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description="revenue differs from payments by 12.5%",
        metadata={"failed_row_count": 3},
    )
    yield dg.AssetCheckResult(check_name="row_count_close_to_yesterday", passed=False)  # not blocking
    yield dg.AssetCheckResult(check_name="unique_kpi_date", passed=True)


def test_check_failure_sensor_alerts_once_per_failed_blocking_check(tmp_path, webhook_server):
    defs = dg.Definitions(assets=[kpi_daily], jobs=[dg.define_asset_job("build_daily", selection=[kpi_daily])])
    alerting = webhook_alerting(tmp_path, webhook_server.url)
    sensor = build_check_failure_alert_sensor()
    with dg.instance_for_test() as instance:
        defs.resolve_job_def("build_daily").execute_in_process(instance=instance, raise_on_error=False)

        def tick(cursor: str | None) -> str:
            with dg.build_sensor_context(
                instance=instance,
                cursor=cursor,
                sensor_name=CHECK_FAILURE_SENSOR,
                resources={"alerting": alerting},
                definitions=defs,
            ) as context:
                return sensor(context).cursor

        cursor = tick(None)  # the first tick starts at the end of the event log: history is not replayed
        assert webhook_server.received == []
        result = defs.resolve_job_def("build_daily").execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success  # the failed blocking check fails the step
        cursor = tick(cursor)
        cursor = tick(cursor)  # nothing new: no repeat
    [request] = webhook_server.received
    alert = request["json"]["alert"]
    assert alert["kind"] == "check_failure"
    assert alert["asset"] == "gold/kpi_daily" and alert["check"] == "revenue_matches_payments"
    assert alert["run_id"] == result.run_id and alert["job"] == "build_daily"
    assert alert["details"] == "revenue differs from payments by 12.5%"
    assert alert["facts"] == {"failed_row_count": "3"}


def test_check_failure_sensor_reads_every_failure_since_its_last_tick_across_history_pages(tmp_path, webhook_server):
    """Seven failed evaluations between two ticks take three pages of history: each alerts once."""
    from sensors.alert_sensors import CHECK_PAGE

    defs = dg.Definitions(assets=[kpi_daily], jobs=[dg.define_asset_job("build_daily", selection=[kpi_daily])])
    alerting = webhook_alerting(tmp_path, webhook_server.url)
    sensor = build_check_failure_alert_sensor()
    with dg.instance_for_test() as instance:

        def tick(cursor: str | None) -> str:
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"alerting": alerting}, definitions=defs
            ) as context:
                return sensor(context).cursor

        job = defs.resolve_job_def("build_daily")
        job.execute_in_process(instance=instance, raise_on_error=False)
        cursor = tick(None)
        runs = [job.execute_in_process(instance=instance, raise_on_error=False).run_id for _ in range(7)]
        assert len(runs) > 2 * CHECK_PAGE
        cursor = tick(cursor)
        tick(cursor)
    assert sorted(r["json"]["alert"]["run_id"] for r in webhook_server.received) == sorted(runs)


def test_a_run_whose_guard_found_the_source_down_alerts_exactly_once(tmp_path, webhook_server):
    """Issue 11, item 12: the run succeeds with every asset not run (no retry inside the run), and the
    not-run sensor sends one alert per such run, on the tick after it, and none for a normal run."""
    contracts = oltp_contracts()
    assets = [build_oltp_asset(contracts["stations"]), build_oltp_asset(contracts["customers"])]
    missing = tmp_path / "oltp.sqlite"
    resources = {
        "source_db": SourceDatabase(url=f"sqlite:///{missing}"),
        "guard": IngestionGuard(data_path=str(tmp_path)),
        "iceberg": IcebergCatalog(uri=f"sqlite:///{tmp_path / 'cat.db'}", warehouse=f"file://{tmp_path / 'wh'}"),
    }
    alerting = webhook_alerting(tmp_path, webhook_server.url, ui_url="http://localhost:3000")
    sensor = build_not_run_alert_sensor()
    with dg.instance_for_test() as instance:

        def tick(cursor: str | None) -> str | None:
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"alerting": alerting}, sensor_name=NOT_RUN_SENSOR
            ) as context:
                return sensor.evaluate_tick(context).cursor

        cursor = tick(None)  # the first tick starts after what already happened
        down = dg.materialize(assets, resources=resources, instance=instance)
        assert down.success and down.get_asset_materialization_events() == []
        assert not any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in down.all_events)
        cursor = tick(cursor)
        cursor = tick(cursor)  # the same run is not alerted twice
        [request] = webhook_server.received
        alert = request["json"]["alert"]
        assert alert["kind"] == "not_run" and alert["run_id"] == down.run_id
        assert (
            alert["title"]
            == f"__ephemeral_asset_job__ run {down.run_id[:8]}: 2 asset(s) not run, a precondition failed"
        )
        assert alert["details"] == (
            f"source sqlite:///{missing} not reachable: "
            f"FileNotFoundError: source database file {missing} does not exist"
        )
        assert alert["facts"]["Not run"] == "bronze/customers, bronze/stations"
        assert alert["url"] == f"http://localhost:3000/runs/{down.run_id}"

        # The source is back: the next run loads, and a run that ran alerts nothing.
        execute(f"sqlite:///{missing}", CREATE.format(ts="TEXT"), row(1, "Bellecour", "2026-10-01 08:00:00.000000"))
        up = dg.materialize(assets[:1], resources=resources, instance=instance)
        assert up.success and len(up.get_asset_materialization_events()) == 1
        # A drop that is not ready yet is lateness, not an outage: the freshness alert covers it.
        late = run_hours(tmp_path / "telemetry", FIRST_HOUR, FIRST_HOUR, instance=instance)
        assert late.success and NOT_RUN_TAG in instance.get_run_by_id(late.run_id).tags
        tick(cursor)
        assert len(webhook_server.received) == 1
