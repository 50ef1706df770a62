"""Iceberg table maintenance: compaction of small data files, snapshot expiry, orphan-file removal.

Every load adds data files and a snapshot; over weeks a table collects many small files (slow scans,
one manifest per commit) and snapshots whose files nothing reads any more. These three operations
keep it lean, in this order, under a `RetentionPolicy`:

1. **Compaction** rewrites the small files of each partition into files of the table's target size,
   in ONE commit per table that deletes exactly the files it read (pyiceberg refuses the commit if a
   concurrent writer removed one of them; `commit_with_retry` then plans again from the new state).
   The rows are only moved: the commit is refused unless the new files hold as many rows as the old.
2. **Snapshot expiry** removes snapshots older than the retention, but always keeps the newest
   `min_snapshots`, every branch/tag head, and the snapshot that was current at the cutoff (so time
   travel to any moment inside the retention still works, and a reader pinned to a snapshot of the
   last days keeps its files). pyiceberg 0.12's `table.maintenance.expire_snapshots()` removes
   snapshots from the metadata only; their files become unreferenced and go in step 3.
3. **Orphan removal** deletes files under the table location that no live snapshot references (data,
   delete, manifest, manifest-list, statistics files; the current and logged metadata files) and that
   are older than `orphan_min_age`, which protects the files of a write still in flight.

pyiceberg 0.12 has no rewrite-data-files or remove-orphan-files action: compaction reads a
partition's files with `ArrowScan` and writes them with `_dataframe_to_data_files` (as the telemetry
load does, pyiceberg is pinned in uv.lock); the orphan listing goes through the table's FileIO
filesystem, so it works for `file://` and S3 warehouses alike.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from resources.iceberg import commit_with_retry

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import FileScanTask, Table
    from pyiceberg.table.metadata import TableMetadata

MAINTENANCE_PROPERTY = "strata.maintenance"


@dataclass(frozen=True)
class RetentionPolicy:
    """How much history a table keeps and when its files are compacted (jobs/policies.py holds the values)."""

    snapshot_max_age: timedelta = timedelta(days=7)  # time travel reaches this far back
    min_snapshots: int = 10  # ... and never fewer than this many of the newest snapshots survive
    orphan_min_age: timedelta = timedelta(hours=24)  # an unreferenced file younger than this may be a write in flight
    small_file_bytes: int = 64 * 1024 * 1024  # files below this size are compacted when a partition has two or more

    def __post_init__(self) -> None:
        if self.min_snapshots < 1:
            raise ValueError("min_snapshots must be at least 1: the current snapshot is never expired")
        if self.orphan_min_age < timedelta(hours=1):
            raise ValueError("orphan_min_age below 1 hour would race the writes in flight")


@dataclass
class TableMaintenance:
    """What maintenance did to one table: the figures its materialization reports."""

    table: str
    data_files_before: int = 0
    data_files_after: int = 0
    partitions_compacted: int = 0
    rows_rewritten: int = 0
    snapshots_before: int = 0
    snapshots_expired: int = 0
    orphan_files_removed: int = 0
    bytes_removed: int = 0
    skipped: list[str] = field(default_factory=list)  # partitions left alone, and why

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


# --- compaction ----------------------------------------------------------------------------------------


def live_scan_tasks(table: Table) -> list[FileScanTask]:
    return list(table.scan().plan_files()) if table.current_snapshot() is not None else []


def current_partition(data_file: DataFile, metadata: TableMetadata) -> tuple | None:
    """The partition of the CURRENT spec that `data_file` lies in, or None if it spans several.

    Files written under the current spec carry it. Files of an older spec (e.g. hourly files of a
    table now partitioned by day) are placed by their column bounds: the file lies in one partition
    when the current transforms give the same value for its lower and upper bound."""
    from pyiceberg.conversions import from_bytes

    spec = metadata.spec()
    if data_file.spec_id == spec.spec_id:
        return tuple(data_file.partition[i] for i in range(len(data_file.partition)))
    schema = metadata.schema()
    values = []
    for partition_field in spec.fields:
        source_type = schema.find_type(partition_field.source_id)
        low = (data_file.lower_bounds or {}).get(partition_field.source_id)
        high = (data_file.upper_bounds or {}).get(partition_field.source_id)
        if low is None or high is None:
            return None
        transform = partition_field.transform.transform(source_type)
        low_value, high_value = transform(from_bytes(source_type, low)), transform(from_bytes(source_type, high))
        if low_value != high_value:
            return None
        values.append(low_value)
    return tuple(values)


def compaction_groups(table: Table, policy: RetentionPolicy, report: TableMaintenance) -> list[list[FileScanTask]]:
    """The small files of each partition that has two or more of them (or that holds files of an older
    spec): each group becomes the files of one partition."""
    by_partition: dict[tuple, list[FileScanTask]] = {}
    spec_id = table.metadata.spec().spec_id
    for task in live_scan_tasks(table):
        if task.file.file_size_in_bytes >= policy.small_file_bytes and task.file.spec_id == spec_id:
            continue
        key = current_partition(task.file, table.metadata)
        if key is None:
            report.skipped.append(f"{task.file.file_path}: spans several partitions of the current spec")
            continue
        by_partition.setdefault(key, []).append(task)
    groups = []
    for key, tasks in sorted(by_partition.items(), key=lambda item: repr(item[0])):
        if any(task.delete_files for task in tasks):
            report.skipped.append(f"partition {key}: has delete files (merge-on-read), not rewritten here")
        elif len(tasks) > 1 or any(task.file.spec_id != spec_id for task in tasks):
            groups.append(tasks)
    return groups


def compact_table(table: Table, policy: RetentionPolicy, report: TableMaintenance) -> Table:
    """Rewrite each partition's small files into target-sized files, in one commit for the table.

    Memory is bounded by one partition: each group is read and written before the next one."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

    def rewrite(target: Table) -> Table:
        report.skipped.clear()  # planned again on every attempt
        groups = compaction_groups(target, policy, report)
        if not groups:
            return target
        write_uuid, counter = uuid.uuid4(), itertools.count()
        old_files = [task.file for group in groups for task in group]
        new_files: list[DataFile] = []
        try:
            for group in groups:
                rows = ArrowScan(target.metadata, target.io, target.schema(), AlwaysTrue()).to_table(group)
                new_files.extend(
                    _dataframe_to_data_files(
                        table_metadata=target.metadata, df=rows, io=target.io, write_uuid=write_uuid, counter=counter
                    )
                )
                del rows
            rows_old = sum(f.record_count for f in old_files)
            rows_new = sum(f.record_count for f in new_files)
            if rows_old != rows_new:
                raise RuntimeError(
                    f"compaction of {table_name(target)} read {rows_old} rows from {len(old_files)} file(s) but "
                    f"wrote {rows_new}; nothing was committed"
                )
        except BaseException:
            delete_files(target, [f.file_path for f in new_files])  # not committed: nothing refers to them
            raise
        try:
            with target.transaction() as tx:
                snapshot = tx.update_snapshot(snapshot_properties={MAINTENANCE_PROPERTY: "compaction"})
                with snapshot.overwrite() as overwrite:
                    for data_file in old_files:
                        overwrite.delete_data_file(data_file)
                    for data_file in new_files:
                        overwrite.append_data_file(data_file)
        except (CommitFailedException, ValidationException):
            # pyiceberg guarantees that these two mean the commit did not land, so no snapshot refers to
            # the new files; the retry writes its own. (Any other error may hide a commit that landed:
            # its files are left for orphan removal, which checks the references first.)
            delete_files(target, [f.file_path for f in new_files])
            raise
        report.partitions_compacted = len(groups)
        report.rows_rewritten = rows_new
        return target.refresh()

    return commit_with_retry(table, rewrite)


# --- snapshot expiry -----------------------------------------------------------------------------------


def snapshots_to_expire(metadata: TableMetadata, now: datetime, policy: RetentionPolicy) -> list[int]:
    """Snapshot ids the policy lets go: older than the cutoff, not among the newest `min_snapshots`, not a
    branch or tag head, and not the snapshot that was current at the cutoff."""
    cutoff_ms = int((now - policy.snapshot_max_age).timestamp() * 1000)
    snapshots = sorted(metadata.snapshots, key=lambda s: (s.timestamp_ms, s.sequence_number or 0))
    keep = {s.snapshot_id for s in snapshots[-policy.min_snapshots :]}
    keep |= {ref.snapshot_id for ref in metadata.refs.values()}
    current_then = [entry.snapshot_id for entry in metadata.snapshot_log if entry.timestamp_ms <= cutoff_ms]
    if current_then:
        keep.add(current_then[-1])
    return [s.snapshot_id for s in snapshots if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep]


def expire_snapshots(table: Table, policy: RetentionPolicy, report: TableMaintenance, now: datetime) -> Table:
    def expire(target: Table) -> Table:
        expired = snapshots_to_expire(target.metadata, now, policy)
        if expired:
            target.maintenance.expire_snapshots().by_ids(expired).commit()
        report.snapshots_expired = len(expired)
        return target.refresh()

    return commit_with_retry(table, expire)


# --- orphan files --------------------------------------------------------------------------------------


def referenced_files(table: Table) -> set[str]:
    """Every file the table's metadata reaches: its current and logged metadata files, and for each live
    snapshot its manifest list, manifests and their live data/delete files, plus statistics files.
    Paths normalised with `file_key` (scheme-less, as the filesystem lists them)."""
    metadata, io = table.metadata, table.io
    paths = {table.metadata_location, *(entry.metadata_file for entry in metadata.metadata_log)}
    paths |= {s.statistics_path for s in metadata.statistics}
    paths |= {s.statistics_path for s in getattr(metadata, "partition_statistics", [])}
    seen_manifests: set[str] = set()
    for snapshot in metadata.snapshots:
        paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            paths.add(manifest.manifest_path)
            paths |= {entry.data_file.file_path for entry in manifest.fetch_manifest_entry(io, discard_deleted=True)}
    return {file_key(table, path) for path in paths}


def file_key(table: Table, path: str) -> str:
    from pyiceberg.io.pyarrow import PyArrowFileIO

    return PyArrowFileIO.parse_location(path, table.io.properties)[2]


def list_table_files(table: Table) -> list[tuple[str, datetime, int]]:
    """(normalised path, modification time, size) of every file under the table location."""
    from pyarrow.fs import FileSelector, FileType
    from pyiceberg.io.pyarrow import PyArrowFileIO

    io = table.io
    if not isinstance(io, PyArrowFileIO):
        raise NotImplementedError(f"orphan removal lists files through PyArrowFileIO; {table_name(table)} uses {io}")
    scheme, netloc, path = PyArrowFileIO.parse_location(table.location(), io.properties)
    filesystem = io.fs_by_scheme(scheme, netloc)
    infos = filesystem.get_file_info(FileSelector(path, recursive=True, allow_not_found=True))
    return [
        (info.path, info.mtime.astimezone(UTC) if info.mtime else datetime.now(UTC), info.size or 0)
        for info in infos
        if info.type == FileType.File
    ]


def remove_orphan_files(table: Table, policy: RetentionPolicy, report: TableMaintenance, now: datetime) -> Table:
    """Delete the files under the table location that no live snapshot references and that are older
    than `orphan_min_age`. The references are read after the listing, and read again if the table
    changed meanwhile, so a file committed while we listed is never taken for an orphan."""
    listed = list_table_files(table)
    while True:
        table = table.refresh()
        location = table.metadata_location
        referenced = referenced_files(table)
        if table.refresh().metadata_location == location:
            break
    cutoff = now - policy.orphan_min_age
    scheme = _location_parts(table)[0]
    # The listing gives scheme-less paths: `/dir/file` locally, `bucket/key` on object stores.
    orphans = {
        (path if scheme == "file" else f"{scheme}://{path}"): size
        for path, mtime, size in listed
        if path not in referenced and mtime < cutoff
    }
    removed = delete_files(table, orphans)
    report.orphan_files_removed = len(removed)
    report.bytes_removed = sum(orphans[path] for path in removed)
    return table


def _location_parts(table: Table) -> tuple[str, str, str]:
    from pyiceberg.io.pyarrow import PyArrowFileIO

    return PyArrowFileIO.parse_location(table.location(), table.io.properties)


def delete_files(table: Table, paths: Iterable[str]) -> list[str]:
    """Delete `paths` through the table's FileIO; return those deleted (a file already gone is skipped)."""
    deleted = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            table.io.delete(path)
            deleted.append(path)
    return deleted


# --- all three -----------------------------------------------------------------------------------------


def table_name(table: Table) -> str:
    """`namespace.table`, as the rest of Strata names tables (the identifier may start with the catalog)."""
    return ".".join(table.name()[-2:])


def data_file_count(table: Table) -> int:
    return len(live_scan_tasks(table))


def maintain_table(table: Table, policy: RetentionPolicy, now: datetime | None = None) -> TableMaintenance:
    """Compact, expire, remove orphans: in this order, so the files compaction replaced are released by
    expiry once they leave the retention, and deleted by orphan removal in a later run."""
    now = now or datetime.now(UTC)
    report = TableMaintenance(table=table_name(table))
    report.data_files_before = data_file_count(table)
    report.snapshots_before = len(table.metadata.snapshots)
    table = compact_table(table, policy, report)
    table = expire_snapshots(table, policy, report, now)
    table = remove_orphan_files(table, policy, report, now)
    report.data_files_after = data_file_count(table)
    return report
