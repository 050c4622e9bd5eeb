"""A local fake of the Bedrock runtime Converse / CountTokens REST API, for tests and benchmarks.

Tokens are counted as ceil(chars / 4) of the system text, message text and tool config JSON (input)
and of the tool input JSON or reply text (output). Answers come from a scripted queue first, then
from a responder callable; errors use the AWS shape (x-amzn-ErrorType header + JSON message).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

ERROR_STATUS = {
    "ThrottlingException": 429, "ServiceUnavailableException": 503, "ModelTimeoutException": 408,
    "ValidationException": 400, "InternalServerException": 500, "AccessDeniedException": 403,
    "ModelNotReadyException": 429, "ModelErrorException": 424,
}


@dataclass
class FakeError:
    """Answer with an AWS error (status from ERROR_STATUS unless given)."""

    code: str
    message: str = "simulated error"
    status: Optional[int] = None


@dataclass
class FakeReply:
    """A Converse answer: a tool call (`tool_input`), or text, with a stop reason and extra delay."""

    tool_input: Any = None
    text: Optional[str] = None
    stop_reason: Optional[str] = None
    delay_s: float = 0.0
    raw_tool_input_text: Optional[str] = None  # counted as output but sent as-is (malformed JSON tests)


@dataclass
class FakeRequest:
    """What the fake saw: model id, the JSON body and header names (never header values)."""

    model_id: str
    operation: str
    body: dict
    header_names: list[str] = field(default_factory=list)

    @property
    def user_text(self) -> str:
        return "".join(b.get("text", "") for m in self.body.get("messages", []) for b in m.get("content", []))

    @property
    def system_text(self) -> str:
        return "".join(b.get("text", "") for b in self.body.get("system", []))

    @property
    def tool_name(self) -> Optional[str]:
        tools = (self.body.get("toolConfig") or {}).get("tools") or []
        return tools[0]["toolSpec"]["name"] if tools else None

    def data_rows(self) -> list[dict]:
        """The <data> table of the prompt as records (what the model was asked about)."""
        m = re.search(r"<data>\n(.*?)\n</data>", self.user_text, re.S)
        if not m:
            return []
        table = json.loads(m.group(1))
        return [dict(zip(table["cols"], row)) for row in table["rows"]]


def count_tokens_of(body: dict) -> int:
    parts = [b.get("text", "") for b in body.get("system", [])]
    for m in body.get("messages", []):
        parts += [b.get("text", "") for b in m.get("content", [])]
    if body.get("toolConfig"):
        parts.append(json.dumps(body["toolConfig"], separators=(",", ":")))
    return math.ceil(len("".join(parts)) / 4)


class FakeBedrock:
    """Threaded HTTP server on 127.0.0.1 speaking enough Converse for the agents' LLM steps."""

    def __init__(self, responder: Optional[Callable[[FakeRequest], Any]] = None, latency_s: float = 0.0,
                 count_tokens_supported: bool = True) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.count_tokens_supported = count_tokens_supported
        self.script: deque = deque()
        self.requests: list[FakeRequest] = []
        self.usage_reported: list[dict] = []  # per successful converse: model, inputTokens, outputTokens
        self.in_flight = 0
        self.max_in_flight = 0  # most converse calls being answered at once
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "FakeBedrock":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def enqueue(self, *answers: Any) -> None:
        """Answers (FakeReply, FakeError, dict tool input) used before the responder, in order."""
        with self._lock:
            self.script.extend(answers)

    def converse_requests(self) -> list[FakeRequest]:
        with self._lock:
            return [r for r in self.requests if r.operation == "converse"]

    def totals(self) -> dict:
        with self._lock:
            return {"input_tokens": sum(u["inputTokens"] for u in self.usage_reported),
                    "output_tokens": sum(u["outputTokens"] for u in self.usage_reported),
                    "calls": len(self.usage_reported)}

    # -- protocol -----------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b"{}"
        m = re.match(r"^/model/(.+)/(converse|count-tokens)$", h.path)
        if not m:
            return self._send_error(h, FakeError("UnknownOperationException", f"no route {h.path}", 404))
        model_id = urllib.parse.unquote(m.group(1))
        op = "converse" if m.group(2) == "converse" else "count_tokens"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return self._send_error(h, FakeError("ValidationException", "body is not JSON"))
        req = FakeRequest(model_id, op, body, [k.lower() for k in h.headers.keys()])
        with self._lock:
            self.requests.append(req)
        if op == "count_tokens":
            if not self.count_tokens_supported:
                return self._send_error(h, FakeError("ValidationException",
                                                     f"The provided model {model_id} doesn't support counting tokens."))
            converse = (body.get("input") or {}).get("converse") or {}
            return self._send_json(h, 200, {"inputTokens": count_tokens_of(converse)})

        with self._lock:
            answer = self.script.popleft() if self.script else None
        if answer is None:
            answer = self.responder(req) if self.responder else FakeError("ValidationException", "no answer scripted")
        if isinstance(answer, dict):
            answer = FakeReply(tool_input=answer)
        delay = self.latency_s + (answer.delay_s if isinstance(answer, FakeReply) else 0.0)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if delay:
                time.sleep(delay)
            if isinstance(answer, FakeError):
                return self._send_error(h, answer)
            self._send_reply(h, req, answer, delay)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _send_reply(self, h, req: FakeRequest, reply: FakeReply, delay: float) -> None:
        content = []
        if reply.text is not None:
            content.append({"text": reply.text})
            out_text = reply.text
        if reply.tool_input is not None or reply.raw_tool_input_text is not None:
            name = req.tool_name or "tool"
            if reply.raw_tool_input_text is not None:
                out_text = reply.raw_tool_input_text
                tool_input: Any = {"_raw": reply.raw_tool_input_text}  # unparseable in the real API
            else:
                out_text = json.dumps(reply.tool_input, separators=(",", ":"))
                tool_input = reply.tool_input
            content.append({"toolUse": {"toolUseId": f"tooluse_{len(self.requests)}", "name": name,
                                        "input": tool_input}})
        stop = reply.stop_reason or ("tool_use" if any("toolUse" in c for c in content) else "end_turn")
        in_tok, out_tok = count_tokens_of(req.body), math.ceil(len(out_text) / 4) if content else 0
        with self._lock:
            self.usage_reported.append({"model": req.model_id, "inputTokens": in_tok, "outputTokens": out_tok})
        self._send_json(h, 200, {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": {"inputTokens": in_tok, "outputTokens": out_tok, "totalTokens": in_tok + out_tok},
            "metrics": {"latencyMs": int(delay * 1000)},
        })

    def _send_error(self, h, err: FakeError) -> None:
        status = err.status or ERROR_STATUS.get(err.code, 400)
        error_type = f"{err.code}:http://internal.amazon.com/coral/com.amazon.bedrock/"
        self._send_json(h, status, {"message": err.message}, {"x-amzn-ErrorType": error_type})

    @staticmethod
    def _send_json(h, status: int, payload: dict, headers: Optional[dict] = None) -> None:
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (read timeout tests)
            pass


# --------------------------------------------------------------------------------------------
# Responders
# --------------------------------------------------------------------------------------------
REASONS = ["steady demand", "promo ahead, lift", "keep engine choice", "margin near-equal",
           "recent sales above fc", "cheap lane, approve"]


def echo_engine(req: FakeRequest) -> FakeReply:
    """A well-behaved model: echoes the engine's decision for every row with a short reason."""
    rows = req.data_rows()
    items = []
    for k, row in enumerate(rows):
        reason = REASONS[(row["i"] + k) % len(REASONS)]
        if req.tool_name == "price_choices":
            items.append({"i": row["i"], "p": row["eng"], "r": reason})
        elif req.tool_name == "transfer_reviews":
            items.append({"i": row["i"], "d": "approve", "r": reason})
        else:
            items.append({"i": row["i"], "m": 1.0, "r": reason})
    if req.tool_name is None:  # text mode
        return FakeReply(text=json.dumps({"items": items}))
    return FakeReply(tool_input={"items": items})


# --------------------------------------------------------------------------------------------
# pytest fixture (import it into a test module to use it)
# --------------------------------------------------------------------------------------------
FAKE_ACCESS_KEY_ID = "AKIAFAKETESTKEY00001"
FAKE_SECRET_ACCESS_KEY = "fakeSecretAccessKey/DO-NOT-LOG/0001"
FAKE_SESSION_TOKEN = "fakeSessionToken-DO-NOT-LOG-0001"
FAKE_SECRETS = (FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, FAKE_SESSION_TOKEN)

try:
    import pytest

    @pytest.fixture
    def fake_bedrock(monkeypatch, tmp_path):
        """A started FakeBedrock; dummy credentials in env, no shared AWS config or metadata lookups."""
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_BEARER_TOKEN_BEDROCK", "AWS_ROLE_ARN",
                    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "RETAIL_DAGSTER_DEMAND_ENGINE",
                    "RETAIL_DAGSTER_PRICING_ENGINE", "RETAIL_DAGSTER_REBALANCING_ENGINE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
        monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_SESSION_TOKEN)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        fake = FakeBedrock(responder=echo_engine).start()
        try:
            yield fake
        finally:
            fake.stop()
except ImportError:  # the benchmark runs without pytest
    pass
