"""Bronze OLTP tables: incremental extraction by `updated_at` watermark, upsert by primary key.

One asset per table in the `oltp` section of the source contracts. The watermark is stored in the
summary of the Iceberg snapshot that wrote the rows, so it commits atomically with the data: a run
that fails before its commit leaves the old watermark, and the next run extracts the same rows again.
Rows are read with `updated_at >= watermark` (not `>`), because rows committed later with the same
timestamp would otherwise be skipped; the upsert makes re-reading them harmless.

Each materialization's data version names the newest Iceberg snapshot that changed rows
(`content_data_version`): an hourly extraction that found nothing new keeps the version, so automation,
which follows data version changes, rebuilds nothing downstream of it.

Rows that break a row-level rule of the contract (a null key or required value, an unparseable
timestamp) are not upserted: they go to `audit.bronze_quarantine` and the other rows are published.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from assets.bronze.conform import VIOLATIONS_SCHEMA, ContractViolation, RowRejects, conform_rows
from assets.bronze.contracts import ColumnContract, TableContract, oltp_contracts
from assets.bronze.guard import guard_passes, source_problem
from assets.bronze.quarantine import (
    QUARANTINE_TABLE,
    RECORD_SCHEMA,
    describe_rejects,
    quarantine_records,
    quarantined_rows,
    record_quarantined_rows,
)
from assets.bronze.schema_drift import NewColumn, evolved_columns, new_source_columns
from audit.metadata import audit_metadata, table_checksum
from resources.iceberg import IcebergCatalog, commit_with_retry
from resources.iceberg_maintenance import MAINTENANCE_PROPERTY
from resources.ingestion_guard import IngestionGuard
from resources.source_db import SourceDatabase

if TYPE_CHECKING:
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

WATERMARK_PROPERTY = "strata.watermark"
COLUMNS_PROPERTY = "strata.extracted_columns"  # the columns the watermark covers (schema evolution)
RECONCILE_BATCH = 1000  # keys per `IN (...)` query when reading rows below the watermark
BRONZE_GROUP = "bronze"


def stored_property(table, name: str) -> str | None:
    """The newest value of snapshot summary property `name` on the table's lineage (None before the first load)."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        value = snapshot.summary.get(name) if snapshot.summary else None
        if value:
            return value
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return None


def stored_watermark(table) -> str | None:
    """The newest watermark recorded on the table's snapshot lineage (None before the first load)."""
    return stored_property(table, WATERMARK_PROPERTY)


def changes_rows(snapshot: "Snapshot") -> bool:
    """Whether a snapshot changed the table's rows: not an empty commit that only records the watermark
    or a schema change, and not table maintenance (compaction rewrites the same rows)."""
    summary = snapshot.summary
    if summary is None or summary.get(MAINTENANCE_PROPERTY):
        return False
    return int(summary.get("added-records") or 0) + int(summary.get("deleted-records") or 0) > 0


def content_data_version(table: "Table") -> dg.DataVersion:
    """The data version of a Bronze table: the id of the newest snapshot on its lineage that changed rows.

    A snapshot id names the table's content exactly; skipping the commits that changed no row keeps the
    version when an extraction brought nothing new. Once expiry cut the lineage short, the oldest snapshot
    still known stands for the content (a spurious change at most, never a missed one)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return dg.DataVersion("empty")
    while not changes_rows(snapshot) and snapshot.parent_snapshot_id is not None:
        parent = table.snapshot_by_id(snapshot.parent_snapshot_id)
        if parent is None:
            break
        snapshot = parent
    return dg.DataVersion(f"snapshot={snapshot.snapshot_id}")


def watermark_literal(watermark: str) -> str:
    # Round-trip through datetime so only a well-formed timestamp can reach the SQL text.
    return datetime.fromisoformat(watermark).strftime("%Y-%m-%d %H:%M:%S.%f")


def extraction_query(contract: TableContract, watermark: str | None) -> str:
    """SELECT of the contract's columns changed since `watermark` (validated as a timestamp).

    Rows whose watermark column is NULL are read on every run: `>=` alone would skip them for ever, and
    the contract (`not null`) quarantines them, once (the records are not written twice).
    """
    columns = ", ".join(contract.column_names)
    query = f"SELECT {columns} FROM {contract.name}"
    if watermark is not None and contract.watermark:
        column = contract.watermark
        query += f" WHERE {column} >= '{watermark_literal(watermark)}' OR {column} IS NULL"
    return query


def rows_by_key_query(contract: TableContract, keys: Sequence[object]) -> str:
    """SELECT of the contract's columns for the given primary key values (integers or text)."""

    def literal(key: object) -> str:
        if isinstance(key, int):
            return str(key)
        return "'" + str(key).replace("'", "''") + "'"

    in_list = ", ".join(literal(k) for k in keys)
    return f"SELECT {', '.join(contract.column_names)} FROM {contract.name} WHERE {contract.primary_key} IN ({in_list})"


def latest_version_per_key(rows: pa.Table, contract: TableContract) -> pa.Table:
    """Keep one row per primary key, the most recently updated (an upsert needs unique keys).

    Versions of one key with the same watermark value must already be resolved (`split_versions`).
    """
    if rows.num_rows == 0:
        return rows
    ordered = rows.sort_by([(contract.primary_key, "ascending"), (contract.watermark, "descending")])
    keys = ordered.column(contract.primary_key)
    first = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    keep = pa.concat_arrays([pa.array([True]), first.combine_chunks()]) if len(keys) > 1 else pa.array([True])
    return ordered.filter(keep)


def tie_rule(contract: TableContract) -> str:
    """Two different rows of one key with the same watermark value: which one is current is unknowable."""
    return f"one_version_per_key_and_{contract.watermark}"


def backwards_rule(contract: TableContract) -> str:
    """A source row whose watermark value is older than the version Bronze already holds for its key."""
    return f"{contract.watermark}_never_decreases"


def rule_rejects(rows: pa.Table, rule: str, column: str) -> RowRejects:
    """Every row of `rows` (typed) set aside under one rule; the offending value is `column`'s."""
    n = rows.num_rows
    violations = pa.Table.from_arrays(
        [
            pa.array(range(n), pa.int64()),
            pa.array([rule] * n, pa.string()),
            pa.array([column] * n, pa.string()),
            rows.column(column).cast(pa.string()),
        ],
        schema=VIOLATIONS_SCHEMA,
    )
    return RowRejects(rows, rows, violations)


@dataclass(frozen=True)
class Versions:
    """The extracted good rows sorted out: what is upserted, and what is set aside and why."""

    rows: pa.Table  # one row per key, to upsert
    ties: pa.Table  # different rows of one key with the same watermark: all of them quarantined
    backwards: pa.Table  # rows older than Bronze's version of their key: quarantined, Bronze keeps its row
    duplicates: int  # identical copies of a row, dropped (nothing is lost: they are the same row)


def split_versions(rows: pa.Table, contract: TableContract, bronze: pa.Table) -> Versions:
    """Resolve several versions of one key deterministically, or set them aside with a rule.

    - identical rows (the same row read twice) are one row;
    - different rows of one key with the same watermark value are ALL quarantined (`tie_rule`): the
      source broke its key, and picking one would publish a guess;
    - a row older than the version Bronze holds (`bronze`: key and watermark of every Bronze row) is
      quarantined (`backwards_rule`) and Bronze keeps its newer row: the watermark contract says a
      change moves the watermark forward, so an older value is either a clock or a restore upstream,
      which a person must judge;
    - of the rest, the newest version of each key is upserted.
    """
    key, stamp = contract.primary_key, contract.watermark
    distinct = rows.group_by(rows.column_names, use_threads=False).aggregate([]) if rows.num_rows else rows
    distinct = distinct.select(rows.column_names)
    counts = distinct.group_by([key, stamp], use_threads=False).aggregate([([], "count_all")])
    tied = counts.filter(pc.greater(counts.column("count_all"), 1)).select([key, stamp])
    ties = distinct.join(tied, keys=[key, stamp], join_type="left semi") if tied.num_rows else distinct.slice(0, 0)
    rest = distinct.join(tied, keys=[key, stamp], join_type="left anti") if tied.num_rows else distinct
    backwards = rest.slice(0, 0)
    if bronze.num_rows and rest.num_rows:
        held = bronze.select([key, stamp]).rename_columns([key, "_bronze_stamp"])
        joined = rest.join(held, keys=key, join_type="left outer")
        older = pc.fill_null(pc.less(joined.column(stamp), joined.column("_bronze_stamp")), False)
        backwards = joined.filter(older).select(rows.column_names)
        rest = joined.filter(pc.invert(older)).select(rows.column_names)
    return Versions(
        latest_version_per_key(rest.cast(rows.schema), contract),
        ties.cast(rows.schema),
        backwards.cast(rows.schema),
        rows.num_rows - distinct.num_rows,
    )


def normalized_stamp(value: object) -> object:
    """A watermark value as read (text in SQLite, a datetime in PostgreSQL, None) in one comparable form."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)  # unparseable text: compared as text


def quarantined_versions(records: pa.Table, contract: TableContract) -> set[tuple[str | None, object]]:
    """(row key, watermark value) of every row version the quarantine holds for this table."""
    pairs = zip(records.column("row_key").to_pylist(), records.column("raw_row").to_pylist(), strict=True)
    return {(row_key, normalized_stamp(json.loads(raw_row).get(contract.watermark))) for row_key, raw_row in pairs}


def keys_to_reconcile(
    contract: TableContract,
    source: SourceDatabase,
    watermark: str,
    bronze: pa.Table,
    quarantine: Callable[[], pa.Table],
) -> list[object]:
    """Keys whose source row lies BELOW the watermark yet is neither in Bronze nor in the quarantine as it is.

    The incremental read (`>= watermark`) never sees them: a row whose watermark moved backwards, or
    that was committed upstream after rows with later timestamps (a late insert or update). Every run
    reads the key and watermark columns of the rows below the watermark (narrow, but the whole table:
    the price of never losing such a row) and compares them with Bronze's key and watermark. Rows with a
    null key cannot be looked up; they are quarantined when a read at or after the watermark meets them.
    """
    key, stamp = contract.primary_key, contract.watermark
    narrow_contract = TableContract(
        name=contract.name,
        columns=tuple(c for c in contract.columns if c.name in (key, stamp)),
        primary_key=key,
        watermark=stamp,
    )
    narrow = source.read_arrow(
        f"SELECT {key}, {stamp} FROM {contract.name} WHERE {stamp} < '{watermark_literal(watermark)}'"
    )
    conformed = conform_rows(narrow, narrow_contract, f"source table {contract.name}", exact=False)
    good = conformed.rows
    candidates: list[tuple[object, object]] = []
    if good.num_rows:
        held = bronze.select([key, stamp]).rename_columns([key, "_bronze_stamp"])
        joined = good.join(held, keys=key, join_type="left outer")
        differs = pc.fill_null(pc.not_equal(joined.column(stamp), joined.column("_bronze_stamp")), True)
        changed = joined.filter(differs)
        candidates += zip(changed.column(key).to_pylist(), changed.column(stamp).to_pylist(), strict=True)
    raw = conformed.rejects.raw_rows  # unparseable watermark values, or a null key (not looked up)
    raw_pairs = zip(raw.column(key).to_pylist(), raw.column(stamp).to_pylist(), strict=True)
    candidates += [(k, normalized_stamp(v)) for k, v in raw_pairs]
    if not candidates:
        return []
    recorded = quarantined_versions(quarantine(), contract)
    return sorted({k for k, v in candidates if k is not None and (str(k), v) not in recorded})


def new_records_only(records: pa.Table, quarantine: Callable[[], pa.Table]) -> tuple[pa.Table, int]:
    """`records` without those the quarantine already holds (same row key, rule, column and raw row), so a
    row re-read on every run (at the watermark, or with a null watermark) is recorded once."""
    if not records.num_rows:
        return records, 0
    quarantine = quarantine()
    fields = ["row_key", "rule", "column_name", "raw_row"]
    held = set(zip(*(quarantine.column(f).to_pylist() for f in fields), strict=True))
    rows = zip(*(records.column(f).to_pylist() for f in fields), strict=True)
    keep = pa.array([row not in held for row in rows], pa.bool_())
    return records.filter(keep), records.num_rows - keep.true_count


@dataclass(frozen=True)
class Extraction:
    """What one extraction read, wrote and set aside: the asset's log line and audit metadata."""

    rows_in: int  # every row extracted, good or quarantined
    rows: pa.Table  # the good rows, one per key, as upserted
    rejects: list[RowRejects]  # every row set aside, by the contract or by `split_versions`
    updated: int
    inserted: int
    previous_watermark: str | None
    watermark: str | None
    table: "Table"
    total_rows: int
    new_columns: list[NewColumn] = field(default_factory=list)
    evolved: list[str] = field(default_factory=list)  # columns Bronze gained in this run
    late_rows: int = 0  # rows below the watermark read by reconciliation
    backwards: int = 0
    duplicates: int = 0
    already_quarantined: int = 0  # records not written again: the quarantine holds them already
    vanished: list[str] = field(default_factory=list)  # Bronze columns outside the contract the source dropped
    full_read: bool = False

    @property
    def rows_quarantined(self) -> int:
        return sum(r.num_rows for r in self.rejects)

    def reject_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for rejects in self.rejects:
            for rule, n in rejects.counts().items():
                counts[rule] = counts.get(rule, 0) + n
        return counts


def source_name(contract: TableContract) -> str:
    """How quarantine records name an OLTP source: the table only, never the URL (it may hold credentials)."""
    return f"source table {contract.name}"


def newest_watermark(contract: TableContract, tables: Sequence[pa.Table], previous: str | None) -> str | None:
    """The largest readable watermark over ALL extracted rows, quarantined ones included, never below
    `previous`.

    A quarantined row is recorded, not lost, so the watermark may move past it; when the producer fixes
    the row it gets a new `updated_at` and is extracted again.
    """
    values = [pc.max(rows.column(contract.watermark)).as_py() for rows in tables if rows.num_rows]
    values = [v for v in values if v is not None]
    if previous is not None:
        values.append(datetime.fromisoformat(previous))
    return max(values).isoformat(sep=" ") if values else None


def _plain(arrow_type: pa.DataType) -> pa.DataType:
    """pyiceberg reads strings as large_string; rows built here use the contract's plain string."""
    return pa.string() if pa.types.is_large_string(arrow_type) else arrow_type


def with_last_known_values(rows: pa.Table, table: "Table", key: str, columns: Sequence[str]) -> pa.Table:
    """`rows` with Bronze's current values of `columns` (ones the source dropped) joined by key, so an
    upsert keeps the last value the source had for each row instead of blanking it; null for new keys."""
    last = table.scan(selected_fields=(key, *columns)).to_arrow()
    last = last.cast(pa.schema([pa.field(f.name, _plain(f.type)) for f in last.schema]))
    joined = rows.join(last, keys=key, join_type="left outer").select([*rows.column_names, *columns])
    return joined.cast(pa.schema([*rows.schema, *(last.schema.field(c) for c in columns)]))  # a join drops not-null


def evolve_bronze_schema(table: "Table", columns: Sequence[ColumnContract]) -> list[str]:
    """Add the new source columns Bronze lacks (Iceberg schema evolution, its own commit); their names.

    The same commit adds an empty snapshot: pyiceberg's upsert reads the current snapshot in the schema
    that snapshot was written with, so without it the first upsert after the evolution would compare
    rows with the new column against rows without it and fail.
    """
    held = {f.name for f in table.schema().fields}
    missing = [c for c in columns if c.name not in held]
    if missing:
        with table.transaction() as tx:
            with tx.update_schema() as update:
                update.union_by_name(pa.schema([pa.field(c.name, c.arrow_type, nullable=True) for c in missing]))
            if table.current_snapshot() is not None:
                tx.append(tx.table_metadata.schema().as_arrow().empty_table())
    return [c.name for c in missing]


def extract_and_upsert(
    contract: TableContract, source: SourceDatabase, catalog: IcebergCatalog, run_id: str
) -> Extraction:
    """Check the source's schema, extract the rows changed since the stored watermark (and the rows below
    it that Bronze misses), quarantine those that break the contract row by row or cannot be placed, and
    upsert the others into `bronze.<table>`.

    The quarantine records are appended BEFORE the data commit that moves the watermark, so a crash in
    between cannot lose them; a record the quarantine already holds is not written again. The watermark
    is committed whenever it moved, with the data or, when the upsert changed nothing, in an empty
    snapshot of the same transaction.
    """
    identifier = f"bronze.{contract.name}"
    new_columns = new_source_columns(contract, source.table_columns(contract.name))  # before any row is read
    table = catalog.load_or_create_table(identifier, contract.arrow_schema())
    held = {f.name: f for f in table.schema().as_arrow()}
    # A column Bronze already holds is still extracted under `ignore`: upserts must carry every column.
    kept = tuple(c for c in evolved_columns(new_columns) if contract.on_new_columns == "evolve" or c.name in held)
    effective = replace(contract, columns=contract.columns + kept)
    vanished = [name for name in held if name not in effective.column_names]  # the source dropped them
    evolved = evolve_bronze_schema(table, kept)
    table = table.refresh() if evolved else table
    previous = stored_watermark(table)
    extracted_columns = ",".join(effective.column_names)
    covered = set((stored_property(table, COLUMNS_PROPERTY) or ",".join(contract.column_names)).split(","))
    # A column that earlier loads did not extract has no value in Bronze's older rows: read every row once.
    read_from = previous if set(effective.column_names) <= covered else None
    where = f"source table {contract.name}"

    bronze = table.scan(selected_fields=(contract.primary_key, contract.watermark)).to_arrow()
    # The table's quarantine records, read only when something may already be there (rarely).
    quarantine = cache(lambda: quarantined_rows(catalog, dataset=contract.name))
    reads = [source.read_arrow(extraction_query(effective, read_from))]
    late_keys = keys_to_reconcile(contract, source, read_from, bronze, quarantine) if read_from else []
    for start in range(0, len(late_keys), RECONCILE_BATCH):
        reads.append(source.read_arrow(rows_by_key_query(effective, late_keys[start : start + RECONCILE_BATCH])))
    conformed = [conform_rows(raw, effective, where, exact=False) for raw in reads]
    good = pa.concat_tables([c.rows for c in conformed])
    versions = split_versions(good, effective, bronze)
    rejects = [c.rejects for c in conformed if c.rejects.num_rows]
    if versions.ties.num_rows:
        rejects.append(rule_rejects(versions.ties, tie_rule(contract), contract.watermark))
    if versions.backwards.num_rows:
        rejects.append(rule_rejects(versions.backwards, backwards_rule(contract), contract.watermark))
    records = [
        quarantine_records(
            r,
            dataset=contract.name,
            source=source_name(contract),
            row_key_columns=contract.row_key,
            pii_columns=contract.pii,
        )
        for r in rejects
    ]
    all_records = pa.concat_tables(records) if records else RECORD_SCHEMA.empty_table()
    new_records, already = new_records_only(all_records, quarantine)
    record_quarantined_rows(catalog, new_records, run_id)

    rows = versions.rows
    if vanished:
        rows = with_last_known_values(rows, table, contract.primary_key, vanished)
    new_watermark = newest_watermark(contract, [good, *(c.rejects.typed_rows for c in conformed)], previous)
    properties = {WATERMARK_PROPERTY: new_watermark or "", COLUMNS_PROPERTY: extracted_columns, "strata.run_id": run_id}

    def write(target: "Table") -> tuple[int, int]:
        unchanged = (
            stored_watermark(target) == new_watermark and stored_property(target, COLUMNS_PROPERTY) == extracted_columns
        )
        with target.transaction() as tx:
            if rows.num_rows == 0:
                updated, inserted = 0, 0
            elif target.current_snapshot() is None:
                tx.append(rows, snapshot_properties=properties)
                updated, inserted = 0, rows.num_rows
            else:
                result = tx.upsert(rows, join_cols=[contract.primary_key], snapshot_properties=properties)
                updated, inserted = result.rows_updated, result.rows_inserted
            if updated + inserted == 0 and not unchanged:
                # Nothing to upsert (all quarantined, or re-read rows unchanged): an empty snapshot in the
                # same commit still records the watermark, so the next run does not read the batch again.
                tx.append(rows.slice(0, 0), snapshot_properties=properties)
        return updated, inserted

    updated, inserted = commit_with_retry(table, write)
    table = table.refresh()
    snapshot = table.current_snapshot()
    total = int(snapshot.summary["total-records"]) if snapshot else 0
    return Extraction(
        rows_in=sum(r.num_rows for r in reads),
        rows=rows,
        rejects=rejects,
        updated=updated,
        inserted=inserted,
        previous_watermark=previous,
        watermark=new_watermark,
        table=table,
        total_rows=total,
        new_columns=new_columns,
        evolved=evolved,
        late_rows=sum(r.num_rows for r in reads[1:]),
        backwards=versions.backwards.num_rows,
        duplicates=versions.duplicates,
        already_quarantined=already,
        vanished=vanished,
        full_read=read_from is None and previous is not None,
    )


def build_oltp_asset(contract: TableContract) -> dg.AssetsDefinition:
    @dg.asset(
        key=["bronze", contract.name],
        group_name=BRONZE_GROUP,
        kinds={"iceberg", "python"},
        pool="source_db",
        description=(
            f"Bronze copy of source table `{contract.name}`: changes since the last `{contract.watermark}` "
            f"watermark, upserted on `{contract.primary_key}`."
        ),
        metadata={"strata/primary_key": contract.primary_key, "strata/watermark_column": contract.watermark},
        output_required=False,
    )
    def bronze_oltp_table(
        context: dg.AssetExecutionContext, source_db: SourceDatabase, iceberg: IcebergCatalog, guard: IngestionGuard
    ):
        if not guard_passes(context, [guard.free_disk_problem(), source_problem(source_db)]):
            return  # nothing yielded: not materialized, nothing downstream runs
        try:
            run = extract_and_upsert(contract, source_db, iceberg, context.run.run_id)
        except ContractViolation as violation:
            # The same rows break the contract the same way on every attempt: fail now, no retry.
            raise dg.Failure(
                description=str(violation), metadata={"strata/contract": contract.name}, allow_retries=False
            ) from violation
        name = f"bronze.{contract.name}"
        since = "the beginning" if run.previous_watermark is None or run.full_read else run.previous_watermark
        context.log.info(
            f"{name}: {run.rows_in} changed row(s) since {since}"
            f" -> {run.updated} updated, {run.inserted} inserted, {run.rows_quarantined} quarantined; "
            f"watermark now {run.watermark}"
        )
        extra: dict[str, object] = {
            "rows_updated": run.updated,
            "rows_inserted": run.inserted,
            "watermark": run.watermark or "",
        }
        if run.new_columns:
            listed = ", ".join(c.describe() for c in run.new_columns)
            extra["new_source_columns"] = listed
            action = (
                f"added to {name} by schema evolution, every row read once: {', '.join(run.evolved)}"
                if run.evolved
                else "extracted into Bronze (on_new_columns: evolve)"
                if contract.on_new_columns == "evolve"
                else "not extracted (on_new_columns: ignore)"
            )
            context.log.warning(f"{name}: source column(s) not in the contract: {listed}; {action}")
        if run.evolved:
            extra["evolved_columns"] = ", ".join(run.evolved)
        if run.vanished:
            extra["vanished_source_columns"] = ", ".join(run.vanished)
            context.log.warning(
                f"{name}: the source no longer has column(s) {', '.join(run.vanished)} (not in the contract); "
                "Bronze keeps the column(s) with the last values the source had, null for new rows"
            )
        if run.late_rows:
            extra["late_rows"] = run.late_rows
            context.log.warning(
                f"{name}: {run.late_rows} row(s) below the watermark differ from Bronze (late or backdated "
                "changes upstream); read by key and sorted out like the others"
            )
        if run.duplicates:
            extra["duplicate_rows_dropped"] = run.duplicates
        if run.rows_quarantined:
            counts = describe_rejects(run.reject_counts())
            extra["quarantine_table"] = QUARANTINE_TABLE
            extra["quarantine_rules"] = counts
            if run.backwards:
                extra["rows_updated_at_backwards"] = run.backwards
            if run.already_quarantined:
                extra["already_quarantined"] = run.already_quarantined
            recorded = f" ({run.already_quarantined} of them already recorded there)" if run.already_quarantined else ""
            context.log.warning(
                f"{name}: {run.rows_quarantined} row(s) broke the contract and were written to "
                f"{QUARANTINE_TABLE} instead{recorded}: {counts}"
            )
        snapshot = run.table.current_snapshot()
        yield dg.MaterializeResult(
            metadata=audit_metadata(
                table_name=f"bronze.{contract.name}",
                uri=run.table.metadata_location,
                rows_in=run.rows_in,
                rows_out=run.updated + run.inserted,
                rows_quarantined=run.rows_quarantined,
                table_row_count=run.total_rows,
                checksum=table_checksum(run.rows, [contract.primary_key]),
                data_window=(run.previous_watermark or "-inf", run.watermark or "-inf"),
                input_partitions=[f"{contract.name}@{contract.watermark}>={run.previous_watermark or '-inf'}"],
                snapshot_id=snapshot.snapshot_id if snapshot else None,
                schema=run.table.schema().as_arrow(),
                extra=extra,
            ),
            data_version=content_data_version(run.table),
        )

    return bronze_oltp_table


def build_oltp_assets() -> list[dg.AssetsDefinition]:
    return [build_oltp_asset(contract) for contract in oltp_contracts().values()]
