"""The decision audit trail: layout and encoding (layout), secret scrubbing (scrub), the append-only local/S3
store (store), reading back and diffing runs (reader) and the `retail-dagster audit` printer (cli). The resource
that writes it is resources/audit.py."""

from .layout import AuditConflict, run_folder
from .reader import audit_changes, audit_runs, read_audit

__all__ = ["AuditConflict", "audit_changes", "audit_runs", "read_audit", "run_folder"]
