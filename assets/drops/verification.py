"""Verify a landed drop against its manifest and contract before any row is loaded (DESIGN.md s5).

Every check names the drop, the file and what disagreed, so a producer can fix the delivery from the
error text alone. Bytes are read once: the same buffer is hashed and parsed.

The manifest describes the files as delivered, so sizes, hashes and row counts are checked against all
of their rows. Each file is named once, by its canonical key: a manifest that lists a file twice (or
under two spellings, `a.parquet` and `./a.parquet`) would load it twice. Rows that then break a
row-level rule of the contract (a null in a required column, an unparseable timestamp, invalid UTF-8,
a time outside the drop's hour) do not fail the drop: they are returned apart, per file, for the
quarantine table. A structural problem (a missing, unexpected or mistyped column) still fails the
whole drop, and so does anything else that goes wrong once a file's bytes are read and verified: the
same bytes would fail the same way again, so the drop is classified (quarantined), never retried.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa

from assets.bronze.conform import ContractViolation, RowRejects, RowWindow, conform_rows
from assets.bronze.contracts import TableContract
from assets.drops.protocol import ERROR_NAME, MANIFEST_NAME, READY_NAME
from resources.landing import TEMP_PREFIX, LandingZone, RefusedObject

# Files the protocol itself writes next to the data (the error marker is written on quarantine).
PROTOCOL_FILES = {MANIFEST_NAME, READY_NAME, ERROR_NAME}
MANIFEST_FIELDS = ("dataset", "schema_version", "partition", "files")
FILE_FIELD_TYPES = {"name": str, "rows": int, "bytes": int, "sha256": str}
FILE_FIELDS = tuple(FILE_FIELD_TYPES)


class DropVerificationError(Exception):
    """A drop failed verification; `check` says which rule, `file` which file (if any)."""

    def __init__(self, prefix: str, check: str, detail: str, file: str | None = None):
        self.prefix, self.check, self.detail, self.file = prefix, check, detail, file
        where = f"{prefix}{file}" if file else prefix
        super().__init__(f"drop {where}: {check} check failed: {detail}")


@dataclass(frozen=True)
class VerifiedDrop:
    prefix: str
    manifest: dict
    manifest_md5: str  # the drop's identity: equal to the S3 ETag / local etag of its manifest
    rows: pa.Table  # the rows to load: every row of the files except the rejected ones
    file_sha256: dict[str, str] = field(default_factory=dict)
    rejects: dict[str, RowRejects] = field(default_factory=dict)  # by file name, only files with rejects

    @property
    def rows_in(self) -> int:
        """Rows delivered, as the manifest counts them (verified against the files)."""
        return sum(int(f["rows"]) for f in self.manifest["files"])

    @property
    def rows_quarantined(self) -> int:
        return sum(r.num_rows for r in self.rejects.values())


def outside_hour_rule(time_column: str) -> str:
    """Rule name of a drop's row whose time is outside the drop's hour."""
    return f"{time_column}_within_drop_hour"


def drop_hour_window(contract: TableContract, partition: dict[str, str]) -> RowWindow | None:
    """[hour, hour + 1 h) of the drop whose manifest partition is `partition`: the only partition its rows
    may write. None for a feed without a time column."""
    if not contract.time_column:
        return None
    start = datetime.fromisoformat(f"{partition['dt']}T{partition['hour']}:00:00")
    return RowWindow(contract.time_column, start, start + timedelta(hours=1), outside_hour_rule(contract.time_column))


def manifest_identity(raw: bytes) -> str:
    """md5 of the manifest bytes: what S3 reports as the manifest's ETag, so the sensor can tell drop
    versions apart from a listing alone, without reading any manifest."""
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


def read_manifest(landing: LandingZone, prefix: str) -> tuple[dict, str]:
    """The parsed manifest of the drop and its identity (see `manifest_identity`)."""
    key = prefix + MANIFEST_NAME
    if not landing.exists(key):
        raise DropVerificationError(prefix, "manifest", f"{MANIFEST_NAME} is missing", MANIFEST_NAME)
    raw = landing.read_bytes(key)
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DropVerificationError(prefix, "manifest", f"not valid JSON ({exc})", MANIFEST_NAME) from exc
    if not isinstance(manifest, dict):
        raise DropVerificationError(prefix, "manifest", "top level must be an object", MANIFEST_NAME)
    missing = [f for f in MANIFEST_FIELDS if f not in manifest]
    if missing:
        raise DropVerificationError(prefix, "manifest", f"missing field(s) {missing}", MANIFEST_NAME)
    if not isinstance(manifest["files"], list) or not all(isinstance(f, dict) for f in manifest["files"]):
        raise DropVerificationError(prefix, "manifest", "'files' must be a list of objects", MANIFEST_NAME)
    for entry in manifest["files"]:
        absent = [f for f in FILE_FIELDS if f not in entry]
        if absent:
            raise DropVerificationError(prefix, "manifest", f"file entry {entry} misses {absent}", MANIFEST_NAME)
        wrong = [f for f, kind in FILE_FIELD_TYPES.items() if type(entry[f]) is not kind]
        if wrong:
            raise DropVerificationError(prefix, "manifest", f"file entry {entry} has mistyped {wrong}", MANIFEST_NAME)
    return manifest, manifest_identity(raw)


def verify_drop(
    landing: LandingZone, prefix: str, contract: TableContract, expected_partition: dict[str, str]
) -> VerifiedDrop:
    """Check the drop under `prefix` completely and return its rows conformed to the contract, with the
    rows that broke a row-level rule set apart."""
    if not landing.exists(prefix + READY_NAME):
        raise DropVerificationError(prefix, "ready", f"no {READY_NAME} marker: the drop is not complete")
    manifest, identity = read_manifest(landing, prefix)
    _check_header(prefix, manifest, contract, expected_partition)
    listed = [f["name"] for f in manifest["files"]]
    if not listed:
        raise DropVerificationError(prefix, "files", "the manifest lists no data files (empty drop)")
    check_file_names(prefix, listed)
    present = {key.removeprefix(prefix) for key in landing.list_keys(prefix)}
    unlisted = sorted(present - set(listed) - PROTOCOL_FILES)
    if unlisted:
        raise DropVerificationError(prefix, "files", f"file(s) not in the manifest: {unlisted}", unlisted[0])
    tables, digests, rejects = [], {}, {}
    window = drop_hour_window(contract, expected_partition)
    for entry in manifest["files"]:
        rows, rejected = _verify_file(landing, prefix, entry, contract, present, window)
        tables.append(rows)
        digests[entry["name"]] = entry["sha256"]
        if rejected.num_rows:
            rejects[entry["name"]] = rejected
    return VerifiedDrop(prefix, manifest, identity, pa.concat_tables(tables), digests, rejects)


def check_file_names(prefix: str, names: list[str]) -> None:
    """Each listed name is the canonical key of a data file under the drop, and appears once."""
    for name in names:
        canonical = posixpath.normpath(name)
        if name != canonical or name.startswith(("/", "../")) or name in ("", ".", ".."):
            raise DropVerificationError(
                prefix,
                "files",
                f"file name {name!r} is not a plain relative name (it would name {canonical!r}): "
                "each file must be listed once, by its own name",
                MANIFEST_NAME,
            )
        if posixpath.basename(name) in PROTOCOL_FILES or posixpath.basename(name).startswith(TEMP_PREFIX):
            raise DropVerificationError(
                prefix, "files", f"{name!r} is a protocol or temporary file, not a data file", MANIFEST_NAME
            )
    seen: set[str] = set()
    duplicates = sorted({name for name in names if name in seen or seen.add(name)})
    if duplicates:
        raise DropVerificationError(
            prefix, "files", f"file(s) listed more than once in the manifest: {duplicates}", MANIFEST_NAME
        )


def _check_header(prefix: str, manifest: dict, contract: TableContract, expected: dict[str, str]) -> None:
    if manifest["dataset"] != contract.name:
        raise DropVerificationError(
            prefix,
            "dataset",
            f"manifest says {manifest['dataset']!r}, expected {contract.name!r}",
            MANIFEST_NAME,
        )
    if manifest["schema_version"] != contract.schema_version:
        raise DropVerificationError(
            prefix,
            "schema_version",
            f"manifest says {manifest['schema_version']!r}, contract is version {contract.schema_version}",
            MANIFEST_NAME,
        )
    if manifest["partition"] != expected:
        raise DropVerificationError(
            prefix,
            "partition",
            f"manifest says {manifest['partition']}, the path says {expected}",
            MANIFEST_NAME,
        )


def _verify_file(
    landing: LandingZone,
    prefix: str,
    entry: dict,
    contract: TableContract,
    present: set[str],
    window: RowWindow | None,
) -> tuple[pa.Table, RowRejects]:
    name = entry["name"]
    if name not in present:
        raise DropVerificationError(prefix, "presence", _absence(landing, prefix + name), name)
    try:
        data = landing.read_bytes(prefix + name)
    except RefusedObject as exc:
        raise DropVerificationError(prefix, "presence", f"refused: {exc}", name) from exc
    if len(data) != int(entry["bytes"]):
        raise DropVerificationError(prefix, "size", f"{len(data)} bytes, manifest says {entry['bytes']}", name)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise DropVerificationError(prefix, "sha256", f"sha256 is {digest}, manifest says {entry['sha256']}", name)
    try:
        return _parse_and_conform(prefix, name, data, entry, contract, window)
    except DropVerificationError:
        raise
    except Exception as exc:
        # The bytes are verified: whatever fails from here fails again on the same bytes.
        raise DropVerificationError(prefix, "unexpected", f"{type(exc).__name__}: {exc}", name) from exc


def _parse_and_conform(
    prefix: str, name: str, data: bytes, entry: dict, contract: TableContract, window: RowWindow | None
) -> tuple[pa.Table, RowRejects]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DropVerificationError(prefix, "parse", f"not a readable parquet file ({exc})", name) from exc
    if table.num_rows != int(entry["rows"]):
        raise DropVerificationError(prefix, "row_count", f"{table.num_rows} rows, manifest says {entry['rows']}", name)
    try:
        conformed = conform_rows(table, contract, f"drop {prefix}{name}", window=window)
    except ContractViolation as exc:
        raise DropVerificationError(prefix, "contract", str(exc), name) from exc
    if window is not None and contract.outside_drop_hour == "refuse":
        outside = conformed.rejects.counts().get((window.column, window.rule), 0)
        if outside:
            raise DropVerificationError(
                prefix,
                "drop_hour",
                f"{outside} row(s) with {window.column} outside the drop's hour "
                f"[{window.start:%Y-%m-%d %H:%M}, {window.end:%Y-%m-%d %H:%M}) (contract: outside_drop_hour: refuse)",
                name,
            )
    return conformed.rows, conformed.rejects


def _absence(landing: LandingZone, key: str) -> str:
    """Why a listed file is not among the drop's objects: absent, or refused (e.g. a symbolic link)."""
    try:
        landing.read_bytes(key)
    except RefusedObject as exc:
        return f"refused: {exc}"
    except FileNotFoundError:
        pass
    return "listed in the manifest but absent"
