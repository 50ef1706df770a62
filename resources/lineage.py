"""Where OpenLineage events go: an HTTP endpoint (Marquez or any OpenLineage receiver), a file, or nowhere.

Off by default: with neither `STRATA_OPENLINEAGE_URL` nor `STRATA_OPENLINEAGE_FILE` set, the lineage
sensor does no work at all. Events are sent by the sensor after runs end, never from a step, so an
endpoint that is slow or down delays lineage, not data.

An endpoint's API key is a secret NAME (`STRATA_OPENLINEAGE_API_KEY_SECRET`), read from the secrets
backend when a batch is sent and carried only in the `Authorization: Bearer` header. Credentials written
into the URL itself are never kept: they are cut out before the URL reaches resource config (which the
UI shows), and the sink refuses to send until the key is given by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from resources.redaction import scrub, strip_url_credentials
from resources.secrets import SecretsResource
from resources.settings import StrataSettings


class LineageRefused(Exception):
    """The sink will not send: its configuration is unsafe or incomplete (the message says what to change)."""


class OpenLineageSink(dg.ConfigurableResource):
    """An OpenLineage transport of the official client (`openlineage-python`): HTTP and/or a JSON-lines file."""

    secrets: SecretsResource
    url: str = ""  # e.g. http://marquez:5000 (the client posts to <url>/api/v1/lineage); never credentials
    file_path: str = ""  # one JSON event per line, appended
    namespace: str = "strata"  # the OpenLineage namespace of Strata's jobs
    api_key_secret: str = ""  # a secret NAME: its value is sent as `Authorization: Bearer <key>`
    timeout_seconds: float = 5.0
    # What `build_lineage_sink` cut out of the configured URL (e.g. "user info"); non-empty: refuse to send.
    dropped_url_credentials: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.url or self.file_path)

    def emit(self, events: Sequence[Any]) -> int:
        """Send `events` in order through each configured transport; raises when a transport fails, so the
        caller keeps its cursor and sends the batch again (the events' run ids make that idempotent)."""
        if not events or not self.enabled:
            return 0
        if self.dropped_url_credentials:
            raise LineageRefused(
                f"STRATA_OPENLINEAGE_URL carried credentials ({self.dropped_url_credentials}); they were dropped "
                "so that no secret reaches resource config, and no event is sent. Store the key as a secret and "
                "set STRATA_OPENLINEAGE_API_KEY_SECRET to its name."
            )
        from openlineage.client import OpenLineageClient

        for transport in self._transports():
            client = OpenLineageClient(transport=transport)
            try:
                for event in events:
                    client.emit(event)
            except Exception as error:  # the client's errors may quote the request; the tick log shows them
                raise RuntimeError(scrub(f"OpenLineage {transport.kind} transport failed: {error}")) from None
            finally:
                transport.close()
        return len(events)

    def _transports(self) -> list[Any]:
        transports: list[Any] = []
        if self.url:
            from openlineage.client.transport.http import (
                ApiKeyTokenProvider,
                HttpConfig,
                HttpTransport,
                TokenProvider,
            )

            key = self.secrets.get(self.api_key_secret) if self.api_key_secret else None
            auth = ApiKeyTokenProvider({"apiKey": key}) if key else TokenProvider({})
            # Failing fast is right here: the sensor retries the whole batch on its next tick.
            config = HttpConfig(url=self.url, timeout=self.timeout_seconds, auth=auth, retry={"total": 0})
            transports.append(HttpTransport(config))
        if self.file_path:
            from openlineage.client.transport.file import FileConfig, FileTransport

            Path(self.file_path).parent.mkdir(parents=True, exist_ok=True)
            transports.append(FileTransport(FileConfig(log_file_path=self.file_path, append=True)))
        return transports


def build_lineage_sink(settings: StrataSettings, secrets: SecretsResource) -> OpenLineageSink:
    """The sink of this environment (STRATA_OPENLINEAGE_URL, _FILE, _NAMESPACE, _API_KEY_SECRET), with any
    credentials of the URL cut out before they can reach resource config."""
    url, dropped = strip_url_credentials(settings.openlineage_url)
    return OpenLineageSink(
        secrets=secrets,
        url=url,
        file_path=settings.openlineage_file,
        namespace=settings.openlineage_namespace,
        api_key_secret=settings.openlineage_api_key_secret,
        dropped_url_credentials=", ".join(dropped),
    )
