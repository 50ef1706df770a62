"""Schema drift of an OLTP source table: its declared columns compared with the contract BEFORE extracting.

Without this, a dropped source column surfaced as a raw SQL error (retried three times) and a new column
was dropped without a word. Now:
- a contract column missing from the source, or declared with a type the extraction cannot read
  losslessly as the contract's type, refuses the load with one error naming the table, each column, the
  expected and the found type (`SchemaDriftError`, a `ContractViolation`: never retried);
- a source column the contract lacks is reported; the table's `on_new_columns` decides whether Bronze
  gains it by schema evolution. Only columns whose type maps to a contract type can evolve; others
  are reported as not evolvable and left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from assets.bronze.conform import ContractViolation, readable_as
from assets.bronze.contracts import ARROW_TYPES, ColumnContract, TableContract


class SchemaDriftError(ContractViolation):
    """The source table no longer has the shape its contract promises; nothing was extracted."""


@dataclass(frozen=True)
class NewColumn:
    """A source column the contract does not list, and the contract type it would evolve as (None: cannot)."""

    name: str
    found_type: pa.DataType | None
    type_name: str | None

    def describe(self) -> str:
        found = str(self.found_type) if self.found_type is not None else "undeclared"
        return f"{self.name} ({found})" if self.type_name else f"{self.name} ({found}, not evolvable)"


def _type_name_for(found: pa.DataType | None) -> str | None:
    """The contract type a new source column is kept as in Bronze; None when there is no lossless one."""
    if found is None:
        return None  # SQLite without a declared type: values could be anything
    for type_name in ("int64", "float64", "string", "bool", "date", "timestamp"):
        if found == ARROW_TYPES[type_name] or readable_as(found, type_name):
            return type_name
    return None


def new_source_columns(contract: TableContract, found: dict[str, pa.DataType | None] | None) -> list[NewColumn]:
    """Check `found` (the source's declared columns; None: no such table) against the contract.

    Raises `SchemaDriftError` for a missing table, missing columns or incompatible types (all listed at
    once); returns the columns the source has beyond the contract, in source order.
    """
    where = f"source table {contract.name}"
    if found is None:
        raise SchemaDriftError(f"{where} does not exist (contract '{contract.name}' expects it); nothing extracted")
    problems = []
    for column in contract.columns:
        if column.name not in found:
            problems.append(f"column '{column.name}' is missing (contract says {column.type_name})")
            continue
        declared = found[column.name]
        if declared is not None and not readable_as(declared, column.type_name):
            problems.append(f"column '{column.name}' has type {declared}, contract says {column.type_name}")
    if problems:
        raise SchemaDriftError(
            f"{where} drifted from its contract: {'; '.join(problems)}. Nothing extracted; "
            f"fix the source or update assets/bronze/source_contracts.yaml"
        )
    known = set(contract.column_names)
    return [NewColumn(name, t, _type_name_for(t)) for name, t in found.items() if name not in known]


def evolved_columns(new_columns: list[NewColumn]) -> tuple[ColumnContract, ...]:
    """The new columns Bronze keeps (always nullable: rows loaded before the column existed have none)."""
    return tuple(ColumnContract(c.name, c.type_name, nullable=True) for c in new_columns if c.type_name)
