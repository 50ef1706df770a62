"""The ledger of loaded drops: which drop version (prefix + manifest md5) was loaded by which run.

An Iceberg table `audit.loaded_drops`, appended right after the data commit. The sensor reads it to
recognise an identical re-delivery without starting a run: a delivery is "already loaded" only when
it is the version the table holds now, i.e. the LATEST load of its prefix. Re-delivering an older
version after a newer one was loaded is a change of the table, so it is loaded again. Iceberg cannot commit two tables
atomically, so a crash between the data commit and the ledger append leaves the drop unrecorded: it
is then loaded again, which is harmless because a load overwrites exactly its hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from resources.iceberg import IcebergCatalog, commit_with_retry

LEDGER_TABLE = "audit.loaded_drops"
LEDGER_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("drop_prefix", pa.string(), nullable=False),
        pa.field("manifest_md5", pa.string(), nullable=False),
        pa.field("partition_key", pa.string(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("snapshot_id", pa.int64(), nullable=False),
        pa.field("loaded_at", pa.timestamp("us"), nullable=False),
    ]
)


@dataclass(frozen=True)
class LoadedDrop:
    dataset: str
    drop_prefix: str
    manifest_md5: str
    partition_key: str
    rows: int


def record_loaded_drops(catalog: IcebergCatalog, drops: list[LoadedDrop], run_id: str, snapshot_id: int) -> None:
    if not drops:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = pa.Table.from_pylist(
        [{**d.__dict__, "run_id": run_id, "snapshot_id": snapshot_id, "loaded_at": now} for d in drops],
        schema=LEDGER_SCHEMA,
    )
    table = catalog.load_or_create_table(LEDGER_TABLE, LEDGER_SCHEMA)
    commit_with_retry(table, lambda t: t.append(rows))


def loaded_drop_versions(catalog: IcebergCatalog, dataset: str) -> set[tuple[str, str]]:
    """(drop prefix, manifest md5) of the version of each drop of `dataset` that the table holds now:
    for every prefix, the version of its latest load (not every version ever loaded)."""
    from pyiceberg.expressions import EqualTo

    table = catalog.table_or_none(LEDGER_TABLE)
    if table is None or table.current_snapshot() is None:
        return set()
    columns = ("drop_prefix", "manifest_md5", "loaded_at")
    scan = table.scan(row_filter=EqualTo("dataset", dataset), selected_fields=columns)
    rows = scan.to_arrow().sort_by([("loaded_at", "ascending")])
    # Later loads overwrite earlier ones of the same prefix, as they overwrote its partition.
    current = dict(zip(rows.column("drop_prefix").to_pylist(), rows.column("manifest_md5").to_pylist(), strict=True))
    return set(current.items())
