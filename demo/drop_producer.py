"""The producer side of the file-drop protocol (DESIGN.md section 5), as an upstream system does it.

Data files first, then `_manifest.json` (name, rows, bytes and sha256 of every file), then an empty
`_READY` marker LAST, so a reader acting on `_READY` never sees a half-written drop. A re-delivery
removes the old `_READY` before touching anything. Writes go through the landing zone, so the same
producer fills a local folder or an S3 prefix.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from assets.drops.protocol import MANIFEST_NAME, READY_NAME, drop_prefix, manifest_partition
from resources.landing import LandingZone

if TYPE_CHECKING:
    import pyarrow as pa

PART_NAME_FORMAT = "part-{index:05d}.parquet"


def parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def build_manifest(
    dataset: str, hour_start: datetime, files: dict[str, tuple[bytes, int]], schema_version: int
) -> dict:
    """The manifest for data files given as {name: (bytes, rows)}; `created_at` is the hour's end, so
    re-generating the same data gives byte-identical manifests."""
    return {
        "dataset": dataset,
        "schema_version": schema_version,
        "partition": manifest_partition(hour_start),
        "created_at": (hour_start.replace(tzinfo=UTC) + timedelta(hours=1)).isoformat(),
        "files": [
            {"name": name, "rows": rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, (data, rows) in files.items()
        ],
    }


def write_drop(
    landing: LandingZone | Path,
    dataset: str,
    hour_start: datetime,
    tables: list[pa.Table],
    *,
    schema_version: int = 1,
) -> str:
    """Write one complete drop for the hour starting at `hour_start`; return its key prefix."""
    zone = landing if isinstance(landing, LandingZone) else LandingZone(root=str(landing))
    prefix = drop_prefix(dataset, hour_start)
    zone.delete([prefix + READY_NAME])
    files = {PART_NAME_FORMAT.format(index=i): (parquet_bytes(t), t.num_rows) for i, t in enumerate(tables)}
    for name, (data, _) in files.items():
        zone.write_bytes(prefix + name, data)
    manifest = build_manifest(dataset, hour_start, files, schema_version)
    zone.write_bytes(prefix + MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
    zone.write_bytes(prefix + READY_NAME, b"")
    return prefix
