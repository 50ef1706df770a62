"""Where OpenLineage events go: an HTTP endpoint (Marquez or any OpenLineage receiver), a file, or nowhere.

Off by default: with neither `STRATA_OPENLINEAGE_URL` nor `STRATA_OPENLINEAGE_FILE` set, the lineage
sensor does no work at all. Events are sent by the sensor after runs end, never from a step, so an
endpoint that is slow or down delays lineage, not data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg


class OpenLineageSink(dg.ConfigurableResource):
    """An OpenLineage transport of the official client (`openlineage-python`): HTTP and/or a JSON-lines file."""

    url: str = ""  # e.g. http://marquez:5000 (the client posts to <url>/api/v1/lineage)
    file_path: str = ""  # one JSON event per line, appended
    namespace: str = "strata"  # the OpenLineage namespace of Strata's jobs
    timeout_seconds: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.url or self.file_path)

    def emit(self, events: Sequence[Any]) -> int:
        """Send `events` in order through each configured transport; raises when a transport fails, so the
        caller keeps its cursor and sends the batch again (the events' run ids make that idempotent)."""
        if not events or not self.enabled:
            return 0
        from openlineage.client import OpenLineageClient

        for transport in self._transports():
            client = OpenLineageClient(transport=transport)
            for event in events:
                client.emit(event)
            transport.close()
        return len(events)

    def _transports(self) -> list[Any]:
        transports: list[Any] = []
        if self.url:
            from openlineage.client.transport.http import HttpConfig, HttpTransport

            # Failing fast is right here: the sensor retries the whole batch on its next tick.
            config = HttpConfig(url=self.url, timeout=self.timeout_seconds, retry={"total": 0})
            transports.append(HttpTransport(config))
        if self.file_path:
            from openlineage.client.transport.file import FileConfig, FileTransport

            Path(self.file_path).parent.mkdir(parents=True, exist_ok=True)
            transports.append(FileTransport(FileConfig(log_file_path=self.file_path, append=True)))
        return transports
