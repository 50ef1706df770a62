"""Source changes the watermark cannot see are never lost without a trace (issue 11, items 8, 9 and 11).

- a NULL `updated_at` is read (`OR updated_at IS NULL`) and quarantined as `updated_at_not_null`, once;
- rows BELOW the watermark are reconciled with Bronze by key and watermark: a late insert is loaded,
  a backwards move is quarantined as `updated_at_never_decreases` (Bronze keeps its newer row);
- two different rows of one key with the same `updated_at` are both quarantined as
  `one_version_per_key_and_updated_at`; identical copies are one row;
- the watermark is committed whenever it moved, even when the upsert changed nothing;
- the SQLite source is opened read-only: a missing file is "not reachable", never created.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.bronze.oltp import split_versions, stored_watermark
from assets.bronze.quarantine import quarantined_rows
from audit.metadata import NOT_RUN_TAG
from resources.source_db import SourceDatabase
from tests.test_bronze_oltp import CREATE, STATIONS, bronze_rows, catalog_at, execute, materialize, row

# The producer's database does not enforce the contract: no NOT NULL, no primary key.
LOOSE_CREATE = CREATE.replace(" PRIMARY KEY", "").replace(" NOT NULL", "").format(ts="TEXT")


def meta(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def records(root: Path) -> list[tuple]:
    rows = quarantined_rows(catalog_at(root), dataset="stations").to_pylist()
    return sorted((r["row_key"], r["rule"], r["offending_value"]) for r in rows)


def loose_source(tmp_path: Path, *rows: str) -> str:
    url = f"sqlite:///{tmp_path / 'oltp.sqlite'}"
    execute(url, LOOSE_CREATE, *rows)
    return url


def test_a_null_updated_at_after_the_first_load_is_quarantined_once(tmp_path):
    url = loose_source(tmp_path, row(1, "Bellecour", "2026-10-01 08:00:00.000000"))
    materialize(url, tmp_path)
    execute(url, row(2, "Part-Dieu", "2026-10-02 08:00:00.000000"), "UPDATE stations SET updated_at = NULL "
            "WHERE station_id = 1")  # fmt: skip

    second = meta(materialize(url, tmp_path))
    assert (second["strata/rows_in"], second["strata/rows_quarantined"], second["strata/rows_inserted"]) == (2, 1, 1)
    assert second["strata/quarantine_rules"] == "updated_at_not_null (column updated_at): 1 row(s)"
    assert records(tmp_path) == [("1", "updated_at_not_null", None)]
    # Bronze keeps the last good version of station 1.
    assert bronze_rows(tmp_path) == {
        1: ("Bellecour", "2026-10-01 08:00:00"),
        2: ("Part-Dieu", "2026-10-02 08:00:00"),
    }

    third = meta(materialize(url, tmp_path))  # read again (it is still NULL), recorded once
    assert (third["strata/rows_quarantined"], third["strata/already_quarantined"]) == (1, 1)
    assert records(tmp_path) == [("1", "updated_at_not_null", None)]


def test_a_row_committed_late_below_the_watermark_is_loaded(tmp_path):
    url = loose_source(tmp_path, row(1, "Bellecour", "2026-10-01 08:00:00.000000"))
    materialize(url, tmp_path)
    execute(url, row(2, "Vaise", "2026-10-02 08:00:00.000000"))
    materialize(url, tmp_path)
    # A long transaction upstream commits a row stamped before the watermark.
    execute(url, row(3, "Perrache", "2026-10-01 12:00:00.000000"))

    late = meta(materialize(url, tmp_path))
    assert (late["strata/late_rows"], late["strata/rows_inserted"], late["strata/rows_quarantined"]) == (1, 1, 0)
    assert late["strata/watermark"] == "2026-10-02 08:00:00"
    assert bronze_rows(tmp_path)[3] == ("Perrache", "2026-10-01 12:00:00")
    assert "strata/late_rows" not in meta(materialize(url, tmp_path))  # Bronze holds it now: nothing to reconcile


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_an_updated_at_moved_backwards_is_quarantined_and_bronze_keeps_its_row(engine, tmp_path, request):
    if engine == "postgresql":
        url = request.getfixturevalue("postgres_url")
        execute(url, "DROP TABLE IF EXISTS stations", CREATE.format(ts="TIMESTAMP"))
    else:
        url = loose_source(tmp_path)
    execute(url, row(1, "Bellecour", "2026-10-02 08:00:00.000000"), row(2, "Vaise", "2026-10-03 08:00:00.000000"))
    materialize(url, tmp_path)
    # A restore upstream puts station 1 back to an older version (older than Bronze's and the watermark).
    execute(
        url,
        "UPDATE stations SET station_name = 'Bellecour (restored)', updated_at = '2026-10-01 08:00:00.000000' "
        "WHERE station_id = 1",
    )

    result = meta(materialize(url, tmp_path))
    assert result["strata/rows_updated_at_backwards"] == 1
    assert result["strata/quarantine_rules"] == "updated_at_never_decreases (column updated_at): 1 row(s)"
    assert (result["strata/rows_updated"], result["strata/watermark"]) == (0, "2026-10-03 08:00:00")
    assert records(tmp_path) == [("1", "updated_at_never_decreases", "2026-10-01 08:00:00.000000")]
    assert bronze_rows(tmp_path)[1] == ("Bellecour", "2026-10-02 08:00:00")

    again = meta(materialize(url, tmp_path))  # already in the quarantine as it is: not read again
    assert "strata/rows_updated_at_backwards" not in again and "strata/late_rows" not in again
    assert len(records(tmp_path)) == 1


def test_two_versions_of_a_key_with_the_same_updated_at_are_both_quarantined(tmp_path):
    same = "2026-10-01 08:00:00.000000"
    url = loose_source(
        tmp_path,
        row(7, "Gerland", same),
        row(7, "Gerland Sud", same),  # which one is current is unknowable
        row(8, "Jean Macé", same),
        row(8, "Jean Macé", same),  # the same row twice: one row, nothing lost
        row(9, "Saxe", "2026-10-01 07:00:00.000000"),
        row(9, "Saxe-Gambetta", "2026-10-01 09:00:00.000000"),  # newer version wins, as always
    )
    result = meta(materialize(url, tmp_path))
    assert (result["strata/rows_in"], result["strata/rows_out"], result["strata/rows_quarantined"]) == (6, 2, 2)
    assert result["strata/duplicate_rows_dropped"] == 1
    assert records(tmp_path) == [
        ("7", "one_version_per_key_and_updated_at", same),
        ("7", "one_version_per_key_and_updated_at", same),
    ]
    assert bronze_rows(tmp_path) == {
        8: ("Jean Macé", "2026-10-01 08:00:00"),
        9: ("Saxe-Gambetta", "2026-10-01 09:00:00"),
    }


MINUTE = timedelta(minutes=1)
BASE = datetime(2026, 10, 1)
versions = st.lists(
    st.tuples(st.integers(1, 4), st.integers(0, 5), st.sampled_from(["a", "b"])),  # key, minute, name
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(batch=versions, held=st.dictionaries(st.integers(1, 4), st.integers(0, 5)))
def test_split_versions_accounts_for_every_row_and_never_guesses(batch, held):
    rows = pa.table(
        {
            "station_id": pa.array([k for k, _, _ in batch], pa.int64()),
            "station_name": pa.array([n for _, _, n in batch], pa.string()),
            "updated_at": pa.array([BASE + m * MINUTE for _, m, _ in batch], pa.timestamp("us")),
        }
    )
    bronze = pa.table(
        {
            "station_id": pa.array(list(held), pa.int64()),
            "updated_at": pa.array([BASE + m * MINUTE for m in held.values()], pa.timestamp("us")),
        }
    )
    out = split_versions(rows, STATIONS, bronze)
    distinct = set(batch)
    kept, ties, backwards = (
        {(r["station_id"], round((r["updated_at"] - BASE) / MINUTE), r["station_name"]) for r in t.to_pylist()}
        for t in (out.rows, out.ties, out.backwards)
    )
    # Every distinct input row is exactly one of: upserted, tied, backwards, or older than the upserted one.
    assert kept | ties | backwards <= distinct and not (kept & ties or kept & backwards or ties & backwards)
    assert out.duplicates == len(batch) - len(distinct)
    assert out.rows.num_rows == len({k for k, _, _ in kept})  # one row per key
    for key, minute, name in distinct - kept - ties - backwards:
        assert any(k == key and m > minute for k, m, _ in kept), (key, minute, name)
    for key, minute, _ in ties:
        assert len({n for k, m, n in distinct if (k, m) == (key, minute)}) > 1
    for key, minute, _ in backwards:
        assert held[key] > minute
    for key, minute, _ in kept:
        assert key not in held or held[key] <= minute
        assert all(m <= minute for k, m, _ in distinct - ties - backwards if k == key)


def test_the_watermark_is_saved_when_the_upsert_changes_nothing(tmp_path):
    url = loose_source(
        tmp_path, row(1, "Bellecour", "2026-10-01 08:00:00.000000"), row(2, "Vaise", "2026-10-02 08:00:00.000000")
    )
    materialize(url, tmp_path)
    execute(url, row("NULL", "Nowhere", "2026-10-03 08:00:00.000000"))  # a null key, the newest change

    second = meta(materialize(url, tmp_path))  # station 2 re-read unchanged: nothing to upsert
    assert (second["strata/rows_out"], second["strata/rows_quarantined"]) == (0, 1)
    table = catalog_at(tmp_path).load().load_table("bronze.stations")
    assert stored_watermark(table) == second["strata/watermark"] == "2026-10-03 08:00:00"

    third = meta(materialize(url, tmp_path))
    assert third["strata/already_quarantined"] == 1
    assert records(tmp_path) == [(None, "station_id_not_null", None)]  # recorded once, not once per run


def test_a_missing_sqlite_file_is_unreachable_and_is_not_created(tmp_path):
    path = tmp_path / "oltp.sqlite"  # the folder exists, the file does not
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(f"sqlite:///{path}", tmp_path, instance)
    assert result.success and result.get_asset_materialization_events() == []
    assert instance.get_run_by_id(result.run_id).tags[NOT_RUN_TAG] == (
        f"source sqlite:///{path} not reachable: FileNotFoundError: source database file {path} does not exist"
    )
    assert not path.exists()

    # The next run (the next schedule tick) finds the source back and loads everything since the last load.
    execute(f"sqlite:///{path}", CREATE.format(ts="TEXT"), row(1, "Bellecour", "2026-10-01 08:00:00.000000"))
    assert meta(materialize(f"sqlite:///{path}", tmp_path))["strata/rows_inserted"] == 1


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_the_source_is_read_only(engine, tmp_path, request):
    url = request.getfixturevalue("postgres_url") if engine == "postgresql" else loose_source(tmp_path)
    with pytest.raises(Exception, match=r"read-?only"):
        SourceDatabase(url=url).read_arrow("CREATE TABLE written_by_strata (x INTEGER)")
