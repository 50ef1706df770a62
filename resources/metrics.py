"""Where the platform's Prometheus metrics go: a file for node-exporter's textfile collector, or nowhere.

Off by default; `STRATA_METRICS_TEXTFILE` (e.g. /var/lib/node_exporter/textfile_collector/strata.prom)
turns the metrics sensor on. The file is replaced atomically, as the collector requires: it never reads
half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dagster as dg


class MetricsTextfile(dg.ConfigurableResource):
    """A `.prom` file in the Prometheus text format, rewritten whole on every metrics tick."""

    path: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def write(self, text: str) -> None:
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A temporary file in the same folder, renamed over the target: the collector only picks up `*.prom`.
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                out.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
