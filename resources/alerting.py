"""Alert delivery: log (local default), a JSON webhook with a Slack-compatible payload, and e-mail.

Dagster OSS has no alert delivery, so the alert sensors (`sensors/alert_sensors.py`,
`sensors/freshness_sensor.py`) build an `Alert` and hand it to this resource. Sending never raises:
a broken channel is logged and reported in the return value, so a sensor tick is never lost to an
unreachable mail server. Everything sent is passed through `resources.redaction.scrub` first, since
error messages may quote connection URLs, credentials or secret values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

import dagster as dg

from resources.redaction import scrub
from resources.secrets import SecretsResource
from resources.settings import StrataSettings

AlertKind = Literal[
    "run_failure", "check_failure", "freshness_breach", "freshness_recovered", "not_run", "model_retrained"
]
CHANNELS = ("log", "webhook", "smtp")

HEADLINES: dict[str, tuple[str, str]] = {  # kind -> (emoji for Slack, words for subjects)
    "run_failure": (":red_circle:", "Run failed"),
    "check_failure": (":no_entry:", "Blocking check failed"),
    "freshness_breach": (":hourglass:", "Freshness breach"),
    "freshness_recovered": (":white_check_mark:", "Freshness recovered"),
    "not_run": (":warning:", "Ingestion did not run"),
    "model_retrained": (":robot_face:", "Demand model retrained"),
}
MAX_TEXT = 2900  # Slack rejects section text over 3000 characters


@dataclass(frozen=True)
class Alert:
    """One thing a person must know about, with the facts needed to act on it."""

    kind: AlertKind
    title: str
    details: str = ""
    asset: str | None = None
    check: str | None = None
    run_id: str | None = None
    job: str | None = None
    partition: str | None = None
    url: str | None = None
    facts: Mapping[str, str] = field(default_factory=dict)

    def redacted(self) -> Alert:
        return Alert(
            kind=self.kind,
            title=scrub(self.title),
            details=scrub(self.details),
            asset=self.asset,
            check=self.check,
            run_id=self.run_id,
            job=self.job,
            partition=self.partition,
            url=self.url,
            facts={k: scrub(str(v)) for k, v in self.facts.items()},
        )

    @property
    def headline(self) -> str:
        return f"{HEADLINES[self.kind][1]}: {self.title}"

    def labelled_facts(self) -> list[tuple[str, str]]:
        """The alert's identifying fields and extra facts, in display order, empty ones left out."""
        named = [
            ("Asset", self.asset),
            ("Check", self.check),
            ("Partition", self.partition),
            ("Job", self.job),
            ("Run", self.run_id),
        ]
        return [(k, v) for k, v in named if v] + [(k, str(v)) for k, v in self.facts.items() if v not in (None, "")]


def webhook_payload(alert: Alert, environment: str, sent_at: datetime) -> dict:
    """Slack-compatible message (`text` + `blocks`) plus the structured alert under `alert` for other consumers."""
    emoji = HEADLINES[alert.kind][0]
    text = f"{emoji} [strata {environment}] {alert.headline}"
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text[:MAX_TEXT]}*"}}]
    if alert.details:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": alert.details[:MAX_TEXT]}})
    facts = alert.labelled_facts()
    if facts:
        blocks.append(
            {
                "type": "section",
                # Slack allows at most 10 fields per section.
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:1900]} for k, v in facts[:10]],
            }
        )
    if alert.url:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{alert.url}|Open in Dagster>"}]})
    structured = {
        **asdict(alert),
        "facts": dict(alert.facts),
        "environment": environment,
        "sent_at": sent_at.isoformat(),
    }
    return {"text": text, "blocks": blocks, "alert": structured}


def email_message(alert: Alert, environment: str, sender: str, recipients: list[str]):
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = f"[strata {environment}] {alert.headline}"[:200]
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    lines = [alert.headline, ""]
    if alert.details:
        lines += [alert.details, ""]
    lines += [f"{k}: {v}" for k, v in alert.labelled_facts()]
    if alert.url:
        lines += ["", f"Open in Dagster: {alert.url}"]
    message.set_content("\n".join(lines) + "\n")
    return message


class AlertingResource(dg.ConfigurableResource):
    """Sends alerts to the configured channels; the webhook URL and SMTP password come from `secrets`.

    The webhook URL is a secret because for Slack and most chat tools the URL is the credential.
    """

    secrets: SecretsResource
    channels: list[str] = ["log"]  # any of CHANNELS
    environment: str = "local"
    ui_url: str = ""
    webhook_url_secret: str = "alerting/webhook_url"
    webhook_timeout_seconds: float = 10.0
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "strata@localhost"
    smtp_to: list[str] = []
    smtp_username: str = ""
    smtp_password_secret: str = "alerting/smtp_password"
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_timeout_seconds: float = 10.0

    def link(self, path: str) -> str | None:
        """A link into the Dagster UI (`/runs/<id>`, `/assets/<key>`), or None when no UI URL is configured."""
        return f"{self.ui_url.rstrip('/')}/{path.lstrip('/')}" if self.ui_url else None

    def send(self, alert: Alert) -> dict[str, bool]:
        """Deliver to every channel; returns channel -> delivered. Never raises: failures are logged."""
        alert = alert.redacted()
        logger = dg.get_dagster_logger("strata.alerts")
        delivered = {}
        for channel in self.channels:
            try:
                if channel not in CHANNELS:
                    raise ValueError(f"unknown alert channel {channel!r}; use one of {CHANNELS}")
                getattr(self, f"_send_{channel}")(alert)
                delivered[channel] = True
            except Exception as error:  # an alert channel must never take the sensor down
                delivered[channel] = False
                logger.error(f"alert channel {channel} failed for {alert.kind} '{alert.title}': {self._safe(error)}")
        return delivered

    def _safe(self, error: Exception) -> str:
        # The webhook URL is a credential: read through `secrets`, it is registered and masked by value.
        return scrub(f"{type(error).__name__}: {error}")

    def _send_log(self, alert: Alert) -> None:
        facts = ", ".join(f"{k}={v}" for k, v in alert.labelled_facts())
        level = "info" if alert.kind in ("freshness_recovered", "model_retrained") else "warning"
        text = f"ALERT [{alert.kind}] {alert.headline}" + (f" -- {alert.details}" if alert.details else "")
        getattr(dg.get_dagster_logger("strata.alerts"), level)(text + (f" ({facts})" if facts else ""))

    def _send_webhook(self, alert: Alert) -> None:
        import urllib.request

        url = self.secrets.get(self.webhook_url_secret)
        body = json.dumps(webhook_payload(alert, self.environment, datetime.now(UTC))).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "strata-alerts"}
        )
        with urllib.request.urlopen(request, timeout=self.webhook_timeout_seconds) as response:
            if not 200 <= response.status < 300:
                raise RuntimeError(f"webhook answered HTTP {response.status}")

    def _send_smtp(self, alert: Alert) -> None:
        if not self.smtp_host or not self.smtp_to:
            raise ValueError("the smtp channel needs smtp_host and smtp_to (STRATA_SMTP_HOST, STRATA_SMTP_TO)")
        self._deliver(email_message(alert, self.environment, self.smtp_from, list(self.smtp_to)))

    def send_document(self, subject: str, text: str, attachments: Sequence[tuple[str, bytes, str]] = ()) -> bool:
        """E-mail a document (the weekly report) with attachments (file name, bytes, MIME type) through the
        SMTP channel. False, and logged, when smtp is not a configured channel or delivery fails: a
        published report is not lost because a mail server is down."""
        logger = dg.get_dagster_logger("strata.alerts")
        if "smtp" not in self.channels or not self.smtp_host or not self.smtp_to:
            logger.info(f"'{subject}' not e-mailed: the smtp channel is not configured")
            return False
        from email.message import EmailMessage

        message = EmailMessage()
        message["Subject"] = scrub(f"[strata {self.environment}] {subject}")[:200]
        message["From"] = self.smtp_from
        message["To"] = ", ".join(self.smtp_to)
        message.set_content(scrub(text))
        for name, data, mime in attachments:
            maintype, _, subtype = mime.partition("/")
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        try:
            self._deliver(message)
        except Exception as error:  # the report is published either way
            logger.error(f"'{subject}' not e-mailed: {self._safe(error)}")
            return False
        return True

    def _deliver(self, message) -> None:
        import smtplib

        smtp_class = smtplib.SMTP_SSL if self.smtp_ssl else smtplib.SMTP
        with smtp_class(self.smtp_host, self.smtp_port, timeout=self.smtp_timeout_seconds) as smtp:
            if self.smtp_starttls:
                smtp.starttls()
            if self.smtp_username:
                smtp.login(self.smtp_username, self.secrets.get(self.smtp_password_secret))
            smtp.send_message(message)


def build_alerting_resource(settings: StrataSettings, secrets: SecretsResource) -> AlertingResource:
    """Alert channels for this environment (`STRATA_ALERT_CHANNELS`, `STRATA_SMTP_*`); `log` by default."""
    unknown = set(settings.alert_channels) - set(CHANNELS)
    if unknown:
        raise ValueError(f"STRATA_ALERT_CHANNELS has unknown channel(s) {sorted(unknown)}; use {', '.join(CHANNELS)}")
    smtp = settings.smtp
    return AlertingResource(
        secrets=secrets,
        channels=list(settings.alert_channels),
        environment=settings.env,
        ui_url=settings.dagster_ui_url,
        webhook_url_secret=settings.alert_webhook_url_secret,
        smtp_host=smtp.get("host", ""),
        smtp_port=int(smtp.get("port", "25")),
        smtp_from=smtp.get("from", "strata@localhost"),
        smtp_to=[to.strip() for to in smtp.get("to", "").split(",") if to.strip()],
        smtp_username=smtp.get("username", ""),
        smtp_password_secret=smtp.get("password_secret", "alerting/smtp_password"),
        smtp_starttls=smtp.get("starttls", "false").lower() in ("1", "true", "yes"),
        smtp_ssl=smtp.get("ssl", "false").lower() in ("1", "true", "yes"),
    )
