"""The landing zone where producers drop files: a local folder (default) or an S3 prefix (prod).

Keys are '/'-separated paths relative to the zone's root (e.g.
`telemetry/dt=2026-10-01/hour=05/_manifest.json`), the same for both backends, so the drop protocol
is implemented once on top of this interface.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg


class LandingZone(dg.ConfigurableResource):
    """Read access to landed files. `root` is a folder path or `file://` URL."""

    root: str

    @property
    def _base(self) -> Path:
        return Path(self.root.removeprefix("file://"))

    def uri(self, key: str) -> str:
        return str(self._base / key)

    def exists(self, key: str) -> bool:
        return (self._base / key).is_file()

    def read_bytes(self, key: str) -> bytes:
        return (self._base / key).read_bytes()

    def list_keys(self, prefix: str) -> list[str]:
        """Keys of the files directly or indirectly under `prefix`, sorted."""
        folder = self._base / prefix
        if not folder.is_dir():
            return []
        return sorted(str(p.relative_to(self._base)) for p in folder.rglob("*") if p.is_file())
