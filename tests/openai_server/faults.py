"""Fault injection: the fault modes, how they are chosen, and what each one writes.

`SeededFaults` picks a fault for a request from a seeded RNG per (key, index), so what
a task gets does not depend on timing; `TokenBucket` is the server's rate limit;
`FaultInjection` writes the broken answer each mode stands for.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.openai_server.scripts import Call
from tests.openai_server.wire import Reply, ReplyWriter, completion_body, stream_chunks, usage_block

if TYPE_CHECKING:
    from tests.openai_server.server import ScriptedOpenAI


FAULT_MODES: tuple[str, ...] = ("429", "500", "slow", "drop", "malformed", "cut")
"""What `faults` may inject:

- `429`: HTTP 429 with the server's `fault_headers` (a short Retry-After).
- `500`: HTTP 500 (no `x-should-retry`).
- `slow`: the scripted reply, but only after `slow_s` (longer than a client timeout).
- `drop`: close the connection without any response.
- `malformed`: HTTP 200 whose JSON body is cut off mid-document (plain requests),
  or a stream with a chunk that is not JSON (streamed requests).
- `cut`: plain requests: a body shorter than its Content-Length, then close;
  streamed requests: the first chunks, then close, with no `[DONE]`.
"""


@dataclass(frozen=True)
class Injected:
    """One fault the server injected."""

    key: str
    index: int
    """Index of the request among that key's requests (0: its first)."""
    mode: str
    seq: int
    """The request's `Call.seq`."""


@dataclass(frozen=True)
class SeededFaults:
    """Inject a fault into about `rate` of requests, chosen by a seeded RNG per request.

    The choice depends only on (seed, key, index), never on arrival order across
    keys, so a run injects the same faults however its requests interleave.
    """

    rate: float
    seed: int = 0
    modes: tuple[str, ...] = ("429", "500", "slow", "drop", "malformed")
    keys: frozenset[str] | None = None
    """Only these keys get faults; None: every key."""

    def __call__(self, key: str, index: int) -> str | None:
        if self.keys is not None and key not in self.keys:
            return None
        rng = random.Random(f"{self.seed}/{key}/{index}")
        return rng.choice(self.modes) if rng.random() < self.rate else None


class TokenBucket:
    """A thread-safe token bucket: `rate` tokens per second, at most `burst` stored."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take a token; return 0.0, or the seconds until one is available (none taken)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


class FaultInjection(ReplyWriter):
    """Writes the answer of an injected fault (`FAULT_MODES`) instead of the scripted one."""

    app: ScriptedOpenAI

    def _inject(self, fault: str, call: Call, reply: Reply) -> None:
        app = self.app
        call.fault = fault
        # Recorded now: the client may give up long before this handler ends.
        app._record(call)
        try:
            if fault in ("429", "500"):
                call.status = int(fault)
                headers = app.fault_headers if fault == "429" else {}
                kind = "rate_limit_error" if fault == "429" else "server_error"
                self._send_error(call.status, f"injected {fault}", kind, headers)
            elif fault == "slow":
                app._stopping.wait(app.slow_s)
                self._send_reply(call, reply)
            elif fault == "drop":
                self.close_connection = True  # the handler ends; the socket closes unanswered
            elif call.stream:
                self._send_broken_stream(call, reply, malformed=fault == "malformed")
            else:
                self._send_broken_json(call, reply, cut=fault == "cut")
        finally:
            call.ended = time.monotonic()

    def _send_broken_json(self, call: Call, reply: Reply, *, cut: bool) -> None:
        data = json.dumps(
            completion_body(
                f"chatcmpl-{call.seq}", call.model, reply, usage_block(call.body, reply)
            )
        ).encode()
        part = data[: len(data) // 2]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        # `cut`: promise the whole body, send half; `malformed`: a complete body of bad JSON.
        self.send_header("Content-Length", str(len(data) if cut else len(part)))
        self.end_headers()
        self.wfile.write(part)
        self.wfile.flush()
        self.close_connection = True

    def _send_broken_stream(self, call: Call, reply: Reply, *, malformed: bool) -> None:
        self._start_event_stream()
        usage = usage_block(call.body, reply) if call.include_usage else None
        chunks = list(stream_chunks(f"chatcmpl-{call.seq}", call.model, reply, usage))
        for chunk in chunks[:2]:
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if malformed:
            self.wfile.write(b'data: {"id": "broken", "choices": [{"delta": \n\n')
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
