"""The landing-zone file-drop protocol (DESIGN.md section 5), shared by the producer and the platform.

A drop is a prefix `<dataset>/dt=YYYY-MM-DD/hour=HH/` holding data files, then `_manifest.json`
(name, rows, bytes, sha256 of every file), then an empty `_READY` marker written LAST: a reader that
only acts on `_READY` never sees a half-written drop. Every file appears by atomic rename.

Kept free of heavy imports (pyarrow is imported only when writing) so the platform can import the
constants cheaply.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

MANIFEST_NAME = "_manifest.json"
READY_NAME = "_READY"
PART_NAME_FORMAT = "part-{index:05d}.parquet"
TEMP_PREFIX = ".tmp-"


def format_dt(dt: date | str) -> str:
    """Partition date as text, `YYYY-MM-DD`."""
    return dt if isinstance(dt, str) else dt.isoformat()


def format_hour(hour: int | str) -> str:
    """Partition hour as two-digit text, `00`..`23`."""
    return f"{int(hour):02d}"


def drop_prefix(dataset: str, dt: date | str, hour: int | str) -> str:
    """Relative prefix of one hourly drop, e.g. `telemetry/dt=2026-10-01/hour=05`."""
    return f"{dataset}/dt={format_dt(dt)}/hour={format_hour(hour)}"


def hour_end_iso(dt: date | str, hour: int | str) -> str:
    """ISO UTC end of the drop's hour: a deterministic `created_at` (the drop is complete then)."""
    start = datetime.combine(date.fromisoformat(format_dt(dt)), datetime.min.time(), tzinfo=UTC)
    return (start + timedelta(hours=int(hour) + 1)).isoformat()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, as recorded in and verified against the manifest."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _replace_atomically(directory: Path, name: str, write: Any) -> Path:
    """Write via a hidden temp name then rename, so the final name only ever holds a complete file."""
    temp = directory / f"{TEMP_PREFIX}{name}"
    write(temp)
    final = directory / name
    os.replace(temp, final)
    return final


def write_drop(
    landing_root: Path,
    dataset: str,
    dt: date | str,
    hour: int | str,
    tables: list[pa.Table],
    *,
    schema_version: int = 1,
) -> Path:
    """Write one drop: a parquet file per table, then the manifest, then `_READY`. Returns the drop dir."""
    import pyarrow.parquet as pq

    directory = Path(landing_root) / drop_prefix(dataset, dt, hour)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / READY_NAME).unlink(missing_ok=True)
    files = []
    for index, table in enumerate(tables):
        name = PART_NAME_FORMAT.format(index=index)
        path = _replace_atomically(directory, name, lambda p, t=table: pq.write_table(t, p, compression="zstd"))
        files.append({"name": name, "rows": table.num_rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    manifest = {
        "dataset": dataset,
        "schema_version": schema_version,
        "partition": {"dt": format_dt(dt), "hour": format_hour(hour)},
        "created_at": hour_end_iso(dt, hour),
        "files": files,
    }
    _replace_atomically(directory, MANIFEST_NAME, lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n"))
    _replace_atomically(directory, READY_NAME, lambda p: p.write_bytes(b""))
    return directory
