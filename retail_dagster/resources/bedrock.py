"""Amazon Bedrock runtime resource: lazy thread-safe boto3 client, per-agent models, price table,
run budget, dry-run token counting and a thread-safe usage meter.

Credentials come only from the standard AWS chain (env vars, shared profile, container/instance
role); no field of this resource holds a secret.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

import dagster as dg
import pandas as pd
from pydantic import Field, PrivateAttr, field_validator

from retail_dagster.core.costs import DEFAULT_PRICE_TABLE, approx_tokens, usd_for

_GEO_PREFIXES = ("us", "eu", "apac", "global", "us-gov", "jp", "au", "ca")
ENGINE_ENV = "RETAIL_DAGSTER_{agent}_ENGINE"

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Usage meter
# --------------------------------------------------------------------------------------------
@dataclass
class CallRecord:
    """One Converse call (or one projected call in dry-run). Never holds request/response text."""

    agent: str
    model: str
    batch_id: int
    attempt: int
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    latency_ms: float = 0.0
    sdk_retries: int = 0  # retries botocore made inside this call
    outcome: str = "ok"  # ok | invalid | refused | truncated | error | dry_run
    detail: str = ""  # error code or validation message (no secrets: we never put any in)
    started_at: float = field(default_factory=time.time)


class UsageMeter:
    """Thread-safe record of every call plus the run budget's reservations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []
        self._spent_usd = 0.0
        self._reserved_usd = 0.0

    def record(self, rec: CallRecord) -> None:
        with self._lock:
            self._records.append(rec)
            if rec.outcome != "dry_run":
                self._spent_usd += rec.usd

    def try_reserve(self, usd: float, budget_usd: Optional[float]) -> bool:
        """Reserve a call's projected cost; False once spent + in flight + this would pass the budget."""
        with self._lock:
            if budget_usd is not None and self._spent_usd + self._reserved_usd + usd > budget_usd:
                return False
            self._reserved_usd += usd
            return True

    def release(self, usd: float) -> None:
        with self._lock:
            self._reserved_usd = max(0.0, self._reserved_usd - usd)

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return self._spent_usd

    def records(self, agent: Optional[str] = None) -> list[CallRecord]:
        with self._lock:
            return [r for r in self._records if agent is None or r.agent == agent]

    def frame(self, agent: Optional[str] = None) -> pd.DataFrame:
        """Every call so far as a frame (one row a call)."""
        recs = self.records(agent)
        cols = list(CallRecord.__dataclass_fields__)
        return pd.DataFrame([asdict(r) for r in recs], columns=cols)


# --------------------------------------------------------------------------------------------
# Log redaction: botocore's DEBUG logs print request headers (Authorization, security token).
# --------------------------------------------------------------------------------------------
_SECRET_PATTERNS = [
    re.compile(r"(?i)('?(authorization|x-amz-security-token)'?\s*[:=]\s*)(b?'[^']*'|\"[^\"]*\"|[^,}\s]+)"),
    re.compile(r"(?i)(Credential=)[^,\s'\"]+"),
    re.compile(r"(?i)(Signature=)[0-9a-f]+"),
    re.compile(r"(?i)(Bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b"),
]
_REDACTED_LOGGERS = ("botocore.endpoint", "botocore.auth", "botocore.httpsession",
                     "botocore.hooks", "botocore.credentials", "botocore.utils",
                     "botocore.retryhandler", "botocore.parsers", "urllib3.connectionpool")


def redact(text: str) -> str:
    """Mask auth headers, SigV4 credential scopes/signatures, bearer tokens and access key ids."""
    for pat in _SECRET_PATTERNS:
        if pat.groups:
            text = pat.sub(lambda m: m.group(1) + "[REDACTED]", text)
        else:
            text = pat.sub("[REDACTED]", text)
    return text


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "botocore.auth":
            # canonical requests and strings to sign: nothing in them is worth keeping
            record.msg, record.args = "[botocore.auth debug output redacted]", None
            return True
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record: keep it, untouched
            return True
        record.msg, record.args = redact(msg), None
        return True


_redaction_lock = threading.Lock()
_redaction_installed = False


def install_log_redaction() -> None:
    """Attach the redacting filter to the botocore/urllib3 loggers that can print auth headers."""
    global _redaction_installed
    with _redaction_lock:
        if _redaction_installed:
            return
        for name in _REDACTED_LOGGERS:
            logging.getLogger(name).addFilter(_RedactFilter())
        _redaction_installed = True


# --------------------------------------------------------------------------------------------
# Resource
# --------------------------------------------------------------------------------------------
class BedrockResource(dg.ConfigurableResource):
    """Bedrock runtime access for the agents' LLM steps (Converse API).

    Not built on dagster_aws's ResourceWithBoto3Configuration: that base declares
    aws_access_key_id / aws_secret_access_key / aws_session_token fields, and this resource must
    never hold secrets in config.
    """

    region_name: str = Field(default="us-east-1", description="AWS region of the bedrock-runtime endpoint.")
    endpoint_url: Optional[str] = Field(default=None, description="Custom endpoint (tests: the local fake).")
    profile_name: Optional[str] = Field(
        default=None, description="Shared-config profile; None = the default AWS credential chain.")
    retry_mode: Literal["standard", "adaptive", "legacy"] = Field(
        default="adaptive", description="botocore retry mode (adaptive adds client-side rate limiting).")
    max_attempts: int = Field(default=4, description="botocore total attempts per call, first one included.")
    connect_timeout_s: float = Field(default=5.0, description="TCP connect timeout, seconds.")
    read_timeout_s: float = Field(default=120.0, description="Socket read timeout per call, seconds.")
    max_concurrent_calls: int = Field(default=16, description="Converse calls in flight at once (this process).")
    transient_retries: int = Field(
        default=2, description="Our own retries after botocore gives up (throttling, 5xx, model/read timeouts).")
    backoff_base_s: float = Field(default=1.0, description="Base of the jittered exponential backoff, seconds.")

    engines: dict[str, str] = Field(
        default={}, description="Engine per agent name, e.g. {'pricing': 'bedrock'}; an agent not named runs "
                                "'local'. Env RETAIL_DAGSTER_<AGENT>_ENGINE overrides.")
    model_ids: dict[str, str] = Field(
        default={}, description="Bedrock model per agent name, over the agent's default (demand: Llama 4 Maverick, "
                                "or Scout: us.meta.llama4-scout-17b-instruct-v1:0; pricing and rebalancing: Qwen 3).")

    price_table: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PRICE_TABLE.items()},
        description="USD per 1M tokens per model: {model: {input_per_1m, output_per_1m}}; merged over the defaults.")
    batch_size: int = Field(default=50, description="SKU-locations (or transfers) per Converse call.")
    max_retries: int = Field(default=2, description="Re-asks after a malformed, refused, truncated or "
                                                    "out-of-bound answer.")
    max_output_tokens: int = Field(default=4096, description="Cap of maxTokens per call.")
    temperature: float = Field(default=0.0, description="Sampling temperature (0: repeatable decisions).")
    run_budget_usd: Optional[float] = Field(
        default=5.0, description="USD cap per run and process; once reached, remaining batches fall back.")
    dry_run: bool = Field(default=False, description="Build prompts, count tokens, project cost; never call converse.")
    token_counter: Literal["auto", "count_tokens", "approx"] = Field(
        default="auto", description="Dry-run token counts: CountTokens API (auto: when the model supports it) "
                                    "or chars/4.")
    guardrail_identifier: Optional[str] = Field(default=None, description="Bedrock Guardrail id or ARN (optional).")
    guardrail_version: Optional[str] = Field(default=None, description="Guardrail version (e.g. '1' or 'DRAFT').")

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _client: Any = PrivateAttr(default=None)
    _meter: UsageMeter = PrivateAttr(default_factory=UsageMeter)
    _slots: Optional[threading.BoundedSemaphore] = PrivateAttr(default=None)
    _count_tokens_unsupported: set = PrivateAttr(default_factory=set)
    _tool_modes: dict = PrivateAttr(default_factory=dict)

    @field_validator("engines")
    @classmethod
    def _engines_known(cls, value: dict[str, str]) -> dict[str, str]:
        bad = {k: v for k, v in value.items() if v not in ("local", "bedrock")}
        if bad:
            raise ValueError(f"engines {bad}: each must be 'local' or 'bedrock'")
        return value

    def setup_for_execution(self, context) -> None:
        # engine switches are read from the environment at decision time: check them when the run starts (before
        # any asset writes), so a typo such as RETAIL_DAGSTER_PRICING_ENGINE=bedrok stops the run, not a step
        from ..settings import check_settings

        check_settings()

    # -- settings helpers ---------------------------------------------------------------------
    def model_for(self, agent: str) -> str:
        """The Bedrock model of an agent: `model_ids` over the agent's declared default."""
        return self.model_ids.get(agent) or _agent_class(agent).default_llm_model

    def engine_for(self, agent: str) -> str:
        """"local" or "bedrock": env RETAIL_DAGSTER_<AGENT>_ENGINE wins over the config field."""
        return engine_for(agent, self)

    def prices(self) -> dict[str, dict[str, float]]:
        merged = {k: dict(v) for k, v in DEFAULT_PRICE_TABLE.items()}
        merged.update({k: dict(v) for k, v in self.price_table.items()})
        return merged

    def usd(self, model: str, input_tokens: float, output_tokens: float) -> float:
        return usd_for(model, input_tokens, output_tokens, self.prices())

    def guardrail_config(self) -> Optional[dict]:
        if not self.guardrail_identifier:
            return None
        return {"guardrailIdentifier": self.guardrail_identifier,
                "guardrailVersion": self.guardrail_version or "DRAFT"}

    def tool_mode(self, model: str) -> str:
        """How to ask `model` for structured output: "forced" tool choice, "auto" tool choice
        (for models that refuse toolChoice.tool), or "text" (JSON in the reply text)."""
        with self._lock:
            return self._tool_modes.get(model, "forced")

    def downgrade_tool_mode(self, model: str) -> Optional[str]:
        """Step down forced -> auto -> text after the model rejected the tool config; None at the end."""
        order = ["forced", "auto", "text"]
        with self._lock:
            current = self._tool_modes.get(model, "forced")
            i = order.index(current)
            if i + 1 >= len(order):
                return None
            self._tool_modes[model] = order[i + 1]
            return order[i + 1]

    @property
    def meter(self) -> UsageMeter:
        return self._meter

    def call_slot(self) -> threading.BoundedSemaphore:
        """Semaphore capping calls in flight across every agent using this resource instance."""
        with self._lock:
            if self._slots is None:
                self._slots = threading.BoundedSemaphore(max(1, self.max_concurrent_calls))
            return self._slots

    # -- client -------------------------------------------------------------------------------
    def get_client(self):
        """The bedrock-runtime client, created on first use (never at import or construction)."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                install_log_redaction()
                session = boto3.session.Session(profile_name=self.profile_name,
                                                region_name=self.region_name)
                config = Config(
                    retries={"mode": self.retry_mode, "total_max_attempts": max(1, self.max_attempts)},
                    connect_timeout=self.connect_timeout_s,
                    read_timeout=self.read_timeout_s,
                    max_pool_connections=max(10, self.max_concurrent_calls),
                )
                self._client = session.client("bedrock-runtime", endpoint_url=self.endpoint_url,
                                              config=config)
            return self._client

    # -- token counting -----------------------------------------------------------------------
    def count_input_tokens(self, model: str, request: dict) -> tuple[int, str]:
        """Input tokens of a Converse request without running it: (count, method).

        CountTokens where the model supports it (auto/count_tokens), else chars/4 of the system
        text, message text and tool config (see docs/bedrock.md)."""
        if self.token_counter != "approx" and model not in self._count_tokens_unsupported:
            from botocore.exceptions import BotoCoreError, ClientError

            converse = {k: request[k] for k in ("messages", "system", "toolConfig") if k in request}
            try:
                # CountTokens takes bare foundation-model ids, not cross-region profile ids
                bare = model.split(".", 1)[1] if model.split(".", 1)[0] in _GEO_PREFIXES else model
                resp = self.get_client().count_tokens(modelId=bare, input={"converse": converse})
                return int(resp["inputTokens"]), "count_tokens"
            except (ClientError, BotoCoreError) as exc:
                if self.token_counter == "count_tokens":
                    raise
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
                log.info("CountTokens unavailable for %s (%s); using the chars/4 approximation", model, code)
                with self._lock:
                    self._count_tokens_unsupported.add(model)
        return approx_tokens(request_text(request)), "approx"


def request_text(request: dict) -> str:
    """The text a Converse request sends the model, for the chars/4 approximation."""
    import json

    parts = [b.get("text", "") for b in request.get("system", [])]
    for m in request.get("messages", []):
        parts += [b.get("text", "") for b in m.get("content", [])]
    if "toolConfig" in request:
        parts.append(json.dumps(request["toolConfig"], separators=(",", ":")))
    return "".join(parts)


def _agent_class(agent: str):
    from ..agents.registry import agent_class  # the registry imports the agents, which import this module

    return agent_class(agent)


def engine_for(agent: str, resource: Optional[BedrockResource] = None) -> str:
    """Engine of an agent: env RETAIL_DAGSTER_<AGENT>_ENGINE, else the resource's `engines`, else "local"."""
    _agent_class(agent)
    name = ENGINE_ENV.format(agent=agent.upper())
    env = os.environ.get(name, "").strip().lower()
    if env:
        if env not in ("local", "bedrock"):
            raise ValueError(f"{name}={os.environ[name]!r}: expected 'local' or 'bedrock'")
        return env
    return resource.engines.get(agent, "local") if resource is not None else "local"
