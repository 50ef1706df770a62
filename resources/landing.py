"""The landing zone where producers drop files: a local folder (default) or an S3 prefix (prod).

Keys are '/'-separated paths relative to the zone's root (e.g.
`telemetry/dt=2026-10-01/hour=05/_manifest.json`), the same for both backends, so the drop protocol
(DESIGN.md section 5) is implemented once on top of this interface. Prefixes are plain string
prefixes, as in S3: `telemetry/dt=2026-10` matches every day of October.

boto3 and dagster-aws are imported only when an S3 zone is first used: the code location loads
without them (importing dagster-aws costs ~0.7 s).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

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
    def _backend(self) -> _Backend:
        if self.root.startswith(S3_SCHEME):
            bucket, _, prefix = self.root.removeprefix(S3_SCHEME).partition("/")
            if not bucket:
                raise ValueError(f"landing root {self.root!r} names no bucket")
            return _S3Backend(bucket, _as_folder(prefix), self.s3_endpoint_url, self.s3_region)
        return _LocalBackend(Path(self.root.removeprefix(FILE_SCHEME)))

    def uri(self, key: str) -> str:
        """Absolute path (local) or `s3://bucket/prefix/key`: what error messages and metadata show."""
        return self._backend.uri(_checked(key))

    def exists(self, key: str) -> bool:
        return self._backend.exists(_checked(key))

    def read_bytes(self, key: str) -> bytes:
        """The object's content; FileNotFoundError naming the uri if it is absent."""
        return self._backend.read_bytes(_checked(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write the whole object at once: readers see the old content or the new one, never a part."""
        self._backend.write_bytes(_checked(key), data)

    def list_keys(self, prefix: str) -> list[str]:
        """Keys of the objects under `prefix` (recursively), sorted."""
        return list(self._backend.iter_keys(_checked(prefix), ""))

    def list_objects(self, prefix: str, start_after: str | None = None) -> Iterator[LandedObject]:
        """Objects under `prefix` sorted by key, only keys > `start_after`: a cursor for incremental scans."""
        return self._backend.list_objects(_checked(prefix), start_after or "")

    def copy(self, src_key: str, dst_key: str) -> None:
        self._backend.copy(_checked(src_key), _checked(dst_key))

    def delete(self, keys: Sequence[str]) -> None:
        """Delete the objects; absent keys are ignored (as S3 does)."""
        self._backend.delete([_checked(key) for key in keys])

    def move_prefix(self, src_prefix: str, dst_prefix: str) -> list[str]:
        """Move every object under folder `src_prefix` to the same relative name under `dst_prefix`.

        Copies first and deletes the sources after, so an interruption leaves a duplicate, never a
        loss. Both prefixes are folders ('/' is appended if missing): `hour=05` never moves
        `hour=050`. Returns the destination keys.
        """
        src, dst = _as_folder(_checked(src_prefix)), _as_folder(_checked(dst_prefix))
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


def _checked(key: str) -> str:
    """Reject keys that would escape the root, so a manifest entry cannot point outside the zone."""
    if key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"landing key must be relative to the root, without '..': {key!r}")
    return key


def _as_folder(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _not_found(uri: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "landed object not found", uri)


class _Backend(Protocol):
    def uri(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def iter_keys(self, prefix: str, start_after: str) -> Iterator[str]: ...
    def list_objects(self, prefix: str, start_after: str) -> Iterator[LandedObject]: ...
    def copy(self, src_key: str, dst_key: str) -> None: ...
    def delete(self, keys: Sequence[str]) -> None: ...


# --- local folder -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LocalBackend:
    base: Path

    def _path(self, key: str) -> Path:
        return self.base / key

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise _not_found(str(path))
        return path.read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        _replace_atomically(self._path(key), lambda temp: temp.write_bytes(data))

    def copy(self, src_key: str, dst_key: str) -> None:
        src = self._path(src_key)
        if not src.is_file():
            raise _not_found(str(src))
        _replace_atomically(self._path(dst_key), lambda temp: shutil.copyfile(src, temp))

    def delete(self, keys: Sequence[str]) -> None:
        """Unlink the files, then the folders they leave empty (never the root itself)."""
        folders = set()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            self._remove_empty_folders(folder)

    def _remove_empty_folders(self, folder: Path) -> None:
        while folder != self.base and folder.is_relative_to(self.base):
            try:
                folder.rmdir()
            except OSError:  # not empty, or already removed
                return
            folder = folder.parent

    def iter_keys(self, prefix: str, start_after: str) -> Iterator[str]:
        return (key for key, _ in self._walk(prefix, start_after))

    def list_objects(self, prefix: str, start_after: str) -> Iterator[LandedObject]:
        for key, entry in self._walk(prefix, start_after):
            stat = entry.stat()
            etag = _file_md5(entry.path, stat.st_size, stat.st_mtime_ns, stat.st_ino)
            yield LandedObject(key, stat.st_size, etag, str(stat.st_mtime_ns))

    def _walk(self, prefix: str, start_after: str) -> Iterator[tuple[str, os.DirEntry]]:
        """(key, entry) of matching files in key order, starting at the deepest folder the prefix names."""
        folder = prefix.rpartition("/")[0]
        yield from self._walk_folder(_as_folder(folder), prefix, start_after)

    def _walk_folder(self, folder_key: str, prefix: str, start_after: str) -> Iterator[tuple[str, os.DirEntry]]:
        """Folders sort as `name/`, so a depth-first walk yields keys in exactly S3's order
        (`a-b` < `a/x` < `a0`), and whole sub-folders outside the prefix or cursor are skipped."""
        try:
            entries = list(os.scandir(self.base / folder_key))
        except (FileNotFoundError, NotADirectoryError):
            return
        children = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                children.append((f"{folder_key}{entry.name}/", entry, True))
            elif entry.is_file() and not entry.name.startswith(TEMP_PREFIX):
                children.append((folder_key + entry.name, entry, False))
        for key, entry, is_folder in sorted(children, key=itemgetter(0)):
            if is_folder:
                if _folder_may_match(key, prefix, start_after):
                    yield from self._walk_folder(key, prefix, start_after)
            elif key.startswith(prefix) and key > start_after:
                yield key, entry


def _folder_may_match(folder_key: str, prefix: str, start_after: str) -> bool:
    """Whether any key starting with `folder_key` can start with `prefix` and sort after `start_after`."""
    under_prefix = folder_key.startswith(prefix) or prefix.startswith(folder_key)
    after_cursor = start_after < folder_key or start_after.startswith(folder_key)
    return under_prefix and after_cursor


def _replace_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Write to a hidden temp name in the same folder, then rename: the final name only holds whole files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{uuid.uuid4().hex}")
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@lru_cache(maxsize=65536)
def _file_md5(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """md5 hex of a file; the stat fields are part of the cache key so a rewritten file is hashed again."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- S3 ---------------------------------------------------------------------------------------------

_S3_CLIENTS: dict[tuple[str | None, str], Any] = {}
_S3_CLIENTS_LOCK = threading.Lock()


def _s3_client(endpoint_url: str | None, region: str) -> Any:
    """One client per (endpoint, region) and process: building one costs ~100 ms and they are thread-safe.

    Credentials come from the standard AWS chain when the client is first built.
    """
    with _S3_CLIENTS_LOCK:
        client = _S3_CLIENTS.get((endpoint_url, region))
        if client is None:
            from dagster_aws.s3 import S3Resource

            client = S3Resource(endpoint_url=endpoint_url, region_name=region).get_client()
            _S3_CLIENTS[(endpoint_url, region)] = client
        return client


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in {"404", "NoSuchKey", "NotFound"}


@dataclass(frozen=True)
class _S3Backend:
    bucket: str
    root_prefix: str  # '' or ends with '/'
    endpoint_url: str | None
    region: str

    @property
    def _client(self) -> Any:
        return _s3_client(self.endpoint_url, self.region)

    def _full(self, key: str) -> str:
        return self.root_prefix + key

    def uri(self, key: str) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self._full(key)}"

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _is_not_found(exc):
                raise _not_found(self.uri(key)) from exc
            raise
        return response["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)

    def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side copy in one request (objects up to 5 GB; drop files are far smaller)."""
        from botocore.exceptions import ClientError

        source = {"Bucket": self.bucket, "Key": self._full(src_key)}
        try:
            self._client.copy_object(Bucket=self.bucket, Key=self._full(dst_key), CopySource=source)
        except ClientError as exc:
            if _is_not_found(exc):
                raise _not_found(self.uri(src_key)) from exc
            raise

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), S3_BATCH_SIZE):
            batch = [{"Key": self._full(key)} for key in keys[start : start + S3_BATCH_SIZE]]
            response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            failed = response.get("Errors", [])
            if failed:
                details = ", ".join(f"{e['Key']}: {e.get('Code')}" for e in failed[:5])
                raise OSError(f"S3 refused to delete {len(failed)} object(s) in s3://{self.bucket}: {details}")

    def iter_keys(self, prefix: str, start_after: str) -> Iterator[str]:
        return (obj.key for obj in self.list_objects(prefix, start_after))

    def list_objects(self, prefix: str, start_after: str) -> Iterator[LandedObject]:
        """ListObjectsV2 pages (S3 returns keys in UTF-8 order, the same order as Python's str sort)."""
        arguments = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
        if start_after:
            arguments["StartAfter"] = self._full(start_after)
        pages = self._client.get_paginator("list_objects_v2").paginate(
            **arguments, PaginationConfig={"PageSize": S3_BATCH_SIZE}
        )
        for page in pages:
            for item in page.get("Contents", []):
                if item["Key"].endswith("/"):  # a console "folder" marker, not a file
                    continue
                key = item["Key"].removeprefix(self.root_prefix)
                yield LandedObject(key, int(item["Size"]), item["ETag"].strip('"'), item["LastModified"].isoformat())
