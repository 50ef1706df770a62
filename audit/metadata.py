"""The one builder of audit metadata (DESIGN.md section 6).

Assets call `audit_metadata(...)` instead of assembling dictionaries by hand, so every materialization
carries the same keys: Dagster's standard ones where they exist and `strata/` ones for the rest.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from functools import cache

import dagster as dg
import pyarrow as pa

from resources.settings import REPO_ROOT, load_settings

# Run tag set by the ingestion guard (assets/bronze/guard.py) on a run that succeeded without running its
# asset; the audit record reports it as `not_run_reason`.
NOT_RUN_TAG = "strata/not_run"


@cache
def code_identity() -> tuple[str, str]:
    """(git sha, image) of the running code: from the environment in images, from git in a checkout."""
    settings = load_settings()
    git_sha = settings.git_sha
    if not git_sha:
        try:
            git_sha = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            git_sha = "unknown"
    return git_sha, settings.image or "local"


def table_checksum(table: pa.Table, sort_by: Sequence[str]) -> str:
    """Order-independent content checksum: sha256 of the table sorted by `sort_by`, in Arrow IPC.

    Sorting first makes the value depend on the rows only, not on how a reader chunked or ordered
    them, so two loads of the same data give the same checksum.
    """
    if not is_sorted(table, sort_by):
        table = table.sort_by([(c, "ascending") for c in sort_by])
    # Fresh contiguous buffers per column (`concat_arrays` copies, and keeps a validity bitmap only when a
    # value is null): IPC writes the buffers as laid out, and Arrow may or may not carry an all-valid
    # bitmap or a longer buffer behind a slice (a sort, a reader's chunk). Equal tables were then hashed
    # differently, and a re-run that changed nothing showed a new checksum (test_end_to_end's idempotency).
    ordered = pa.table(
        [pa.concat_arrays(c.chunks) if c.num_chunks else pa.array([], c.type) for c in table.columns],
        schema=table.schema,
    )
    digest = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, ordered.schema) as writer:
        writer.write_table(ordered)
    digest.update(sink.getvalue())
    return digest.hexdigest()


def is_sorted(table: pa.Table, columns: Sequence[str]) -> bool:
    """True when rows are already in ascending order of `columns` (ties allowed), checked in a few
    vectorised passes: drops usually arrive sorted, and sorting a million rows costs more than this."""
    import pyarrow.compute as pc

    if table.num_rows < 2 or any(table.column(c).null_count for c in columns):
        return table.num_rows < 2
    ahead = pa.array([False] * (table.num_rows - 1))  # row i already before row i+1 on an earlier column
    tied = pa.array([True] * (table.num_rows - 1))  # rows i and i+1 equal on every column so far
    for name in columns:
        values = table.column(name)
        current, following = values.slice(0, table.num_rows - 1), values.slice(1)
        ahead = pc.or_(ahead, pc.and_(tied, pc.less(current, following)))
        tied = pc.and_(tied, pc.equal(current, following))
    return pc.all(pc.or_(ahead, tied)).as_py()


def combine_checksums(checksums: Iterable[str]) -> str:
    """One checksum standing for several (e.g. the files of a drop), independent of their order."""
    return hashlib.sha256("\n".join(sorted(checksums)).encode()).hexdigest()


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(f.name, str(f.type), constraints=dg.TableColumnConstraints(nullable=f.nullable))
            for f in schema
        ]
    )


def audit_metadata(
    *,
    table_name: str,
    uri: str,
    rows_in: int,
    rows_out: int,
    table_row_count: int,
    checksum: str,
    data_window: tuple[str, str],
    input_partitions: Sequence[str],
    snapshot_id: int | None,
    schema: pa.Schema | None = None,
    rows_quarantined: int = 0,
    partition_row_count: int | None = None,
    extra: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Metadata for one Bronze materialization; `extra` adds asset-specific `strata/` entries."""
    git_sha, image = code_identity()
    metadata: dict[str, object] = {
        "dagster/table_name": table_name,
        "dagster/uri": dg.MetadataValue.url(uri) if "://" in uri else dg.MetadataValue.path(uri),
        "dagster/row_count": table_row_count,
        "strata/rows_in": rows_in,
        "strata/rows_out": rows_out,
        "strata/rows_quarantined": rows_quarantined,
        "strata/checksum": checksum,
        "strata/data_window": f"[{data_window[0]}, {data_window[1]})",
        "strata/input_partitions": dg.MetadataValue.json(list(input_partitions)),
        "strata/snapshot_id": str(snapshot_id) if snapshot_id is not None else "none",
        "strata/git_sha": git_sha,
        "strata/image": image,
    }
    if partition_row_count is not None:
        metadata["dagster/partition_row_count"] = partition_row_count
    if schema is not None:
        metadata["dagster/column_schema"] = column_schema(schema)
    metadata.update({f"strata/{k}": v for k, v in (extra or {}).items()})
    return metadata
