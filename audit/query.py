"""Narrowing the audit trail: the filters of the `audit` CLI, shared by both of its sources."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from audit.record import AuditRecord


@dataclass(frozen=True)
class AuditFilter:
    """What an auditor narrows the trail by; every criterion given must hold."""

    asset: str | None = None
    partition: str | None = None
    run_id: str | None = None
    status: str | None = None
    since: datetime | None = None  # on start time, inclusive
    until: datetime | None = None  # on start time, exclusive

    def matches(self, record: AuditRecord) -> bool:
        if self.run_id and record.run_id != self.run_id:
            return False
        if self.status and record.status != self.status.upper():
            return False
        if self.asset and self.asset not in record.asset_keys:
            return False
        if self.partition and not any(partition_matches(p, self.partition) for p in record.partitions):
            return False
        if self.since and (record.start_time is None or record.start_time < self.since):
            return False
        return not (self.until and (record.start_time is None or record.start_time >= self.until))


def partition_matches(recorded: str, wanted: str) -> bool:
    """Whether a recorded partition (a key or a "start..end" range) covers `wanted`.

    Keys compare by prefix, so a day (`2026-10-03`) finds the hourly runs of that day
    (`2026-10-03-05:00`); partition keys are ISO-like, so a range check is a string comparison.
    """
    n = len(wanted)
    if ".." in recorded:
        start, _, end = recorded.partition("..")
        return start[:n] <= wanted <= end[:n]
    return recorded[:n] == wanted and (len(recorded) == n or not recorded[n].isalnum())
