"""Pure helpers that audit values depend on: order-independent checksums and contract conformance."""

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from assets.bronze.conform import ContractViolation, conform_to_contract
from assets.bronze.contracts import _parse_table, file_drop_contracts, oltp_contracts
from audit.metadata import is_sorted, table_checksum

STATIONS = oltp_contracts()["stations"]


def test_checksum_depends_on_rows_not_their_order():
    table = pa.table({"k": [3, 1, 2, 2], "v": ["c", "a", "b", "x"]})
    shuffled = table.take([2, 0, 3, 1])
    assert table_checksum(table, ["k", "v"]) == table_checksum(shuffled, ["k", "v"])
    changed = table.set_column(1, "v", pa.array(["c", "a", "b", "y"]))
    assert table_checksum(changed, ["k", "v"]) != table_checksum(table, ["k", "v"])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [([1, 1, 2], [5, 6, 0], True), ([1, 1, 2], [6, 5, 0], False), ([2, 1], [0, 0], False), ([1, 1], [4, 4], True)],
)
def test_is_sorted_compares_lexicographically(a, b, expected):
    assert is_sorted(pa.table({"a": a, "b": b}), ["a", "b"]) is expected


def test_conformance_refuses_lossy_casts_and_names_the_column():
    row = {c.name: [None] for c in STATIONS.columns}
    row.update(station_id=[1], station_name=["x"], city=["Lyon"], lat=["45.7"], lon=[4.8], capacity=[3],
               created_at=["2026-10-01 00:00:00"], updated_at=["2026-10-01 00:00:00"])  # fmt: skip
    with pytest.raises(ContractViolation, match=r"src: column 'lat' has type string, contract says float64"):
        conform_to_contract(pa.table(row), STATIONS, "src")
    row["lat"] = [45.7]
    conformed = conform_to_contract(pa.table(row), STATIONS, "src")
    assert conformed.schema == STATIONS.arrow_schema()
    assert str(conformed.column("created_at")[0]) == "2026-10-01 00:00:00"


def test_rows_are_identified_by_the_primary_key_or_the_feeds_natural_key():
    assert oltp_contracts()["bookings"].row_key == ("booking_id",)
    assert file_drop_contracts()["telemetry"].row_key == ("vehicle_id", "ts")
    with pytest.raises(ValueError, match=r"file_drops.feed.natural_key names unknown column\(s\) \['id'\]"):
        _parse_table("feed", {"columns": {"ts": "timestamp"}, "natural_key": ["id"]}, "file_drops")


@given(
    st.lists(st.tuples(st.integers(-(2**40), 2**40), st.text(max_size=8), st.booleans()), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
)
def test_checksum_ignores_how_arrow_lays_out_equal_values(rows, rng):
    """Equal rows give one checksum whether a column carries an all-valid bitmap, is a slice of a longer array
    or arrives shuffled (a sort, a reader's chunking): the re-run of a day that changed nothing keeps it."""
    keys, texts, flags = (list(column) for column in zip(*rows, strict=True))
    plain = pa.table({"k": keys, "t": texts, "f": flags})
    # the same values cut from longer arrays that hold a null after them: each column has a validity bitmap
    padded = pa.table({name: pa.array([*plain.column(name).to_pylist(), None]).slice(0, len(keys)) for name in "ktf"})
    assert all(padded.column(name).chunk(0).buffers()[0] is not None for name in "ktf")
    order = list(range(len(keys)))
    rng.shuffle(order)
    columns = ["k", "t", "f"]
    assert (
        table_checksum(plain, columns) == table_checksum(padded, columns) == table_checksum(padded.take(order), columns)
    )
