"""The S3 backend of the landing zone (dagster-aws's S3Resource client, imported on first use)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from resources.landing import S3_BATCH_SIZE, S3_SCHEME, LandedObject, not_found_error

S3_CLIENTS: dict[tuple[str | None, str], Any] = {}
S3_CLIENTS_LOCK = threading.Lock()


def s3_client(endpoint_url: str | None, region: str) -> Any:
    """One client per (endpoint, region) and process: building one costs ~100 ms and they are thread-safe.

    Credentials come from the standard AWS chain when the client is first built.
    """
    with S3_CLIENTS_LOCK:
        client = S3_CLIENTS.get((endpoint_url, region))
        if client is None:
            from dagster_aws.s3 import S3Resource

            client = S3Resource(endpoint_url=endpoint_url, region_name=region).get_client()
            S3_CLIENTS[(endpoint_url, region)] = client
        return client


def is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in {"404", "NoSuchKey", "NotFound"}


@dataclass(frozen=True)
class S3Backend:
    bucket: str
    root_prefix: str  # '' or ends with '/'
    endpoint_url: str | None
    region: str

    @property
    def _client(self) -> Any:
        return s3_client(self.endpoint_url, self.region)

    def _full(self, key: str) -> str:
        return self.root_prefix + key

    def uri(self, key: str) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self._full(key)}"

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if is_not_found(exc):
                raise not_found_error(self.uri(key)) from exc
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
            if is_not_found(exc):
                raise not_found_error(self.uri(src_key)) from exc
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
