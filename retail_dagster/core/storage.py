"""One way to read, write, list and test files that live in a local folder or under an s3:// prefix.

Paths are local paths or `s3://bucket/key` URIs; every function takes the path whole and decides by its scheme.

    read_bytes(path)                  the bytes, or None when there is no such file / object
    write_bytes(path, data)           atomic: a reader sees the old file or the whole new one, never part of it
    write_bytes(path, data, create_only=True)   FileExistsError instead of replacing (append-only stores)
    exists(path)                      True when the file / object is there
    list_names(folder, dirs=False)    names of the files (or sub-folders) directly under a folder / prefix
    move(src, dst)                    rename locally; copy then delete on S3

S3 calls use `client` when given, else one boto3 client per process for the environment's endpoint and region
(AWS_ENDPOINT_URL_S3, AWS_DEFAULT_REGION: tests point them at the moto server). boto3 is imported on first S3
use, never at import, so a local run does not pay for it.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional

from .files import TMP_PREFIX, atomic_write_local, synced_temp_file

S3_SCHEME = "s3://"


def is_s3(path: str) -> bool:
    return str(path).startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """('bucket', 'key/inside') of 's3://bucket/key/inside'."""
    bucket, _, key = str(uri)[len(S3_SCHEME):].partition("/")
    return bucket, key.strip("/")


def make_s3_client(endpoint_url: Optional[str] = None, region_name: Optional[str] = None) -> Any:
    """A new boto3 S3 client; endpoint and region from the arguments, else AWS_ENDPOINT_URL_S3 / AWS_DEFAULT_REGION."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or None,
                        region_name=region_name or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


@functools.lru_cache(maxsize=8)
def _shared_client(endpoint_url: Optional[str], region_name: Optional[str]) -> Any:
    return make_s3_client(endpoint_url, region_name)


def s3_client(client: Any = None) -> Any:
    """`client`, or the process's shared client for the environment's endpoint and region (boto3 clients are
    thread-safe; creating one costs tens of milliseconds, so it is made once)."""
    if client is not None:
        return client
    return _shared_client(os.environ.get("AWS_ENDPOINT_URL_S3") or None,
                          os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def _missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def read_bytes(path: str, client: Any = None) -> Optional[bytes]:
    """The bytes at `path`, or None when there is no such file / object."""
    if is_s3(path):
        bucket, key = split_s3(path)
        try:
            return s3_client(client).get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _missing(exc):
                return None
            raise
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def write_bytes(path: str, data: bytes, client: Any = None, create_only: bool = False,
                extra_args: Optional[dict] = None) -> None:
    """Write `data` at `path` atomically (temp file, fsync, rename locally; a single PUT on S3).

    `create_only`: raise FileExistsError when `path` exists instead of replacing it (a hard link locally, a
    conditional `IfNoneMatch` PUT on S3, so the store itself refuses). `extra_args`: S3 put_object arguments
    such as ServerSideEncryption or ContentType (ignored locally).
    """
    if is_s3(path):
        bucket, key = split_s3(path)
        extra = dict(extra_args or {})
        if create_only:
            extra["IfNoneMatch"] = "*"
        try:
            s3_client(client).put_object(Bucket=bucket, Key=key, Body=data, **extra)
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if create_only and code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise FileExistsError(f"already exists, not replaced: {path}") from exc
            raise
        return
    if not create_only:
        atomic_write_local(path, data)
        return
    with synced_temp_file(path, data) as tmp:
        try:
            os.link(tmp, path)  # atomic, and fails instead of replacing an existing file
        except FileExistsError:
            raise FileExistsError(f"already exists, not replaced: {path}") from None
        except OSError:  # a filesystem without hard links: check, then rename (a tiny race, never a partial file)
            if os.path.exists(path):
                raise FileExistsError(f"already exists, not replaced: {path}") from None
            os.replace(tmp, path)


def exists(path: str, client: Any = None) -> bool:
    if is_s3(path):
        bucket, key = split_s3(path)
        try:
            s3_client(client).head_object(Bucket=bucket, Key=key)
            return True
        except Exception as exc:
            if _missing(exc):
                return False
            raise
    return os.path.exists(path)


def list_names(folder: str, client: Any = None, dirs: bool = False) -> list[str]:
    """Sorted names of the files (`dirs=True`: the sub-folders) directly under `folder`; in-flight temp files are
    left out, and a missing folder lists as empty."""
    if is_s3(folder):
        bucket, prefix = split_s3(folder)
        prefix = prefix + "/" if prefix else ""
        names: list[str] = []
        paginator = s3_client(client).get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        for page in pages:
            if dirs:
                names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
            else:
                names += [o["Key"][len(prefix):] for o in page.get("Contents", [])]
        return sorted(n for n in names if n)
    if not os.path.isdir(folder):
        return []
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries
                      if (e.is_dir() if dirs else e.is_file()) and not e.name.startswith(TMP_PREFIX))


def join(folder: str, name: str) -> str:
    """`name` under `folder`, with '/' on S3 and the OS separator locally."""
    return folder.rstrip("/") + "/" + name if is_s3(folder) else os.path.join(folder, name)


def move(src: str, dst: str, client: Any = None, extra_args: Optional[dict] = None) -> None:
    """Move a file: an atomic rename locally; copy then delete on S3 (both under one bucket or two)."""
    if is_s3(src) != is_s3(dst):
        raise ValueError(f"cannot move between local and S3: {src} -> {dst}")
    if is_s3(src):
        (sb, sk), (db, dk) = split_s3(src), split_s3(dst)
        c = s3_client(client)
        c.copy_object(Bucket=db, Key=dk, CopySource={"Bucket": sb, "Key": sk}, **(extra_args or {}))
        c.delete_object(Bucket=sb, Key=sk)
        return
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    os.replace(src, dst)


__all__ = ["is_s3", "split_s3", "make_s3_client", "s3_client", "read_bytes", "write_bytes", "exists",
           "list_names", "join", "move"]
