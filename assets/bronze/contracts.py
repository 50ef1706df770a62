"""Load the upstream data contracts (`source_contracts.yaml`) into typed objects.

The contracts are data, not code, so a new source table or drop feed needs no Python. Everything that
must agree on a table's shape (extraction casts, Iceberg schemas, drop verification, the demo
generator) reads it from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pyarrow as pa
import yaml

CONTRACTS_FILE = Path(__file__).with_name("source_contracts.yaml")

ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}

# Parameterised types: exact decimals (Arrow decimal128, Iceberg decimal(p, s)) and text with a declared
# maximum length (Arrow/Iceberg string; a longer value is quarantined, never cut).
DECIMAL_TYPE = re.compile(r"decimal\((?P<precision>[0-9]+),(?P<scale>[0-9]+)\)")
VARCHAR_TYPE = re.compile(r"varchar\((?P<length>[0-9]+)\)")
MAX_DECIMAL_PRECISION = 38  # decimal128, and the widest decimal Iceberg stores

OUTSIDE_DROP_HOUR_POLICIES = ("quarantine", "refuse")
NEW_COLUMN_POLICIES = ("evolve", "ignore")


def arrow_type_of(type_name: str) -> pa.DataType:
    """The Arrow type of a contract type name (`int64`, `decimal(19,4)`, `varchar(40)`, ...)."""
    if type_name in ARROW_TYPES:
        return ARROW_TYPES[type_name]
    if decimal := DECIMAL_TYPE.fullmatch(type_name):
        return pa.decimal128(int(decimal["precision"]), int(decimal["scale"]))
    if VARCHAR_TYPE.fullmatch(type_name):
        return pa.string()
    raise KeyError(type_name)


def type_problem(type_name: str) -> str | None:
    """Why `type_name` is not a contract type, or None when it is one."""
    if type_name in ARROW_TYPES:
        return None
    if decimal := DECIMAL_TYPE.fullmatch(type_name):
        precision, scale = int(decimal["precision"]), int(decimal["scale"])
        if not 1 <= precision <= MAX_DECIMAL_PRECISION or scale > precision:
            return f"{type_name!r} needs 1 <= precision <= {MAX_DECIMAL_PRECISION} and scale <= precision"
        return None
    if varchar := VARCHAR_TYPE.fullmatch(type_name):
        return None if int(varchar["length"]) >= 1 else f"{type_name!r} needs a length of at least 1"
    return f"unknown type {type_name!r}; use one of {sorted(ARROW_TYPES)}, decimal(p,s) or varchar(n)"


@dataclass(frozen=True)
class ColumnContract:
    name: str
    type_name: str
    nullable: bool

    @property
    def arrow_type(self) -> pa.DataType:
        return arrow_type_of(self.type_name)

    @property
    def max_length(self) -> int | None:
        """The declared maximum length of a `varchar(n)` column (characters), else None."""
        match = VARCHAR_TYPE.fullmatch(self.type_name)
        return int(match["length"]) if match else None


@dataclass(frozen=True)
class TableContract:
    """Shape of one upstream dataset: ordered columns, and for OLTP tables its key and watermark."""

    name: str
    columns: tuple[ColumnContract, ...]
    primary_key: str | None = None
    watermark: str | None = None
    prefix: str | None = None
    time_column: str | None = None
    schema_version: int = 1
    natural_key: tuple[str, ...] = ()  # what identifies a row of a feed without a primary key
    # A drop's rows whose time is outside the drop's hour: "quarantine" them (row by row) or "refuse" the drop.
    outside_drop_hour: str = "quarantine"
    on_new_columns: str = "evolve"  # OLTP: a source column the contract lacks is added to Bronze, or ignored
    pii: Mapping[str, str] = field(
        default_factory=dict, hash=False
    )  # personal-data column -> category (name, email, ...)
    description: str | None = None  # what the dataset holds, shown on its Bronze asset

    @property
    def row_key(self) -> tuple[str, ...]:
        """The columns that identify a row (quarantine records name rows by them)."""
        return (self.primary_key,) if self.primary_key else self.natural_key

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns])


def _parse_column(name: str, spec: str, primary_key: str | None, where: str) -> ColumnContract:
    words = spec.replace(", ", ",").split()  # `decimal(19, 4)` is one word
    type_name = words[0]
    if problem := type_problem(type_name):
        raise ValueError(f"{CONTRACTS_FILE.name}: {where}.{name} has {problem}")
    modifiers = " ".join(words[1:])
    if modifiers not in ("", "not null"):
        raise ValueError(f"{CONTRACTS_FILE.name}: {where}.{name} has unknown modifier {modifiers!r}")
    return ColumnContract(name, type_name, nullable=not modifiers and name != primary_key)


def _policy(entry: dict, key: str, allowed: tuple[str, ...], where: str) -> str:
    """A contract's choice among `allowed` (the first is the default); anything else is a config error."""
    value = entry.get(key, allowed[0])
    if value not in allowed:
        raise ValueError(f"{CONTRACTS_FILE.name}: {where}.{key} is {value!r}; use one of {list(allowed)}")
    return value


def _parse_table(name: str, entry: dict, where: str) -> TableContract:
    primary_key = entry.get("primary_key")
    columns = tuple(
        _parse_column(col, str(spec), primary_key, f"{where}.{name}") for col, spec in entry["columns"].items()
    )
    names = {c.name for c in columns}
    for role in ("primary_key", "watermark", "time_column"):
        if entry.get(role) and entry[role] not in names:
            raise ValueError(f"{CONTRACTS_FILE.name}: {where}.{name}.{role} names unknown column {entry[role]!r}")
    outside_drop_hour = _policy(entry, "outside_drop_hour", OUTSIDE_DROP_HOUR_POLICIES, f"{where}.{name}")
    on_new_columns = _policy(entry, "on_new_columns", NEW_COLUMN_POLICIES, f"{where}.{name}")
    natural_key = tuple(entry.get("natural_key", ()))
    if unknown := [column for column in natural_key if column not in names]:
        raise ValueError(f"{CONTRACTS_FILE.name}: {where}.{name}.natural_key names unknown column(s) {unknown}")
    pii = {str(column): str(category) for column, category in (entry.get("pii") or {}).items()}
    if unknown := sorted(column for column in pii if column not in names):
        raise ValueError(f"{CONTRACTS_FILE.name}: {where}.{name}.pii names unknown column(s) {unknown}")
    return TableContract(
        name=name,
        columns=columns,
        primary_key=primary_key,
        watermark=entry.get("watermark"),
        prefix=entry.get("prefix"),
        time_column=entry.get("time_column"),
        schema_version=int(entry.get("schema_version", 1)),
        natural_key=natural_key,
        outside_drop_hour=outside_drop_hour,
        on_new_columns=on_new_columns,
        pii=pii,
        description=entry.get("description"),
    )


@cache
def _load(path: Path = CONTRACTS_FILE) -> tuple[dict[str, TableContract], dict[str, TableContract]]:
    raw = yaml.safe_load(path.read_text())
    oltp = {name: _parse_table(name, entry, "oltp") for name, entry in raw.get("oltp", {}).items()}
    drops = {name: _parse_table(name, entry, "file_drops") for name, entry in raw.get("file_drops", {}).items()}
    return oltp, drops


def oltp_contracts() -> dict[str, TableContract]:
    """OLTP tables extracted incrementally into Bronze, keyed by table name."""
    return _load()[0]


def pii_column_names() -> frozenset[str]:
    """Every column name some contract classifies as personal data: no sample of their values is shown."""
    return frozenset(c for t in (*oltp_contracts().values(), *file_drop_contracts().values()) for c in t.pii)


def file_drop_contracts() -> dict[str, TableContract]:
    """File-drop feeds loaded from the landing zone, keyed by dataset name."""
    return _load()[1]
