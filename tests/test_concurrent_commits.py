"""Two runs committing to the same Iceberg table at once: Iceberg's optimistic concurrency refuses the
later commit, which is re-based by pyiceberg (another hour) or computed again by `commit_with_retry`
(the same hour, or a commit pyiceberg does not retry), and both land exactly once.

The interleaving is forced, not hoped for: each writer, inside its first write attempt (after it read
the table's state, before it commits), waits at a barrier for the other, so both commits start from the
same snapshot and exactly one of them must conflict.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc

from assets.bronze.contracts import file_drop_contracts
from assets.bronze.telemetry import load_hour_range
from assets.drops.ledger import LEDGER_TABLE
from assets.drops.protocol import partition_key
from resources.landing import LandingZone
from tests.test_bronze_telemetry import FIRST_HOUR, hour_rows, land, resources

CONTRACT = file_drop_contracts()["telemetry"]


class MeetingLandingZone:
    """The real local landing zone, except that each writer thread's first read of a data file waits until
    every writer is at that point: inside `write`, after its table state was read, before any commit."""

    def __init__(self, landing: LandingZone, writers: int):
        self._landing = landing
        self._barrier = threading.Barrier(writers, timeout=60)
        self._lock = threading.Lock()
        self.data_reads: Counter[str] = Counter()  # by writer thread

    def read_bytes(self, key: str) -> bytes:
        data = self._landing.read_bytes(key)
        if key.endswith(".parquet"):
            writer = threading.current_thread().name
            with self._lock:
                self.data_reads[writer] += 1
                first = self.data_reads[writer] == 1
            if first:
                self._barrier.wait()
        return data

    def __getattr__(self, name: str):
        return getattr(self._landing, name)


def hour_counts(table) -> dict[str, int]:
    rows = table.scan().to_arrow()
    hours = pc.strftime(rows.column("ts"), format="%Y-%m-%dT%H").to_pylist()
    return dict(Counter(hours))


def test_two_hours_committed_at_once_both_land_exactly_once(tmp_path: Path):
    hours = [FIRST_HOUR + timedelta(hours=h) for h in range(3)]
    for h in hours:
        land(tmp_path / "landing", h, hour_rows(h))
    res = resources(tmp_path)
    catalog = res["iceberg"]
    # Hour 0 first, alone: the table exists (and is partitioned) before the race, as in production.
    first = load_hour_range(CONTRACT, res["landing"], catalog, hours[:1], "run-0")
    base_snapshot = first.table.current_snapshot().snapshot_id

    landing = MeetingLandingZone(res["landing"], writers=2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(load_hour_range, CONTRACT, landing, catalog, [h], f"run-{h.hour}") for h in hours[1:]]
        results = [future.result(timeout=120) for future in futures]

    # Another hour's rows do not conflict: pyiceberg re-based the later commit itself, `write` ran once each.
    assert sorted(landing.data_reads.values()) == [1, 1], landing.data_reads
    # Both commits landed, each exactly once, and hour 0 is untouched.
    table = catalog.load().load_table("bronze.telemetry")
    per_hour = hour_rows(FIRST_HOUR).num_rows
    assert hour_counts(table) == {f"{h:%Y-%m-%dT%H}": per_hour for h in hours}
    assert int(table.current_snapshot().summary["total-records"]) == 3 * per_hour
    # Two new snapshots on one line, the later built on the earlier: none lost, none applied twice.
    data_snapshots = [s for s in table.snapshots() if s.summary.get("strata.run_id") in ("run-1", "run-2")]
    assert sorted(s.summary["strata.run_id"] for s in data_snapshots) == ["run-1", "run-2"]
    winner, loser = sorted(data_snapshots, key=lambda s: s.sequence_number)
    assert winner.parent_snapshot_id == base_snapshot
    assert loser.parent_snapshot_id == winner.snapshot_id
    assert {r.rows_out for r in results} == {per_hour}

    # The ledger (two concurrent appends right after) holds every drop once.
    ledger = catalog.load().load_table(LEDGER_TABLE).scan().to_arrow()
    assert sorted(ledger.column("partition_key").to_pylist()) == sorted(partition_key(h) for h in hours)


def test_the_same_hour_committed_twice_at_once_is_held_once(tmp_path: Path):
    """Two runs of one hour (a re-delivery while the first load is still running): both replace the same
    rows, so Iceberg's validation refuses the later commit as it is; `commit_with_retry` runs that
    transaction again on the new table state (same files), and the hour holds its rows once."""
    hours = [FIRST_HOUR, FIRST_HOUR + timedelta(hours=1)]
    for h in hours:
        land(tmp_path / "landing", h, hour_rows(h))
    res = resources(tmp_path)
    catalog = res["iceberg"]
    load_hour_range(CONTRACT, res["landing"], catalog, hours[:1], "run-0")

    landing = MeetingLandingZone(res["landing"], writers=2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(load_hour_range, CONTRACT, landing, catalog, hours[1:], f"run-{n}") for n in "ab"]
        results = [future.result(timeout=120) for future in futures]

    # Each drop is verified and written once; the refused commit is retried with the same data files.
    assert sorted(landing.data_reads.values()) == [1, 1], landing.data_reads
    table = catalog.load().load_table("bronze.telemetry")
    committed = {s.summary.get("strata.run_id") for s in table.snapshots()}
    assert {"run-a", "run-b"} <= committed  # both commits landed, one after the other
    per_hour = hour_rows(FIRST_HOUR).num_rows
    assert hour_counts(table) == {f"{h:%Y-%m-%dT%H}": per_hour for h in hours}
    assert {r.rows_out for r in results} == {per_hour}


def test_commit_with_retry_reloads_and_rewrites_a_refused_commit(tmp_path: Path):
    """The path pyiceberg leaves to us: a commit refused outright (here its own retries are off, as for
    the schema and partition-spec changes it never retries). Two appends start from the same snapshot;
    the refused one is written again on the reloaded table and both rows land once."""
    import pyarrow as pa

    from resources.iceberg import commit_with_retry

    catalog = resources(tmp_path)["iceberg"]
    schema = pa.schema([pa.field("writer", pa.string(), nullable=False)])
    table = catalog.load_or_create_table("audit.commit_race", schema)
    with table.transaction() as tx:
        tx.set_properties({"commit.retry.num-retries": "0"})
    barrier = threading.Barrier(2, timeout=60)
    calls: Counter[str] = Counter()

    def append(name: str):
        def write(target):
            calls[name] += 1
            if calls[name] == 1:
                barrier.wait()  # both hold the same table state before either commits
            target.append(pa.table({"writer": [name]}, schema=schema))
            return calls[name]

        return commit_with_retry(catalog.load().load_table("audit.commit_race"), write)

    with ThreadPoolExecutor(max_workers=2) as pool:
        attempts = sorted(pool.map(append, ["a", "b"], timeout=120))

    assert attempts == [1, 2]  # one commit went through, the other was refused once and written again
    rows = catalog.load().load_table("audit.commit_race").scan().to_arrow()
    assert sorted(rows.column("writer").to_pylist()) == ["a", "b"]
