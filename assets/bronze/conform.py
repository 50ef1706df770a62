"""Conform rows to their contract: lossless casts only, rows that cannot be typed set aside with a rule.

A wrong column set or a lossy type is a `ContractViolation` of the whole batch; a single row that
cannot be typed (a null key or required value, an unparseable value, text that is not valid UTF-8, a
time outside the window the batch may write) becomes a `RowRejects` record per broken rule, so the
rest of the batch still loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from assets.bronze.contracts import ARROW_TYPES, DECIMAL_TYPE, VARCHAR_TYPE, ColumnContract, TableContract


class ContractViolation(ValueError):
    """Data that does not match its contract; the message names the dataset, column and problem."""


def not_null_rule(column: str) -> str:
    """Rule name of a null in a 'not null' column (primary keys included), as quarantine records say it."""
    return f"{column}_not_null"


def parseable_rule(column: str, type_name: str) -> str:
    """Rule name of a value that cannot be read losslessly as the contract's type.

    For a decimal the value must also FIT: one with more decimals than the scale (it would be rounded)
    or more digits than the precision is refused the same way (`amount_fits_decimal_19_4`).
    """
    if decimal := DECIMAL_TYPE.fullmatch(type_name):
        return f"{column}_fits_decimal_{decimal['precision']}_{decimal['scale']}"
    return f"{column}_parseable_as_{type_name}"


def max_length_rule(column: str, length: int) -> str:
    """Rule name of a text value longer than its `varchar(n)` column allows (it is never cut)."""
    return f"{column}_max_length_{length}"


def valid_utf8_rule(column: str) -> str:
    """Rule name of a text value whose bytes are not valid UTF-8 (Parquet does not enforce it)."""
    return f"{column}_valid_utf8"


@dataclass(frozen=True)
class RowWindow:
    """Rows must have `column` in [start, end); the others break `rule`.

    A batch that may only write one partition (a drop for one hour) says so with a window: a row
    outside it would land in another partition, which the load does not own.
    """

    column: str
    start: datetime
    end: datetime
    rule: str


# One record per (rejected row, broken rule); `row` indexes `RowRejects.raw_rows`.
VIOLATIONS_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("column_name", pa.string(), nullable=False),
        pa.field("offending_value", pa.string()),
    ]
)


@dataclass(frozen=True)
class RowRejects:
    """The rows of one input that broke a row-level rule, each kept once, and what each one broke.

    Only the rejected rows are kept (not the whole input), so holding them while the good rows are
    written costs little.
    """

    raw_rows: pa.Table  # the rejected rows as read, original types and columns
    typed_rows: pa.Table  # the same rows in the contract's types (nullable), unreadable values as null
    violations: pa.Table  # VIOLATIONS_SCHEMA, ordered by row, then contract column order

    @property
    def num_rows(self) -> int:
        return self.raw_rows.num_rows

    def counts(self) -> dict[tuple[str, str], int]:
        """Number of rows per (column, rule), for logs and metadata."""
        result: dict[tuple[str, str], int] = {}
        for column, rule in zip(
            self.violations.column("column_name").to_pylist(), self.violations.column("rule").to_pylist(), strict=True
        ):
            result[column, rule] = result.get((column, rule), 0) + 1
        return result


@dataclass(frozen=True)
class ConformedRows:
    """Result of row-level conformance: the good rows in the contract's shape, and the rejected ones."""

    rows: pa.Table
    rejects: RowRejects


def conform_to_contract(table: pa.Table, contract: TableContract, where: str, *, exact: bool = True) -> pa.Table:
    """Return `table` with the contract's column order and types, or raise `ContractViolation`.

    Only lossless conversions are accepted: text timestamps (SQLite) become timestamps, integers and
    floats must already be what the contract says. With `exact`, unlisted columns are an error
    (file drops); without it they are dropped (a source table may carry more than we extract).
    Any bad row fails the whole table; `conform_rows` sets bad rows aside instead.
    """
    return _conform(table, contract, where, exact=exact, row_level=False).rows


def conform_rows(
    table: pa.Table, contract: TableContract, where: str, *, exact: bool = True, window: RowWindow | None = None
) -> ConformedRows:
    """Like `conform_to_contract`, but rows that break a ROW-level rule are returned apart, not raised.

    Row-level: a null in a 'not null' column (`<column>_not_null`), a value the lossless cast cannot
    read, such as an unparseable text timestamp (`<column>_parseable_as_<type>`), text that is not
    valid UTF-8 (`<column>_valid_utf8`), and with `window` a time outside it (`window.rule`).
    Structural problems (missing or unexpected columns, a type with no lossless conversion) concern
    every row alike, so they still raise `ContractViolation` for the whole table. When every value
    casts, this costs what `conform_to_contract` costs plus one UTF-8 validation pass over the text
    columns: bad values are searched only after a cast or a validation has failed.
    """
    return _conform(table, contract, where, exact=exact, row_level=True, window=window)


def _conform(
    table: pa.Table,
    contract: TableContract,
    where: str,
    *,
    exact: bool,
    row_level: bool,
    window: RowWindow | None = None,
) -> ConformedRows:
    present = set(table.column_names)
    missing = [c for c in contract.column_names if c not in present]
    if missing:
        raise ContractViolation(f"{where}: missing column(s) {missing} required by contract '{contract.name}'")
    extra = [c for c in table.column_names if c not in set(contract.column_names)]
    if extra and exact:
        raise ContractViolation(f"{where}: unexpected column(s) {extra} not in contract '{contract.name}'")
    arrays, violations = [], []
    for column in contract.columns:
        original = table.column(column.name)
        values, unreadable = original, None
        if values.type != column.arrow_type:
            values, unreadable = _cast_column(original, column, where, locate=row_level)
        if unreadable is not None:
            offending = original.take(unreadable).cast(pa.string())
            violations.append(_violations(unreadable, parseable_rule(column.name, column.type_name), column, offending))
        if values.type == pa.string():
            values, invalid = _without_invalid_utf8(values, column, where, locate=row_level)
            if invalid is not None:
                violations.append(invalid)
            if column.max_length is not None and (too_long := _too_long(values, column, where, locate=row_level)):
                violations.append(too_long)
        if window is not None and column.name == window.column and (outside := _outside_window(values, window, column)):
            violations.append(outside)
        if not column.nullable and original.null_count:
            if not row_level:
                raise ContractViolation(
                    f"{where}: column '{column.name}' has {original.null_count} null value(s) but is 'not null'"
                )
            nulls = pc.indices_nonzero(original.is_null().combine_chunks())
            violations.append(_violations(nulls, not_null_rule(column.name), column, pa.nulls(len(nulls), pa.string())))
        arrays.append(values)
    nullable_schema = pa.schema([f.with_nullable(True) for f in contract.arrow_schema()])
    conformed = pa.Table.from_arrays(arrays, schema=nullable_schema)
    if not violations:
        return ConformedRows(_with_contract_schema(conformed, contract), _no_rejects(table, nullable_schema))
    return _split_rejects(table, conformed, contract, violations)


def _violations(rows: pa.Array, rule: str, column: ColumnContract, offending: pa.Array) -> pa.Table:
    n = len(rows)
    return pa.Table.from_arrays(
        [rows.cast(pa.int64()), pa.array([rule] * n, pa.string()), pa.array([column.name] * n, pa.string()), offending],
        schema=VIOLATIONS_SCHEMA,
    )


def _without_invalid_utf8(
    values: pa.ChunkedArray, column: ColumnContract, where: str, *, locate: bool
) -> tuple[pa.ChunkedArray, pa.Table | None]:
    """The text column with invalid UTF-8 values set to null, and their violations (None if all are valid).

    Parquet readers do not validate text, so invalid bytes would otherwise reach the Iceberg writer and
    fail it (a UnicodeDecodeError, for the whole load). One validation pass finds whether any value is
    invalid; only then are they located, with the binary -> string cast that refuses exactly them.
    """
    try:
        values.validate(full=True)
        return values, None
    except pa.ArrowInvalid:
        pass
    raw = values.cast(pa.binary())  # zero-copy, no validation
    invalid = _uncastable(raw, pa.string())
    if not locate:
        raise ContractViolation(
            f"{where}: column '{column.name}' has {invalid.true_count} value(s) that are not valid UTF-8"
        )
    positions = pc.indices_nonzero(invalid)
    offending = pa.array([escaped_text(v) for v in raw.take(positions).to_pylist()], pa.string())
    readable = pc.if_else(invalid, pa.scalar(None, pa.binary()), raw).cast(pa.string())
    return pa.chunked_array([readable]), _violations(positions, valid_utf8_rule(column.name), column, offending)


def _too_long(values: pa.ChunkedArray, column: ColumnContract, where: str, *, locate: bool) -> pa.Table | None:
    """Violations of the values longer than the column's declared maximum (in characters), or None.

    A longer value is set aside whole, never truncated: cutting it would publish a different value."""
    limit = column.max_length
    longer = pc.fill_null(pc.greater(pc.utf8_length(values), limit), False)
    count = pc.sum(longer).as_py() or 0
    if not count:
        return None
    if not locate:
        raise ContractViolation(f"{where}: column '{column.name}' has {count} value(s) longer than {limit} characters")
    positions = pc.indices_nonzero(longer.combine_chunks())
    return _violations(positions, max_length_rule(column.name, limit), column, values.take(positions).combine_chunks())


def escaped_text(value: bytes | str | None) -> str | None:
    """Text that may hold invalid UTF-8, readable and lossless: invalid bytes become `\\xNN` escapes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return value


def _outside_window(values: pa.ChunkedArray, window: RowWindow, column: ColumnContract) -> pa.Table | None:
    """Violations of the rows whose `window.column` is outside [start, end) (nulls are judged elsewhere),
    or None when every row is inside."""
    start, end = pa.scalar(window.start, values.type), pa.scalar(window.end, values.type)
    outside = pc.fill_null(pc.or_(pc.less(values, start), pc.greater_equal(values, end)), False)
    positions = pc.indices_nonzero(outside.combine_chunks())
    if not len(positions):
        return None
    return _violations(positions, window.rule, column, values.take(positions).cast(pa.string()).combine_chunks())


def _with_contract_schema(conformed: pa.Table, contract: TableContract) -> pa.Table:
    # Safe only once no 'not null' column holds a null: the schema claims it.
    return pa.Table.from_arrays(conformed.columns, schema=contract.arrow_schema())


def _no_rejects(raw: pa.Table, typed_schema: pa.Schema) -> RowRejects:
    return RowRejects(raw.slice(0, 0), typed_schema.empty_table(), VIOLATIONS_SCHEMA.empty_table())


def _split_rejects(
    raw: pa.Table, conformed: pa.Table, contract: TableContract, violations: list[pa.Table]
) -> ConformedRows:
    # A stable sort keeps the contract's column order among the violations of one row.
    # Offending values are shown as text: escape any that are not valid UTF-8 (an unparseable timestamp can be).
    found = _valid_text(pa.concat_tables(violations).sort_by([("row", "ascending")]))
    positions = sorted(set(found.column("row").to_pylist()))
    rejected = _mask(raw.num_rows, positions)
    index_of = {position: i for i, position in enumerate(positions)}
    renumbered = [index_of[r] for r in found.column("row").to_pylist()]  # into raw_rows, not the input
    taken = pa.array(positions, pa.int64())
    rejects = RowRejects(
        raw_rows=_valid_text(raw.take(taken)),
        typed_rows=conformed.take(taken),
        violations=found.set_column(0, VIOLATIONS_SCHEMA.field("row"), pa.array(renumbered, pa.int64())),
    )
    # Column by column: Table.filter is several times slower here (it goes through a query plan).
    keep = pc.invert(rejected)
    good = pa.Table.from_arrays([c.filter(keep) for c in conformed.columns], schema=contract.arrow_schema())
    return ConformedRows(good, rejects)


def _valid_text(rows: pa.Table) -> pa.Table:
    """`rows` with text that is not valid UTF-8 escaped (see `escaped_text`), so that the quarantine
    can show the raw row; only the (few) rejected rows pass through here."""
    columns = []
    for column in rows.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                raw = column.cast(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
                column = pa.chunked_array([pa.array([escaped_text(v) for v in raw.to_pylist()], column.type)])
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=rows.schema)


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


def readable_as(actual: pa.DataType, type_name: str) -> bool:
    """True when values of Arrow type `actual` can be read as the contract type without loss.

    `varchar(n)` reads what `string` reads (its length is judged per value). A decimal reads text and
    other decimals: the cast refuses, value by value, whatever would be rounded or does not fit, so those
    rows are quarantined. Floats are never read as decimals: a binary float is not the decimal it prints.
    """
    if pa.types.is_null(actual):
        return True
    if VARCHAR_TYPE.fullmatch(type_name):
        type_name = "string"
    if DECIMAL_TYPE.fullmatch(type_name):
        return pa.types.is_decimal(actual) or pa.types.is_string(actual) or pa.types.is_large_string(actual)
    return actual == ARROW_TYPES[type_name] or (str(actual), type_name) in _LOSSLESS


# A failing slice is cut into this many parts, each cast again, down to slices of at most
# _PER_VALUE_SLICE values that are judged value by value. A wide fan-out keeps the depth small, which
# matters when most values are bad: Arrow formats an error for every bad value of a failing cast.
_FAN_OUT = 16
_PER_VALUE_SLICE = 256


def _cast_column(
    values: pa.ChunkedArray, column: ColumnContract, where: str, *, locate: bool
) -> tuple[pa.ChunkedArray, pa.Array | None]:
    """The column cast to the contract type, and (with `locate`) the positions of values that could not be
    cast, which are null in the result; without `locate` such a value raises for the whole column."""
    actual = str(values.type)
    if values.null_count == len(values):
        # Readers that infer types (ADBC on SQLite) type an all-null column arbitrarily; nulls carry no type.
        return pa.chunked_array([pa.nulls(len(values), column.arrow_type)]), None
    if not readable_as(values.type, column.type_name):
        raise ContractViolation(f"{where}: column '{column.name}' has type {actual}, contract says {column.type_name}")
    try:
        return values.cast(column.arrow_type), None
    except pa.ArrowNotImplementedError as exc:
        raise ContractViolation(f"{where}: column '{column.name}' cannot be read as {column.type_name}: {exc}") from exc
    except pa.ArrowInvalid as exc:
        failure = exc
    if locate:
        unreadable = _uncastable(values, column.arrow_type)
        if unreadable.true_count:
            readable = pc.if_else(unreadable, pa.scalar(None, values.type), values)
            return readable.cast(column.arrow_type), pc.indices_nonzero(unreadable)
    raise ContractViolation(f"{where}: column '{column.name}' cannot be read as {column.type_name}: {failure}")


def _uncastable(values: pa.ChunkedArray, target: pa.DataType) -> pa.BooleanArray:
    """Mask of the values that the cast to `target` refuses, found with the cast itself so that exactly
    what it accepts is accepted: failing slices are cut up and cast again, and only small failing slices
    are judged value by value. One bad value in a million costs about one more vectorised cast."""
    bad: list[int] = []
    pending = [(0, len(values))]
    known_to_fail = True  # the whole column has just failed
    while pending:
        start, length = pending.pop()
        piece = values.slice(start, length)
        if not known_to_fail and _casts(piece, target):
            continue
        known_to_fail = False
        if length <= _PER_VALUE_SLICE:
            bad += [start + i for i in _refused_in(piece.combine_chunks(), target)]
        else:
            step = -(-length // _FAN_OUT)
            pending += [(s, min(step, start + length - s)) for s in reversed(range(start, start + length, step))]
    return _mask(len(values), bad)


def _refused_in(piece: pa.Array, target: pa.DataType) -> list[int]:
    """Positions in a small slice whose value the cast refuses; each distinct value is cast once, since
    placeholders such as '' or 'N/A' tend to repeat."""
    distinct = piece.unique()
    refused = distinct.filter(pa.array([not _casts(distinct.slice(i, 1), target) for i in range(len(distinct))]))
    return pc.indices_nonzero(pc.is_in(piece, value_set=refused)).to_pylist()


def _mask(length: int, positions: list[int]) -> pa.BooleanArray:
    """A boolean array of `length`, true at `positions` (built in one buffer, not value by value in Arrow)."""
    flags = bytearray(length)
    for position in positions:
        flags[position] = 1
    return pc.not_equal(pa.Array.from_buffers(pa.uint8(), length, [None, pa.py_buffer(flags)]), 0)


def _casts(values: pa.Array | pa.ChunkedArray, target: pa.DataType) -> bool:
    try:
        values.cast(target)
    except pa.ArrowInvalid:
        return False
    return True
