"""Exact decimals and bounded text in the contracts: a value is stored exactly or quarantined, never
rounded or cut. Property tests, since these rules judge outside input."""

from __future__ import annotations

import re
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.bronze.conform import ContractViolation, conform_rows, conform_to_contract, readable_as
from assets.bronze.contracts import ColumnContract, TableContract, _parse_column

AMOUNT = TableContract(
    "journal", (ColumnContract("line_id", "int64", False), ColumnContract("amount", "decimal(19,4)", True))
)
CODE = TableContract("codes", (ColumnContract("code", "varchar(8)", True),))

# Decimals as a producer writes them in text: any sign, up to 20 integer digits and 8 decimals.
decimal_texts = st.decimals(
    min_value=Decimal("-99999999999999999999.99999999"),
    max_value=Decimal("99999999999999999999.99999999"),
    places=8,
    allow_nan=False,
    allow_infinity=False,
).map(lambda d: format(d, "f"))


def fits_19_4(text: str) -> bool:
    value = Decimal(text)
    return value == value.quantize(Decimal("0.0001")) and abs(value) < Decimal(10) ** 15


@settings(deadline=None)  # a loaded shared machine
@given(st.lists(decimal_texts, min_size=1, max_size=30))
def test_a_decimal_is_kept_exactly_or_quarantined_never_rounded(texts):
    raw = pa.table({"line_id": pa.array(range(len(texts)), pa.int64()), "amount": pa.array(texts, pa.string())})
    conformed = conform_rows(raw, AMOUNT, "journal.parquet")

    kept = [Decimal(t) for t in texts if fits_19_4(t)]
    assert conformed.rows.schema.field("amount").type == pa.decimal128(19, 4)
    assert conformed.rows.column("amount").to_pylist() == kept  # the same numbers, exactly
    refused = [t for t in texts if not fits_19_4(t)]
    violations = conformed.rejects.violations.to_pylist()
    assert [v["offending_value"] for v in violations] == refused
    assert {v["rule"] for v in violations} <= {"amount_fits_decimal_19_4"}


def test_a_wider_decimal_is_narrowed_only_where_nothing_is_lost():
    wide = pa.array(["1.2345", "1.23450000", "1.234567", "1234567890123456.5"], pa.string()).cast(pa.decimal128(38, 8))
    raw = pa.table({"line_id": pa.array(range(4), pa.int64()), "amount": wide})
    conformed = conform_rows(raw, AMOUNT, "journal.parquet")
    assert conformed.rows.column("amount").to_pylist() == [Decimal("1.2345"), Decimal("1.2345")]
    assert conformed.rejects.violations.select(["row", "rule", "offending_value"]).to_pylist() == [
        {"row": 0, "rule": "amount_fits_decimal_19_4", "offending_value": "1.23456700"},
        {"row": 1, "rule": "amount_fits_decimal_19_4", "offending_value": "1234567890123456.50000000"},
    ]


def test_a_float_is_never_read_as_a_decimal():
    assert not readable_as(pa.float64(), "decimal(19,4)")
    raw = pa.table({"line_id": pa.array([1], pa.int64()), "amount": pa.array([0.1], pa.float64())})
    expected = "column 'amount' has type double, contract says decimal(19,4)"
    with pytest.raises(ContractViolation, match=re.escape(expected)):
        conform_rows(raw, AMOUNT, "journal.parquet")


@settings(deadline=None)  # a loaded shared machine
@given(st.lists(st.text(max_size=12), min_size=1, max_size=30))
def test_text_longer_than_its_varchar_is_quarantined_never_cut(values):
    conformed = conform_rows(pa.table({"code": pa.array(values, pa.string())}), CODE, "codes.parquet")
    assert conformed.rows.column("code").to_pylist() == [v for v in values if len(v) <= 8]
    violations = conformed.rejects.violations.to_pylist()
    assert [v["offending_value"] for v in violations] == [v for v in values if len(v) > 8]
    assert {v["rule"] for v in violations} <= {"code_max_length_8"}


def test_without_row_level_quarantine_a_long_value_fails_the_batch():
    expected = "codes: column 'code' has 1 value(s) longer than 8 characters"
    with pytest.raises(ContractViolation, match=re.escape(expected)):
        conform_to_contract(pa.table({"code": ["ok", "far too long"]}), CODE, "codes")


def test_contract_types_are_parsed_and_bad_ones_refused():
    assert _parse_column("amount", "decimal(19, 4) not null", None, "x").arrow_type == pa.decimal128(19, 4)
    assert _parse_column("rate", "decimal(9,6)", None, "x").arrow_type == pa.decimal128(9, 6)
    name = _parse_column("name", "varchar(40)", None, "x")
    assert (name.arrow_type, name.max_length, name.nullable) == (pa.string(), 40, True)
    with pytest.raises(ValueError, match=re.escape("x.a has 'decimal(39,2)' needs 1 <= precision <= 38")):
        _parse_column("a", "decimal(39,2)", None, "x")
    with pytest.raises(ValueError, match=re.escape("x.a has unknown type 'money'")):
        _parse_column("a", "money", None, "x")
