"""Names and paths of the file-drop protocol (DESIGN.md section 5), shared by producers and loaders.

A drop for one hour lives under `<dataset>/dt=YYYY-MM-DD/hour=HH/`; the producer writes the data
files, then `_manifest.json`, then `_READY` last. Kept free of heavy imports: sensors import it.
"""

from __future__ import annotations

import re
from datetime import date, datetime

MANIFEST_NAME = "_manifest.json"
READY_NAME = "_READY"
ERROR_NAME = "_ERROR.json"
HOURLY_PARTITION_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's HourlyPartitionsDefinition key format
DROP_LAYOUT = "dt=YYYY-MM-DD/hour=HH/"
# The folder shape only; the values are checked one by one so the error says which part is wrong.
# ASCII digits only: `\d` would also accept other scripts' digits, which no producer writes.
_DROP_FOLDER = re.compile(r"dt=(?P<dt>[^/]*)/hour=(?P<hour>[^/]*)/")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_HOUR = re.compile(r"[0-9]{2}")


class DropKeyError(ValueError):
    """A landed folder that is not `<dataset>/dt=YYYY-MM-DD/hour=HH/`: no drop of any partition."""

    def __init__(self, prefix: str, reason: str) -> None:
        super().__init__(f"{prefix!r}: {reason}")
        self.prefix, self.reason = prefix, reason


def drop_prefix(dataset: str, hour_start: datetime) -> str:
    """Key prefix (ending in '/') of the drop holding `dataset` for the hour starting at `hour_start`."""
    # isoformat, not %Y: strftime drops the leading zeros of years before 1000 on glibc.
    return f"{dataset}/dt={hour_start.date().isoformat()}/hour={hour_start.hour:02d}/"


def manifest_partition(hour_start: datetime) -> dict[str, str]:
    """The `partition` object a manifest must carry for that hour."""
    return {"dt": f"{hour_start:%Y-%m-%d}", "hour": f"{hour_start:%H}"}


def partition_key(hour_start: datetime) -> str:
    return hour_start.strftime(HOURLY_PARTITION_FORMAT)


def parse_drop_prefix(dataset: str, prefix: str) -> datetime:
    """The hour held by the drop folder `prefix` (ending in '/'), the inverse of `drop_prefix`.

    Landed keys are outside input: anything but the exact layout (a date that does not exist, hour
    24, `hour=5`, `hour=19h`, a nested folder) raises DropKeyError saying which part is wrong, so a
    caller can report the key and carry on instead of failing on it.
    """
    rest = prefix.removeprefix(f"{dataset}/")
    folder = _DROP_FOLDER.fullmatch(rest) if rest != prefix else None
    if folder is None:
        raise DropKeyError(prefix, f"not in a {dataset}/{DROP_LAYOUT} folder")
    day, hour = folder["dt"], folder["hour"]
    try:
        parsed_day = date.fromisoformat(day) if _DATE.fullmatch(day) else None
    except ValueError:
        parsed_day = None
    if parsed_day is None:
        raise DropKeyError(prefix, f"dt={day!r} is not a date YYYY-MM-DD")
    if not _HOUR.fullmatch(hour) or int(hour) > 23:
        raise DropKeyError(prefix, f"hour={hour!r} is not an hour 00..23")
    return datetime(parsed_day.year, parsed_day.month, parsed_day.day, int(hour))
