"""The outputs area: where published outputs (reports, extracts) leave the platform. A local folder by
default (`.strata/outputs`), an `s3://bucket/prefix` in prod (STRATA_OUTPUTS_URL).

Publishing is the landing protocol turned around (DESIGN.md section 9): the files are written under a
temporary prefix, then `_manifest.json` (name, size, sha256 of each file), then `_READY`, and only then
moved to the final folder. A reader that honours the protocol never sees a half-written output:
- local: the finished temporary folder is renamed onto the final path (an atomic rename; a previous
  version is renamed away first), so the final folder appears complete, `_READY` included, or not at all;
- S3 (no rename): the previous version's `_READY` is deleted first, the files are copied, then the
  manifest, then `_READY` last; a folder without `_READY` is not published, whatever it holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.landing import FILE_SCHEME, S3_SCHEME, TEMP_PREFIX, LandingZone, as_folder, checked_key

MANIFEST = "_manifest.json"
READY = "_READY"


@dataclass(frozen=True)
class PublishedFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Publication:
    """What was published: the final folder's URI and the manifest's entries."""

    uri: str
    files: tuple[PublishedFile, ...]


def manifest_bytes(files: Mapping[str, bytes]) -> bytes:
    """The manifest of `files`, sorted by name: the same files give the same bytes."""
    entries = [
        {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in sorted(files.items())
    ]
    return json.dumps({"files": entries}, indent=2).encode() + b"\n"


class OutputsArea(dg.ConfigurableResource):
    """Published outputs under a folder or `s3://bucket/prefix`, written with the publish protocol."""

    root: str = Field(description="Folder path, `file://` URL or `s3://bucket/optional/prefix`.")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"

    @property
    def is_s3(self) -> bool:
        return self.root.startswith(S3_SCHEME)

    def _zone(self) -> LandingZone:
        return LandingZone(root=self.root, s3_endpoint_url=self.s3_endpoint_url, s3_region=self.s3_region)

    def _local_root(self) -> Path:
        return Path(self.root.removeprefix(FILE_SCHEME))

    def uri(self, key: str) -> str:
        return self._zone().uri(checked_key(key))

    def publish(self, folder: str, files: Mapping[str, bytes]) -> Publication:
        """Publish `files` (name -> bytes, flat names) as folder `folder`, replacing a previous version."""
        folder = checked_key(folder.strip("/"))
        for name in files:
            if "/" in name or name in (MANIFEST, READY) or not name:
                raise ValueError(f"output file name {name!r} is not a plain file name of its own")
        manifest = manifest_bytes(files)
        entries = tuple(PublishedFile(**entry) for entry in json.loads(manifest)["files"])
        staging = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        if self.is_s3:
            self._publish_s3(folder, staging, files, manifest)
        else:
            self._publish_local(folder, staging, files, manifest)
        return Publication(uri=self.uri(folder), files=entries)

    def _publish_local(self, folder: str, staging: str, files: Mapping[str, bytes], manifest: bytes) -> None:
        root = self._local_root()
        temporary, final = root / staging, root / folder
        temporary.mkdir(parents=True)
        try:
            for name, data in sorted(files.items()):
                (temporary / name).write_bytes(data)
            (temporary / MANIFEST).write_bytes(manifest)
            (temporary / READY).write_bytes(b"")
            final.parent.mkdir(parents=True, exist_ok=True)
            previous = root / f"{TEMP_PREFIX}old-{uuid.uuid4().hex}"
            if final.exists():
                os.rename(final, previous)  # the old version disappears whole...
            try:
                os.rename(temporary, final)  # ...and the new one appears whole
            except OSError:
                if previous.exists():
                    os.rename(previous, final)  # put the old version back: a failed publish changes nothing
                raise
            shutil.rmtree(previous, ignore_errors=True)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)

    def _publish_s3(self, folder: str, staging: str, files: Mapping[str, bytes], manifest: bytes) -> None:
        zone, final = self._zone(), as_folder(folder)
        temporary = as_folder(f"{folder.rpartition('/')[0]}/{staging}".lstrip("/"))
        try:
            for name, data in sorted(files.items()):
                zone.write_bytes(temporary + name, data)
            zone.write_bytes(temporary + MANIFEST, manifest)
            zone.write_bytes(temporary + READY, b"")
            zone.delete([final + READY])  # the previous version stops being published first
            previous = set(zone.list_keys(final))
            for name in [*sorted(files), MANIFEST, READY]:  # `_READY` last
                zone.copy(temporary + name, final + name)
            zone.delete(sorted(previous - {final + name for name in [*files, MANIFEST, READY]}))
        finally:
            zone.delete(zone.list_keys(temporary))

    def published_folders(self, prefix: str) -> list[str]:
        """The folders under `prefix` that are published (have `_READY`), sorted; never a staging folder."""
        keys = self._zone().list_keys(as_folder(checked_key(prefix.strip("/"))))
        folders = (key.removesuffix("/" + READY) for key in keys if key.endswith("/" + READY))
        return [f for f in folders if not any(part.startswith(TEMP_PREFIX) for part in f.split("/"))]

    def read_published(self, folder: str) -> dict[str, bytes] | None:
        """A reader's view: None while `folder` has no `_READY` (or is being replaced as we read); else the
        manifest's files, each checked against its size and sha256. A file that does not match while the
        folder stays published (same `_READY`, same manifest) is corrupt: ValueError naming it."""
        zone, prefix = self._zone(), as_folder(checked_key(folder.strip("/")))
        try:
            if not zone.exists(prefix + READY):
                return None
            manifest_data = zone.read_bytes(prefix + MANIFEST)
            files, mismatched = {}, []
            for entry in json.loads(manifest_data)["files"]:
                data = zone.read_bytes(prefix + entry["name"])
                if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    mismatched.append(zone.uri(prefix + entry["name"]))
                files[entry["name"]] = data
            if not zone.exists(prefix + READY) or zone.read_bytes(prefix + MANIFEST) != manifest_data:
                return None  # a new version was published while we read: poll again
        except FileNotFoundError:
            return None  # replaced while we read (local: renamed away whole); poll again
        if mismatched:
            raise ValueError(f"{', '.join(mismatched)} does not match its manifest entry")
        return files
