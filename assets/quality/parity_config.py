"""The dual-run parity declarations (`assets/quality/parity.yaml`), parsed and validated.

A migrated table's parity is data, not code: the governed table, where the legacy output of a day is,
the key, how each legacy column maps to a governed one (name, type, date/time format, tolerance, renamed
codes) and the table's cut-over state. Parsing only reads YAML, so the code location builds the checks
without importing pandas or datacompy. Errors name the file, the table and the column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

PARITY_FILE = Path(__file__).with_name("parity.yaml")
DUAL_RUN, CUT_OVER = "dual-run", "cut-over"
STATES = (DUAL_RUN, CUT_OVER)
COLUMN_TYPES = ("int", "decimal", "float", "text", "date", "timestamp")
NUMERIC_TYPES = ("int", "decimal", "float")
COLUMN_KEYS = {"legacy", "type", "format", "abs_tol", "rel_tol", "value_map"}
TABLE_KEYS = {"table", "legacy_file", "day_column", "key", "state", "ready_after_days", "columns"}


class ParityConfigError(ValueError):
    """A parity declaration that cannot become a check; the message names the file, table and column."""


@dataclass(frozen=True)
class ParityColumn:
    name: str  # governed column
    legacy: str  # its name in the legacy output
    type: str
    format: str | None = None
    abs_tol: float = 0.0
    rel_tol: float = 0.0
    value_map: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParityTable:
    table: str  # `layer.table`
    legacy_file: str
    day_column: str
    key: tuple[str, ...]
    columns: tuple[ParityColumn, ...]
    state: str = DUAL_RUN
    ready_after_days: int = 5
    source: str = PARITY_FILE.name

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey(self.table.split("."))

    @property
    def layer(self) -> str:
        return self.table.split(".")[0]

    @property
    def name(self) -> str:
        return self.table.split(".")[1]

    @property
    def blocking(self) -> bool:
        """Once cut over, the legacy output is the safety net: a difference stops what is downstream."""
        return self.state == CUT_OVER

    def legacy_key(self, day: date) -> str:
        """The landing-zone key of the legacy output of `day`."""
        return self.legacy_file.format(day=day)

    def column(self, name: str) -> ParityColumn:
        return next(c for c in self.columns if c.name == name)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ParityConfigError(f"{where} must be a number >= 0, not {value!r}")
    return float(value)


def _parse_column(name: str, spec: Any, where: str) -> ParityColumn:
    where = f"{where} column {name!r}"
    if not isinstance(spec, dict):
        raise ParityConfigError(f"{where} must be a mapping with `legacy` and `type`")
    if unknown := set(spec) - COLUMN_KEYS:
        raise ParityConfigError(f"{where} has unknown setting(s) {sorted(unknown)}; use {sorted(COLUMN_KEYS)}")
    if not spec.get("legacy"):
        raise ParityConfigError(f"{where} names no `legacy` column")
    kind = spec.get("type")
    if kind not in COLUMN_TYPES:
        raise ParityConfigError(f"{where} has type {kind!r}; use one of {list(COLUMN_TYPES)}")
    if kind in ("date", "timestamp") and not spec.get("format"):
        raise ParityConfigError(f"{where} is a {kind}: it needs the legacy `format` (strptime)")
    tolerances = {t: _number(spec[t], f"{where} {t}") for t in ("abs_tol", "rel_tol") if t in spec}
    if tolerances and kind not in NUMERIC_TYPES:
        raise ParityConfigError(f"{where} is {kind}: tolerances apply to {list(NUMERIC_TYPES)} only")
    value_map = spec.get("value_map") or {}
    if not isinstance(value_map, dict):
        raise ParityConfigError(f"{where} value_map must map legacy values to governed values")
    return ParityColumn(
        name=name,
        legacy=str(spec["legacy"]),
        type=kind,
        format=spec.get("format"),
        value_map={str(k): str(v) for k, v in value_map.items()},
        **tolerances,
    )


def parse_table(entry: Any, source: str = PARITY_FILE.name) -> ParityTable:
    if not isinstance(entry, dict) or not isinstance(entry.get("table"), str) or entry["table"].count(".") != 1:
        raise ParityConfigError(f"{source}: each entry needs `table: layer.table`, got {entry!r}")
    where = f"{source}: {entry['table']}"
    if unknown := set(entry) - TABLE_KEYS:
        raise ParityConfigError(f"{where} has unknown setting(s) {sorted(unknown)}; use {sorted(TABLE_KEYS)}")
    for required in ("legacy_file", "day_column", "key", "columns"):
        if not entry.get(required):
            raise ParityConfigError(f"{where} needs `{required}`")
    if "{day" not in entry["legacy_file"]:
        raise ParityConfigError(f"{where} legacy_file must name the day, e.g. `GLTB_{{day:%Y%m%d}}.csv`")
    state = entry.get("state", DUAL_RUN)
    if state not in STATES:
        raise ParityConfigError(f"{where} has state {state!r}; use one of {list(STATES)}")
    ready = entry.get("ready_after_days", 5)
    if isinstance(ready, bool) or not isinstance(ready, int) or ready < 1:
        raise ParityConfigError(f"{where} ready_after_days must be a whole number >= 1, not {ready!r}")
    if not isinstance(entry["columns"], dict):
        raise ParityConfigError(f"{where} columns must map governed columns to their legacy columns")
    columns = tuple(_parse_column(name, spec, where) for name, spec in entry["columns"].items())
    names = {c.name for c in columns}
    key = tuple(entry["key"]) if isinstance(entry["key"], list) else (entry["key"],)
    for column in (*key, entry["day_column"]):
        if column not in names:
            raise ParityConfigError(f"{where} key/day column {column!r} is not among its columns {sorted(names)}")
    legacy_names = [c.legacy for c in columns]
    if len(set(legacy_names)) != len(legacy_names):
        raise ParityConfigError(f"{where} maps one legacy column twice: {legacy_names}")
    return ParityTable(
        table=entry["table"],
        legacy_file=entry["legacy_file"],
        day_column=entry["day_column"],
        key=key,
        columns=columns,
        state=state,
        ready_after_days=ready,
        source=source,
    )


def load_parity_tables(path: Path = PARITY_FILE) -> list[ParityTable]:
    document = yaml.safe_load(path.read_text()) or {}
    entries = document.get("tables") or []
    tables = [parse_table(entry, path.name) for entry in entries]
    seen = [t.table for t in tables]
    if len(set(seen)) != len(seen):
        raise ParityConfigError(f"{path.name}: a table is declared twice: {seen}")
    return tables
