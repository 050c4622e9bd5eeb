"""Crash-safe local file writes, shared by the IO manager, the audit sink, the model cache and the table writer.

A writer puts the bytes in a temp file in the target's folder (same filesystem), fsyncs it, then publishes it
with a rename (replace) or a hard link (create-only); a crash leaves the old file or the new one, never half.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator

# Prefix of in-flight temp files; readers never list them and a crash leaves only these behind.
TMP_PREFIX = ".tmp-"


def fsync_dir(folder: str) -> None:
    """Make a rename in `folder` survive a power loss (no-op where directories cannot be opened)."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


@contextmanager
def synced_temp_file(path: str, data: bytes) -> Iterator[str]:
    """A fsynced temp file holding `data` beside `path`; the caller publishes it, and it is removed afterwards if
    it still exists (on success after a link, or on any error)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(folder)


def atomic_write_local(path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    with synced_temp_file(path, data) as tmp:
        os.replace(tmp, path)
