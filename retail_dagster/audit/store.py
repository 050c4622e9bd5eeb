"""Append-only file store of the audit trail: a local folder or an S3 prefix (server-side encryption, conditional
writes so S3 itself refuses an overwrite)."""

from __future__ import annotations

import os
from typing import Any, Optional

from ..core.files import TMP_PREFIX, synced_temp_file
from ..core.loading import is_s3, make_s3_client, split_s3
from .layout import AuditConflict


class AuditStore:
    """Append-only file store: a local folder or an S3 prefix. Keys are '/'-separated, relative to the base."""

    def __init__(self, base: str, endpoint_url: Optional[str] = None, region_name: Optional[str] = None,
                 sse: Optional[str] = None, kms_key_id: Optional[str] = None, client: Any = None):
        self.base = base.rstrip("/") if is_s3(base) else base
        self.s3 = is_s3(base)
        self.sse, self.kms_key_id = sse, kms_key_id
        self._endpoint_url, self._region_name, self._client = endpoint_url, region_name, client
        if self.s3:
            self.bucket, self.prefix = split_s3(base)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_s3_client(self._endpoint_url, self._region_name)
        return self._client

    def uri(self, key: str) -> str:
        return f"{self.base}/{key}" if self.s3 else os.path.join(self.base, *key.split("/"))

    def _s3_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def exists(self, key: str) -> bool:
        if not self.s3:
            return os.path.exists(self.uri(key))
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._s3_key(key))
            return True
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def create(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        """Write a new file; AuditConflict if it exists. Atomic: the file is absent or whole, never partial."""
        if self.s3:
            extra: dict[str, Any] = {}
            if self.sse:
                extra["ServerSideEncryption"] = self.sse
                if self.sse == "aws:kms" and self.kms_key_id:
                    extra["SSEKMSKeyId"] = self.kms_key_id
            try:
                # IfNoneMatch='*' makes S3 itself refuse to overwrite (conditional write), not just this client.
                self.client.put_object(Bucket=self.bucket, Key=self._s3_key(key), Body=data,
                                       ContentType=content_type, IfNoneMatch="*", **extra)
            except self.client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise AuditConflict(f"audit file already exists, refusing to overwrite: {self.uri(key)}") from exc
                raise
            return
        path = self.uri(key)
        with synced_temp_file(path, data) as tmp:
            try:
                os.link(tmp, path)  # atomic, and fails instead of replacing an existing file
            except FileExistsError as exc:
                raise AuditConflict(f"audit file already exists, refusing to overwrite: {path}") from exc
            except OSError:  # filesystem without hard links: check-then-rename (a tiny race, still no partial file)
                if os.path.exists(path):
                    raise AuditConflict(f"audit file already exists, refusing to overwrite: {path}")
                os.replace(tmp, path)

    def read(self, key: str) -> Optional[bytes]:
        if self.s3:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._s3_key(key))["Body"].read()
            except self.client.exceptions.NoSuchKey:
                return None
        path = self.uri(key)
        if not os.path.exists(path):
            return None
        with open(path, "rb") as fh:
            return fh.read()

    def list_dirs(self, key: str) -> list[str]:
        """Names of the sub-folders directly under `key`."""
        if self.s3:
            prefix = self._s3_key(key).rstrip("/") + "/"
            names = []
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
            return sorted(names)
        path = self.uri(key)
        if not os.path.isdir(path):
            return []
        return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))

    def list_files(self, key: str) -> list[str]:
        """Names of the files directly under `key` (in-flight temp files excluded)."""
        if self.s3:
            prefix = self._s3_key(key).rstrip("/") + "/"
            names = []
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                names += [o["Key"][len(prefix):] for o in page.get("Contents", [])]
            return sorted(names)
        path = self.uri(key)
        if not os.path.isdir(path):
            return []
        return sorted(n for n in os.listdir(path)
                      if not n.startswith(TMP_PREFIX) and os.path.isfile(os.path.join(path, n)))
