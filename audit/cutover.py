"""The cut-over view: which migrated tables are in dual run, how many consecutive days they matched their
legacy output, which are ready to cut over and which are cut over.

It is built from the parity reports the parity checks publish to the outputs area
(`parity/<table>/<day>/<run id>/report.json`): they are the release artifacts an auditor signs off on, so
the view says nothing they do not. A day counts by its latest report (a re-run replaces the verdict of its
day); the matching streak runs back from the latest day checked and stops at the first day that differed
or was not checked. A table's state is the one its latest report was checked under.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta

from resources.outputs import OutputsArea

PARITY_FOLDER = "parity"  # where assets/quality/parity_checks.py publishes
REPORT = "report.json"


@dataclass(frozen=True)
class TableCutover:
    table: str
    state: str  # dual-run | cut-over
    days_checked: int
    first_day: str
    last_day: str
    last_day_matched: bool
    consecutive_matching_days: int
    ready_after_days: int
    differing_days: tuple[str, ...]  # days whose latest report differed (or could not compare)

    @property
    def ready_to_cut_over(self) -> bool:
        return self.state == "dual-run" and self.consecutive_matching_days >= self.ready_after_days

    @property
    def status(self) -> str:
        if self.state == "cut-over":
            return "cut over"
        return "ready to cut over" if self.ready_to_cut_over else "dual run"


def latest_reports(outputs: OutputsArea) -> list[dict]:
    """The latest published report of each (table, day)."""
    latest: dict[tuple[str, str], dict] = {}
    for folder in outputs.published_folders(PARITY_FOLDER):
        files = outputs.read_published(folder)
        if not files or REPORT not in files:
            continue
        report = json.loads(files[REPORT])
        key = (report["table"], report["day"])
        if key not in latest or report["checked_at"] >= latest[key]["checked_at"]:
            latest[key] = report
    return list(latest.values())


def table_cutover(table: str, reports: Sequence[dict]) -> TableCutover:
    by_day = {date.fromisoformat(r["day"]): r for r in reports}
    days = sorted(by_day)
    newest = max(reports, key=lambda r: (r["checked_at"], r["day"]))
    streak, day = 0, days[-1]
    while day in by_day and by_day[day]["matched"]:
        streak += 1
        day -= timedelta(days=1)
    return TableCutover(
        table=table,
        state=newest["state"],
        days_checked=len(days),
        first_day=days[0].isoformat(),
        last_day=days[-1].isoformat(),
        last_day_matched=bool(by_day[days[-1]]["matched"]),
        consecutive_matching_days=streak,
        ready_after_days=int(newest.get("ready_after_days", 1)),
        differing_days=tuple(d.isoformat() for d in days if not by_day[d]["matched"]),
    )


def cutover_view(outputs: OutputsArea) -> list[TableCutover]:
    """One line per table that has parity reports, sorted by table."""
    per_table: dict[str, list[dict]] = {}
    for report in latest_reports(outputs):
        per_table.setdefault(report["table"], []).append(report)
    return [table_cutover(table, reports) for table, reports in sorted(per_table.items())]


def format_cutover(view: Sequence[TableCutover]) -> str:
    if not view:
        return "no parity reports yet (they are written by the parity checks of the migrated tables)"
    header = ("table", "status", "consecutive matching days", "needed", "days checked", "last day", "differing days")
    rows = [
        (
            t.table,
            t.status,
            str(t.consecutive_matching_days),
            str(t.ready_after_days),
            str(t.days_checked),
            f"{t.last_day} ({'match' if t.last_day_matched else 'differs'})",
            ", ".join(t.differing_days) or "-",
        )
        for t in view
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in (header, *rows)
    )


def cutover_json(view: Sequence[TableCutover]) -> str:
    return json.dumps(
        [{**asdict(t), "ready_to_cut_over": t.ready_to_cut_over, "status": t.status} for t in view], indent=1
    )
