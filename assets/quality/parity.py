"""Dual-run parity of one day: the governed table's partition against the legacy batch's output.

Both sides are brought to the governed names and to comparable values first (legacy dates and times
parsed by their declared format, renamed codes mapped, numbers as exact integers of 10^-6 units so a
tolerance of 0.005 is exactly 0.005, not a binary float near it). The comparison itself is datacompy's
`PandasCompare` (written as a PROC COMPARE replacement; its polars backend is broken under polars 2):
joined and sorted on the declared key, per-column tolerances. The result says what an auditor signs
off on: row counts, keys missing on either side, duplicated keys, columns out of tolerance and the
first differing rows, as JSON and Markdown.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa

from assets.quality.parity_config import CUT_OVER, ParityColumn, ParityTable

UNITS = Decimal(10) ** 6  # numbers compare as whole millionths: exact for every scale the contracts use
TOP_N = 20  # differing rows kept in a report


class LegacyFileError(ValueError):
    """A legacy output that cannot be read as declared; the message names the file, column and row."""


@dataclass
class ColumnParity:
    column: str
    legacy_column: str
    type: str
    mismatches: int
    max_difference: str | None  # numeric columns: the largest |legacy - new| over matched keys
    abs_tol: float
    rel_tol: float


@dataclass
class ParityResult:
    table: str
    day: str
    state: str
    legacy_file: str
    key: list[str]
    rows_legacy: int
    rows_new: int
    keys_only_in_legacy: list[dict[str, Any]] = field(default_factory=list)
    keys_only_in_new: list[dict[str, Any]] = field(default_factory=list)
    duplicate_keys_legacy: list[dict[str, Any]] = field(default_factory=list)
    duplicate_keys_new: list[dict[str, Any]] = field(default_factory=list)
    columns: list[ColumnParity] = field(default_factory=list)
    differing_rows: int = 0
    top_differences: list[dict[str, Any]] = field(default_factory=list)  # key + {column: {legacy, new}}
    error: str | None = None  # the legacy output is missing or unreadable

    @property
    def columns_out_of_tolerance(self) -> list[str]:
        return [c.column for c in self.columns if c.mismatches]

    @property
    def matched(self) -> bool:
        return self.error is None and not (
            self.keys_only_in_legacy
            or self.keys_only_in_new
            or self.duplicate_keys_legacy
            or self.duplicate_keys_new
            or self.columns_out_of_tolerance
        )

    def summary(self) -> str:
        if self.error:
            return f"{self.table} [{self.day}]: {self.error}"
        if self.matched:
            return f"{self.table} [{self.day}]: {self.rows_new} row(s) match {self.legacy_file}"
        parts = [
            f"{len(self.keys_only_in_legacy)} key(s) only in legacy" if self.keys_only_in_legacy else "",
            f"{len(self.keys_only_in_new)} key(s) only in {self.table}" if self.keys_only_in_new else "",
            f"{len(self.duplicate_keys_legacy)} duplicated key(s) in legacy" if self.duplicate_keys_legacy else "",
            f"{len(self.duplicate_keys_new)} duplicated key(s) in {self.table}" if self.duplicate_keys_new else "",
            *(f"{c.column}: {c.mismatches} row(s) out of tolerance" for c in self.columns if c.mismatches),
        ]
        return f"{self.table} [{self.day}] differs from {self.legacy_file}: " + "; ".join(p for p in parts if p)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "matched": self.matched,
            "columns_out_of_tolerance": self.columns_out_of_tolerance,
            "blocking": self.state == CUT_OVER,
        }


# --- both sides to governed names and comparable values --------------------------------------------


def _units(value: Any) -> float | None:
    """An exact number as whole millionths (float64 holds them exactly below 2**53)."""
    if value is None or value == "":
        return None
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return float((number * UNITS).to_integral_value())


def _day_text(moment: datetime | date) -> str:
    """A date as ISO; a time at midnight is the same date (date/time equivalence), other times stay times."""
    if isinstance(moment, datetime):
        return moment.date().isoformat() if moment.time() == datetime.min.time() else moment.isoformat()
    return moment.isoformat()


def _legacy_value(column: ParityColumn, text: str) -> Any:
    text = text.strip()
    if text == "":
        return None
    if column.type == "text":
        return column.value_map.get(text, text)
    if column.type == "int":
        return int(text)
    if column.type in ("decimal", "float"):
        return _units(Decimal(text))
    moment = datetime.strptime(text, column.format or "")
    return _day_text(moment) if column.type == "date" else moment.isoformat()


def _governed_value(column: ParityColumn, value: Any) -> Any:
    if value is None:
        return None
    if column.type == "text":
        return str(value)
    if column.type == "int":
        return int(value)
    if column.type in ("decimal", "float"):
        return _units(value)
    if column.type == "date":
        return _day_text(value)
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _frame(table: ParityTable, columns: dict[str, list]):
    import pandas as pd

    frame = pd.DataFrame(
        {name: pd.Series(values, dtype=_dtype(table.column(name))) for name, values in columns.items()}
    )
    return frame.sort_values(list(table.key), ignore_index=True)  # a sorted comparison, whatever the file order


def _dtype(column: ParityColumn) -> str:
    return {"int": "Int64", "decimal": "float64", "float": "float64"}.get(column.type, "object")


def legacy_frame(table: ParityTable, data: bytes, file_name: str):
    """The legacy CSV, its columns renamed to the governed names and its values made comparable."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    header = reader.fieldnames or []
    if missing := [c.legacy for c in table.columns if c.legacy not in header]:
        raise LegacyFileError(f"{file_name}: legacy column(s) {missing} missing (header: {header})")
    columns: dict[str, list] = {c.name: [] for c in table.columns}
    for line, row in enumerate(reader, start=2):
        for column in table.columns:
            text = row[column.legacy] or ""
            try:
                columns[column.name].append(_legacy_value(column, text))
            except (ValueError, InvalidOperation) as error:
                raise LegacyFileError(
                    f"{file_name} line {line}: column {column.legacy!r} ({table.table}.{column.name}) value "
                    f"{text!r} is not a {column.type}{f' in format {column.format!r}' if column.format else ''}"
                ) from error
    return _frame(table, columns)


def governed_frame(table: ParityTable, rows: pa.Table):
    """The governed partition's rows, in the same comparable values as the legacy side."""
    if missing := [c.name for c in table.columns if c.name not in rows.column_names]:
        raise LegacyFileError(f"{table.table}: governed column(s) {missing} missing (has {rows.column_names})")
    return _frame(
        table, {c.name: [_governed_value(c, v) for v in rows.column(c.name).to_pylist()] for c in table.columns}
    )


# --- the comparison ---------------------------------------------------------------------------------


def _shown(column: ParityColumn, value: Any) -> Any:
    """A comparable value back in the column's own terms, for the report."""
    if value is None or (isinstance(value, float) and value != value):  # NaN: absent
        return None
    if column.type in ("decimal", "float"):
        return str((Decimal(int(value)) / UNITS).normalize())
    if column.type == "int":
        return int(value)
    return value


def _keys(table: ParityTable, frame) -> list[dict[str, Any]]:
    return [
        {name: _shown(table.column(name), row[name]) for name in table.key}
        for row in frame[list(table.key)].to_dict("records")
    ]


def compare_day(table: ParityTable, day: date, legacy, new, legacy_file: str, top_n: int = TOP_N) -> ParityResult:
    """Compare the legacy output of `day` with the governed partition (both from the functions above)."""
    import datacompy

    key = list(table.key)
    result = ParityResult(
        table=table.table,
        day=day.isoformat(),
        state=table.state,
        legacy_file=legacy_file,
        key=key,
        rows_legacy=len(legacy),
        rows_new=len(new),
        duplicate_keys_legacy=_keys(table, legacy[legacy.duplicated(key, keep="first")]),
        duplicate_keys_new=_keys(table, new[new.duplicated(key, keep="first")]),
    )
    scaled = {c.name: float(UNITS) if c.type in ("decimal", "float") else 1.0 for c in table.columns}
    compared = datacompy.PandasCompare(
        legacy,
        new,
        join_columns=key,
        abs_tol={c.name: c.abs_tol * scaled[c.name] for c in table.columns},
        rel_tol={c.name: c.rel_tol for c in table.columns},
        df1_name="legacy",
        df2_name="new",
        cast_column_names_lower=False,
    )
    result.keys_only_in_legacy = _keys(table, compared.df1_unq_rows.sort_values(key))
    result.keys_only_in_new = _keys(table, compared.df2_unq_rows.sort_values(key))
    stats = {stat["column"]: stat for stat in compared.column_stats}
    value_columns = [c for c in table.columns if c.name not in key]
    for column in value_columns:
        stat = stats[column.name]
        numeric = column.type in ("decimal", "float", "int")
        max_difference = _shown(column, stat["max_diff"]) if numeric and len(compared.intersect_rows) else None
        result.columns.append(
            ColumnParity(
                column=column.name,
                legacy_column=column.legacy,
                type=column.type,
                mismatches=int(stat["unequal_cnt"]),
                max_difference=None if max_difference is None else str(max_difference),
                abs_tol=column.abs_tol,
                rel_tol=column.rel_tol,
            )
        )
    rows = compared.intersect_rows.sort_values(key)
    mismatched = {c.name: ~rows[f"{c.name}_match"].astype(bool) for c in value_columns}
    any_mismatch = rows[key[0]].map(lambda _: False).astype(bool)
    for column_mismatch in mismatched.values():
        any_mismatch |= column_mismatch
    differing = rows[any_mismatch]
    result.differing_rows = len(differing)
    for index, row in differing.head(top_n).iterrows():
        entry = {name: _shown(table.column(name), row[name]) for name in key}
        entry["differences"] = {
            c.name: {"legacy": _shown(c, row[f"{c.name}_legacy"]), "new": _shown(c, row[f"{c.name}_new"])}
            for c in value_columns
            if mismatched[c.name][index]
        }
        result.top_differences.append(entry)
    return result


def compare_legacy_output(
    table: ParityTable, day: date, legacy_data: bytes | None, rows: pa.Table, legacy_file: str, top_n: int = TOP_N
) -> ParityResult:
    """The parity of one day, from the legacy file's bytes (None: no such file) and the governed rows."""

    def not_compared(error: str) -> ParityResult:
        """The day could not be compared at all: a parity error, with the governed row count."""
        return ParityResult(
            table=table.table,
            day=day.isoformat(),
            state=table.state,
            legacy_file=legacy_file,
            key=list(table.key),
            rows_legacy=0,
            rows_new=rows.num_rows,
            error=error,
        )

    if legacy_data is None:
        return not_compared(f"no legacy output {legacy_file} for {day.isoformat()}")
    try:
        legacy = legacy_frame(table, legacy_data, legacy_file)
        new = governed_frame(table, rows)
    except LegacyFileError as error:
        return not_compared(str(error))
    return compare_day(table, day, legacy, new, legacy_file, top_n)


# --- the report -------------------------------------------------------------------------------------


def report_json(result: ParityResult, run_id: str, checked_at: str, ready_after_days: int) -> bytes:
    document = {**result.to_json(), "run_id": run_id, "checked_at": checked_at, "ready_after_days": ready_after_days}
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def _md_keys(keys: list[dict[str, Any]]) -> str:
    return "\n".join(f"- {', '.join(f'{k}={v}' for k, v in key.items())}" for key in keys) or "none"


def report_markdown(result: ParityResult, run_id: str, checked_at: str) -> bytes:
    verdict = "MATCH" if result.matched else ("ERROR (blocking)" if result.state == CUT_OVER else "WARNING")
    lines = [
        f"# Parity report: {result.table}, {result.day}",
        "",
        f"- verdict: **{verdict}** ({result.state})",
        f"- legacy output: `{result.legacy_file}`",
        f"- run: `{run_id}`, checked at {checked_at}",
        f"- key: {', '.join(result.key)}",
        f"- rows: legacy {result.rows_legacy}, {result.table} {result.rows_new}",
        "",
    ]
    if result.error:
        lines += ["## Error", "", result.error, ""]
        return "\n".join(lines).encode()
    lines += [
        f"## Keys only in legacy ({len(result.keys_only_in_legacy)})",
        "",
        _md_keys(result.keys_only_in_legacy),
        "",
        f"## Keys only in {result.table} ({len(result.keys_only_in_new)})",
        "",
        _md_keys(result.keys_only_in_new),
        "",
        "## Key uniqueness",
        "",
        f"- duplicated keys in legacy: {_md_keys(result.duplicate_keys_legacy)}",
        f"- duplicated keys in {result.table}: {_md_keys(result.duplicate_keys_new)}",
        "",
        "## Columns",
        "",
        "| column | legacy column | type | rows out of tolerance | max difference | abs_tol | rel_tol |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {c.column} | {c.legacy_column} | {c.type} | {c.mismatches} | {c.max_difference or ''} "
            f"| {c.abs_tol:g} | {c.rel_tol:g} |"
            for c in result.columns
        ),
        "",
        f"## Differing rows ({result.differing_rows}, first {len(result.top_differences)})",
        "",
    ]
    for entry in result.top_differences:
        key = ", ".join(f"{k}={entry[k]}" for k in result.key)
        diffs = "; ".join(f"{c}: legacy {v['legacy']} / new {v['new']}" for c, v in entry["differences"].items())
        lines.append(f"- {key}: {diffs}")
    if not result.top_differences:
        lines.append("none")
    return ("\n".join(lines) + "\n").encode()
