"""The landing zone where producers drop files: a local folder (default) or an S3 prefix (prod).

Keys are '/'-separated paths relative to the zone's root (e.g.
`telemetry/dt=2026-10-01/hour=05/_manifest.json`), the same for both backends, so the drop protocol
(DESIGN.md section 5) is implemented once on top of this interface. Prefixes are plain string
prefixes, as in S3: `telemetry/dt=2026-10` matches every day of October.

The backends live in `landing_local.py` and `landing_s3.py`. boto3 and dagster-aws are imported only when
an S3 zone is first used: the code location loads without them (importing dagster-aws costs ~0.7 s).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dagster as dg
from pydantic import Field

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"
# Producers write under this name and rename: such files are never part of a drop.
TEMP_PREFIX = ".tmp-"
# S3's limit for one ListObjectsV2 page and for one DeleteObjects request.
S3_BATCH_SIZE = 1000


@dataclass(frozen=True)
class LandedObject:
    """One landed file. `etag` fingerprints the content: equal bytes give equal etags on both backends
    (S3: the ETag, the md5 hex for single-part uploads; local: the md5 hex of the file)."""

    key: str
    size: int
    etag: str
    # When this copy was written (local: mtime in ns; S3: LastModified). Tells deliveries of
    # identical bytes apart, e.g. a drop re-delivered after its first copy was quarantined.
    modified: str = ""


class LandingZone(dg.ConfigurableResource):
    """Files dropped by producers, under a local folder or an `s3://bucket/prefix` root."""

    root: str = Field(description="Folder path, `file://` URL or `s3://bucket/optional/prefix`.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint for S3-compatible stores (minio, moto); None for AWS."
    )
    s3_region: str = Field(default="us-east-1", description="Region of the S3 bucket.")

    @property
    def _backend(self) -> Backend:
        if self.root.startswith(S3_SCHEME):
            bucket, _, prefix = self.root.removeprefix(S3_SCHEME).partition("/")
            if not bucket:
                raise ValueError(f"landing root {self.root!r} names no bucket")
            from resources.landing_s3 import S3Backend

            return S3Backend(bucket, as_folder(prefix), self.s3_endpoint_url, self.s3_region)
        from resources.landing_local import LocalBackend

        return LocalBackend(Path(self.root.removeprefix(FILE_SCHEME)))

    def uri(self, key: str) -> str:
        """Absolute path (local) or `s3://bucket/prefix/key`: what error messages and metadata show."""
        return self._backend.uri(checked_key(key))

    def exists(self, key: str) -> bool:
        return self._backend.exists(checked_key(key))

    def read_bytes(self, key: str) -> bytes:
        """The object's content; FileNotFoundError naming the uri if it is absent."""
        return self._backend.read_bytes(checked_key(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write the whole object at once: readers see the old content or the new one, never a part."""
        self._backend.write_bytes(checked_key(key), data)

    def list_keys(self, prefix: str) -> list[str]:
        """Keys of the objects under `prefix` (recursively), sorted."""
        return list(self._backend.iter_keys(checked_key(prefix), ""))

    def list_objects(self, prefix: str, start_after: str | None = None) -> Iterator[LandedObject]:
        """Objects under `prefix` sorted by key, only keys > `start_after`: a cursor for incremental scans."""
        return self._backend.list_objects(checked_key(prefix), start_after or "")

    def copy(self, src_key: str, dst_key: str) -> None:
        self._backend.copy(checked_key(src_key), checked_key(dst_key))

    def delete(self, keys: Sequence[str]) -> None:
        """Delete the objects; absent keys are ignored (as S3 does)."""
        self._backend.delete([checked_key(key) for key in keys])

    def move_prefix(self, src_prefix: str, dst_prefix: str) -> list[str]:
        """Move every object under folder `src_prefix` to the same relative name under `dst_prefix`.

        Copies first and deletes the sources after, so an interruption leaves a duplicate, never a
        loss. Both prefixes are folders ('/' is appended if missing): `hour=05` never moves
        `hour=050`. Returns the destination keys.
        """
        src, dst = as_folder(checked_key(src_prefix)), as_folder(checked_key(dst_prefix))
        if not src or not dst or src.startswith(dst) or dst.startswith(src):
            raise ValueError(f"cannot move {src_prefix!r} to {dst_prefix!r}: prefixes must be disjoint folders")
        sources = self.list_keys(src)
        moved = []
        for key in sources:
            target = dst + key.removeprefix(src)
            self.copy(key, target)
            moved.append(target)
        self.delete(sources)
        return moved


class RefusedObject(ValueError):
    """A landed path that is not a plain object of the zone (e.g. a symbolic link on a local folder):
    it is never read, listed or copied, because its bytes may live outside the landing root."""


def checked_key(key: str) -> str:
    """Reject keys that would escape the root, so a manifest entry cannot point outside the zone."""
    if key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"landing key must be relative to the root, without '..': {key!r}")
    return key


def as_folder(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def not_found_error(uri: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "landed object not found", uri)


class Backend(Protocol):
    def uri(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def iter_keys(self, prefix: str, start_after: str) -> Iterator[str]: ...
    def list_objects(self, prefix: str, start_after: str) -> Iterator[LandedObject]: ...
    def copy(self, src_key: str, dst_key: str) -> None: ...
    def delete(self, keys: Sequence[str]) -> None: ...
