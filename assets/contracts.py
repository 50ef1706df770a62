"""Load the upstream data contracts (`source_contracts.yaml`) into typed objects.

The contracts are data, not code, so a new source table or drop feed needs no Python. Everything that
must agree on a table's shape (extraction casts, Iceberg schemas, drop verification, the demo
generator) reads it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class ColumnContract:
    name: str
    type_name: str
    nullable: bool

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.type_name]


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

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns])


def _parse_column(name: str, spec: str, primary_key: str | None, where: str) -> ColumnContract:
    words = spec.split()
    type_name = words[0]
    if type_name not in ARROW_TYPES:
        raise ValueError(
            f"{CONTRACTS_FILE.name}: {where}.{name} has unknown type {type_name!r}; use one of {sorted(ARROW_TYPES)}"
        )
    modifiers = " ".join(words[1:])
    if modifiers not in ("", "not null"):
        raise ValueError(f"{CONTRACTS_FILE.name}: {where}.{name} has unknown modifier {modifiers!r}")
    return ColumnContract(name, type_name, nullable=not modifiers and name != primary_key)


def _parse_table(name: str, entry: dict, where: str) -> TableContract:
    primary_key = entry.get("primary_key")
    columns = tuple(
        _parse_column(col, str(spec), primary_key, f"{where}.{name}") for col, spec in entry["columns"].items()
    )
    names = {c.name for c in columns}
    for role in ("primary_key", "watermark", "time_column"):
        if entry.get(role) and entry[role] not in names:
            raise ValueError(f"{CONTRACTS_FILE.name}: {where}.{name}.{role} names unknown column {entry[role]!r}")
    return TableContract(
        name=name,
        columns=columns,
        primary_key=primary_key,
        watermark=entry.get("watermark"),
        prefix=entry.get("prefix"),
        time_column=entry.get("time_column"),
        schema_version=int(entry.get("schema_version", 1)),
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


def file_drop_contracts() -> dict[str, TableContract]:
    """File-drop feeds loaded from the landing zone, keyed by dataset name."""
    return _load()[1]


class ContractViolation(ValueError):
    """Data that does not match its contract; the message names the dataset, column and problem."""


def conform_to_contract(table: pa.Table, contract: TableContract, where: str, *, exact: bool = True) -> pa.Table:
    """Return `table` with the contract's column order and types, or raise `ContractViolation`.

    Only lossless conversions are accepted: text timestamps (SQLite) become timestamps, integers and
    floats must already be what the contract says. With `exact`, unlisted columns are an error
    (file drops); without it they are dropped (a source table may carry more than we extract).
    """
    present = set(table.column_names)
    missing = [c for c in contract.column_names if c not in present]
    if missing:
        raise ContractViolation(f"{where}: missing column(s) {missing} required by contract '{contract.name}'")
    extra = [c for c in table.column_names if c not in set(contract.column_names)]
    if extra and exact:
        raise ContractViolation(f"{where}: unexpected column(s) {extra} not in contract '{contract.name}'")
    arrays = []
    for column in contract.columns:
        values = table.column(column.name)
        if values.type != column.arrow_type:
            values = _cast_column(values, column, where)
        if not column.nullable and values.null_count:
            raise ContractViolation(
                f"{where}: column '{column.name}' has {values.null_count} null value(s) but is 'not null'"
            )
        arrays.append(values)
    return pa.Table.from_arrays(arrays, schema=contract.arrow_schema())


# Conversions that cannot lose information; anything else is a contract violation, never a silent cast.
_LOSSLESS = {
    ("string", "timestamp"),
    ("large_string", "timestamp"),
    ("string", "date"),
    ("int32", "int64"),
    ("int16", "int64"),
    ("int8", "int64"),
    ("float", "float64"),
    ("double", "float64"),
    ("large_string", "string"),
    ("timestamp[ns]", "timestamp"),
    ("timestamp[ms]", "timestamp"),
    ("timestamp[s]", "timestamp"),
    ("null", "int64"),
    ("null", "float64"),
    ("null", "string"),
    ("null", "timestamp"),
}


def _cast_column(values: pa.ChunkedArray, column: ColumnContract, where: str) -> pa.ChunkedArray:
    actual = str(values.type)
    if values.null_count == len(values):
        # Readers that infer types (ADBC on SQLite) type an all-null column arbitrarily; nulls carry no type.
        return pa.chunked_array([pa.nulls(len(values), column.arrow_type)])
    if (actual, column.type_name) not in _LOSSLESS:
        raise ContractViolation(f"{where}: column '{column.name}' has type {actual}, contract says {column.type_name}")
    try:
        return values.cast(column.arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ContractViolation(f"{where}: column '{column.name}' cannot be read as {column.type_name}: {exc}") from exc
