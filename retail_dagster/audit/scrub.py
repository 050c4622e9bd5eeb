"""Secret scrubbing for everything written to the audit trail: secret-named keys and columns, and secret-looking
values (AWS key ids, SigV4 headers, bearer and STS tokens, this process's own credentials) are redacted."""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

import pandas as pd

REDACTED = "[REDACTED]"

# Key names whose values are secrets. Deliberately not a bare "token" substring: LLM usage has input_tokens.
SECRET_KEY_RE = re.compile(
    r"(?i)(secret|passw(or)?d|authori[sz]ation|credential|api[-_]?key|private[-_]?key|access[-_]?key"
    r"|(access|session|security|refresh|auth|id|bearer|api)[-_]?token|^token$|cookie|signature)")
SECRET_VALUE_RE = re.compile(
    r"(?:"
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b"      # AWS access key ids
    r"|AWS4-HMAC-SHA256[^\n\"']*"                                                  # SigV4 Authorization header
    r"|(?i:\bbearer\s+[A-Za-z0-9\-._~+/]+=*)"                                       # bearer tokens
    r"|(?i:\b(?:aws_secret_access_key|aws_session_token|aws_security_token|secret_access_key|session_token"
    r"|x-amz-security-token|password|api_key)\b\s*[=:]\s*[\"']?[^\s\"',;]+)"        # key=value in free text
    r"|(?:FwoGZXIvYXdz|IQoJb3JpZ2lu)[A-Za-z0-9/+=]+"                                 # STS session tokens
    r"|(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+=]{0,39}[A-Z])(?=[A-Za-z0-9/+=]{0,39}[a-z])"
    r"(?=[A-Za-z0-9/+=]{0,39}[0-9])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"             # 40-char secret keys
    r"|[A-Za-z0-9/+=]{100,}"                                                        # long opaque blobs
    r")")
_ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def _value_pattern() -> re.Pattern:
    # Also redact the literal credentials of this process, whatever they look like (long enough to be real).
    literals = [re.escape(v) for k in _ENV_SECRETS if len(v := os.environ.get(k, "")) >= 16]
    if not literals:
        return SECRET_VALUE_RE
    return re.compile(SECRET_VALUE_RE.pattern + "|" + "|".join(literals))


def scrub(value: Any, _pattern: Optional[re.Pattern] = None) -> tuple[Any, int]:
    """(copy of `value` with secret-looking keys' values and secret-looking substrings redacted, redactions)."""
    pattern = _pattern or _value_pattern()
    if isinstance(value, Mapping):
        out, n = {}, 0
        for k, v in value.items():
            if SECRET_KEY_RE.search(str(k)):
                out[k], n = REDACTED, n + 1
            else:
                out[k], m = scrub(v, pattern)
                n += m
        return out, n
    if isinstance(value, (list, tuple, set)):
        items = [scrub(v, pattern) for v in value]
        return [v for v, _ in items], sum(m for _, m in items)
    if isinstance(value, str):
        new, n = pattern.subn(REDACTED, value)
        return new, n
    return value, 0


def scrub_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(copy of `frame` with secret-named columns and secret-looking strings redacted, number of redactions)."""
    pattern = _value_pattern()
    out, n = frame.copy(), 0
    for col in out.columns:
        s = out[col]
        if SECRET_KEY_RE.search(str(col)):
            out[col] = REDACTED
            n += len(s)
            continue
        if s.dtype != object and not pd.api.types.is_string_dtype(s):
            continue
        kind = pd.api.types.infer_dtype(s, skipna=True)
        if kind in ("string", "empty"):
            counts = s.str.count(pattern)
            if counts.fillna(0).any():
                out[col] = s.str.replace(pattern, REDACTED, regex=True)
                n += int(counts.fillna(0).sum())
        else:  # nested values (dicts, lists) in cells: rare, scrub cell by cell
            pairs = s.map(lambda v: scrub(v, pattern))
            out[col] = pairs.map(lambda p: p[0])
            n += int(pairs.map(lambda p: p[1]).sum())
    return out, n
