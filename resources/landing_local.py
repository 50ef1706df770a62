"""The local-folder backend of the landing zone: the same protocol as S3 on a directory tree.

Only regular files inside the root are objects. Symbolic links (as files or as folders on the way) are
refused: a link can point anywhere on the machine, and S3 has no such thing. Listings skip them, reads
and copies refuse them without following them (`shutil.copyfile` would copy the target's bytes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any

from resources.landing import TEMP_PREFIX, LandedObject, RefusedObject, as_folder, not_found_error


@dataclass(frozen=True)
class LocalBackend:
    base: Path

    def _path(self, key: str) -> Path:
        """The path of `key`; RefusedObject if any part of it below the root is a symbolic link, so
        nothing reached through it can resolve outside the root (keys never hold '..')."""
        path = self.base
        for part in Path(key).parts:
            path = path / part
            if path.is_symlink():
                raise RefusedObject(f"{path} is a symbolic link: the landing zone accepts regular files only")
        return path

    def uri(self, key: str) -> str:
        return str(self.base / key)

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except RefusedObject:
            return False  # a link is not an object of the zone

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        with _open_regular_file(path) as f:
            return f.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        _replace_atomically(self._path(key), lambda temp: temp.write_bytes(data))

    def copy(self, src_key: str, dst_key: str) -> None:
        src = self._path(src_key)
        with _open_regular_file(src) as source:
            _replace_atomically(self._path(dst_key), lambda temp: _copy_to(source, temp))

    def delete(self, keys: Sequence[str]) -> None:
        """Unlink the files, then the folders they leave empty (never the root itself)."""
        folders = set()
        for key in keys:
            try:
                path = self._path(key)
            except RefusedObject:
                continue  # never delete through a link: the target may be outside the root
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
            info = entry.stat(follow_symlinks=False)
            etag = _file_md5(entry.path, info.st_size, info.st_mtime_ns, info.st_ino)
            yield LandedObject(key, info.st_size, etag, str(info.st_mtime_ns))

    def _walk(self, prefix: str, start_after: str) -> Iterator[tuple[str, os.DirEntry]]:
        """(key, entry) of matching files in key order, starting at the deepest folder the prefix names."""
        folder = prefix.rpartition("/")[0]
        yield from self._walk_folder(as_folder(folder), prefix, start_after)

    def _walk_folder(self, folder_key: str, prefix: str, start_after: str) -> Iterator[tuple[str, os.DirEntry]]:
        """Folders sort as `name/`, so a depth-first walk yields keys in exactly S3's order
        (`a-b` < `a/x` < `a0`), and whole sub-folders outside the prefix or cursor are skipped."""
        try:
            entries = list(os.scandir(self._path(folder_key)))
        except (FileNotFoundError, NotADirectoryError, RefusedObject):  # a linked folder lists as empty
            return
        children = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                children.append((f"{folder_key}{entry.name}/", entry, True))
            elif entry.is_file(follow_symlinks=False) and not entry.name.startswith(TEMP_PREFIX):
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


def _open_regular_file(path: Path):
    """Open `path` for reading without following a link in its last part (the parts above it are checked
    by `_path`); FileNotFoundError if it is absent or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise not_found_error(str(path)) from None
    except OSError as exc:
        if path.is_symlink():  # ELOOP: the last part became a link after `_path` looked
            raise RefusedObject(f"{path} is a symbolic link: the landing zone accepts regular files only") from exc
        raise
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise not_found_error(str(path))
    return f


def _copy_to(source, target: Path) -> None:
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


@lru_cache(maxsize=65536)
def _file_md5(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """md5 hex of a file; the stat fields are part of the cache key so a rewritten file is hashed again."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
