"""Verify a landed drop against its manifest and contract before any row is loaded (DESIGN.md s5).

Every check names the drop, the file and what disagreed, so a producer can fix the delivery from the
error text alone. Bytes are read once: the same buffer is hashed and parsed.

The manifest describes the files as delivered, so sizes, hashes and row counts are checked against all
of their rows. Rows that then break a row-level rule of the contract (a null in a required column, an
unparseable timestamp) do not fail the drop: they are returned apart, per file, for the quarantine
table. A structural problem (a missing, unexpected or mistyped column) still fails the whole drop.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import pyarrow as pa

from assets.bronze.conform import ContractViolation, RowRejects, conform_rows
from assets.bronze.contracts import TableContract
from assets.drops.protocol import ERROR_NAME, MANIFEST_NAME, READY_NAME
from resources.landing import LandingZone

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
    present = {key.removeprefix(prefix) for key in landing.list_keys(prefix)}
    unlisted = sorted(present - set(listed) - PROTOCOL_FILES)
    if unlisted:
        raise DropVerificationError(prefix, "files", f"file(s) not in the manifest: {unlisted}", unlisted[0])
    tables, digests, rejects = [], {}, {}
    for entry in manifest["files"]:
        rows, rejected = _verify_file(landing, prefix, entry, contract, present)
        tables.append(rows)
        digests[entry["name"]] = entry["sha256"]
        if rejected.num_rows:
            rejects[entry["name"]] = rejected
    return VerifiedDrop(prefix, manifest, identity, pa.concat_tables(tables), digests, rejects)


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
    landing: LandingZone, prefix: str, entry: dict, contract: TableContract, present: set[str]
) -> tuple[pa.Table, RowRejects]:
    import pyarrow.parquet as pq

    name = entry["name"]
    if name not in present:
        raise DropVerificationError(prefix, "presence", "listed in the manifest but absent", name)
    data = landing.read_bytes(prefix + name)
    if len(data) != int(entry["bytes"]):
        raise DropVerificationError(prefix, "size", f"{len(data)} bytes, manifest says {entry['bytes']}", name)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise DropVerificationError(prefix, "sha256", f"sha256 is {digest}, manifest says {entry['sha256']}", name)
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DropVerificationError(prefix, "parse", f"not a readable parquet file ({exc})", name) from exc
    if table.num_rows != int(entry["rows"]):
        raise DropVerificationError(prefix, "row_count", f"{table.num_rows} rows, manifest says {entry['rows']}", name)
    try:
        conformed = conform_rows(table, contract, f"drop {prefix}{name}")
    except ContractViolation as exc:
        raise DropVerificationError(prefix, "contract", str(exc), name) from exc
    return conformed.rows, conformed.rejects
