"""Move a drop that failed verification out of the landing area, with an `_ERROR.json` saying why.

The drop is moved whole (copy, then delete) under `quarantine/<original prefix><UTC time>/`, so the
sensor no longer sees it, nothing of it is loaded, and the producer can inspect it or re-deliver.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from assets.drops.protocol import ERROR_NAME
from assets.drops.verification import DropVerificationError
from resources.landing import LandingZone

QUARANTINE_ROOT = "quarantine/"


def quarantine_prefix(drop_prefix: str, at: datetime) -> str:
    return f"{QUARANTINE_ROOT}{drop_prefix}{at:%Y%m%dT%H%M%S%fZ}/"


def quarantine_drop(landing: LandingZone, error: DropVerificationError, run_id: str) -> str:
    """Move `error.prefix` to quarantine and write the reason next to it; return the new prefix."""
    now = datetime.now(UTC)
    target = quarantine_prefix(error.prefix, now)
    moved = landing.move_prefix(error.prefix, target)
    reason = {
        "drop": error.prefix,
        "check": error.check,
        "file": error.file,
        "detail": error.detail,
        "message": str(error),
        "run_id": run_id,
        "quarantined_at": now.isoformat(),
        "files": [key.removeprefix(target) for key in moved],
    }
    landing.write_bytes(target + ERROR_NAME, (json.dumps(reason, indent=2) + "\n").encode())
    return target
