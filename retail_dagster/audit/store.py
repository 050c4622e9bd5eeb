"""The audit trail's view of core.storage: keys relative to a base (a local folder or an S3 prefix), server-side
encryption on every S3 object, and AuditConflict instead of ever replacing a file (on S3 a conditional PUT, so the
store itself refuses)."""

from __future__ import annotations

import os
from typing import Any, Optional

from ..core import storage
from ..core.storage import is_s3
from .layout import AuditConflict


class AuditStore:
    """Append-only file store: a local folder or an S3 prefix. Keys are '/'-separated, relative to the base."""

    def __init__(self, base: str, endpoint_url: Optional[str] = None, region_name: Optional[str] = None,
                 sse: Optional[str] = None, kms_key_id: Optional[str] = None, client: Any = None):
        self.s3 = is_s3(base)
        self.base = base.rstrip("/") if self.s3 else base
        self.sse, self.kms_key_id = sse, kms_key_id
        self._endpoint_url, self._region_name, self._client = endpoint_url, region_name, client

    @property
    def client(self) -> Any:
        """The S3 client (None for a local store): the one given, one for this store's endpoint or region, else
        the process's shared client."""
        if not self.s3:
            return None
        if self._client is None:
            self._client = (storage.make_s3_client(self._endpoint_url, self._region_name)
                            if self._endpoint_url or self._region_name else storage.s3_client())
        return self._client

    def uri(self, key: str) -> str:
        return f"{self.base}/{key}" if self.s3 else os.path.join(self.base, *key.split("/"))

    def exists(self, key: str) -> bool:
        return storage.exists(self.uri(key), self.client)

    def create(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        """Write a new file; AuditConflict if it exists. Atomic: the file is absent or whole, never partial."""
        extra: dict[str, Any] = {"ContentType": content_type}
        if self.sse:
            extra["ServerSideEncryption"] = self.sse
            if self.sse == "aws:kms" and self.kms_key_id:
                extra["SSEKMSKeyId"] = self.kms_key_id
        try:
            storage.write_bytes(self.uri(key), data, self.client, create_only=True, extra_args=extra)
        except FileExistsError as exc:
            raise AuditConflict(f"audit file already exists, refusing to overwrite: {self.uri(key)}") from exc

    def read(self, key: str) -> Optional[bytes]:
        return storage.read_bytes(self.uri(key), self.client)

    def list_dirs(self, key: str) -> list[str]:
        """Names of the sub-folders directly under `key`."""
        return storage.list_names(self.uri(key), self.client, dirs=True)

    def list_files(self, key: str) -> list[str]:
        """Names of the files directly under `key` (in-flight temp files excluded)."""
        return storage.list_names(self.uri(key), self.client)
