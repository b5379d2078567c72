"""A small scripted OpenAI-compatible chat-completions server, for tests.

It speaks just enough of the OpenAI HTTP API for `ChatOpenAI`:

- `GET /v1/models`
- `POST /v1/chat/completions`, both plain JSON and `stream: true` server-sent
  events (with a final usage chunk when `stream_options.include_usage` is set).

What it answers depends only on the request, never on call order:

- a `Plan` tool is offered: the planner. Answer with a `Plan` tool call whose
  arguments are the `plan` the test configured, or its `repaired_plan` once a
  user message says `Your plan was rejected:` (the planner's repair round).
- the first user message holds `Results, in plan order:`: the synthesizer.
  Answer with a line naming every task id and status it was given.
- the first user message starts with `Task <id> (`: a subagent. An unknown id is
  a loud failure (HTTP 500, recorded in `errors`). A task with scripted tool
  calls gets them while no `tool` message is in the conversation yet; otherwise
  it gets its final answer, which quotes the tool results and the dependency
  inputs the request carried (scripted answers should be one line, as the
  dependency inputs are read back line by line).

Every answer carries a deterministic `usage` block, derived from the request's
text and the reply's text, and the server keeps per-key sums of the usage it
reported (keys: `planner`, `synthesizer`, or a task id), every request it saw,
and the most requests it held in flight at once. Each answer waits
`latency_s` first (or its task's own), so concurrency is observable.

Mistakes (an unknown task id, a request it cannot place, a missing plan, a
scripted tool that was not offered) are answered with HTTP 500 and
`x-should-retry: false`, and recorded in `errors`: assert it stays empty.

Faults, for fault-tolerance tests (both off by default):

- `faults`: a function of (key, index of this request among that key's requests)
  returning a fault mode from `FAULT_MODES` or None; `SeededFaults` picks them from
  a seeded RNG per request, so what a task gets does not depend on timing. Every
  injected fault is appended to `injected` the moment it is decided, so a request
  the client gave up on (a slow reply, a dropped connection) still counts.
- `rate_limit`: a `TokenBucket`; a request beyond it is answered 429 with
  `retry-after-ms` (counted in `throttled`, never in `injected`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PLANNER = "planner"
SYNTHESIZER = "synthesizer"

TASK_RE = re.compile(r"^Task (\S+) \((\S+)\): (.*)", re.DOTALL)
INPUTS_HEADER = "Inputs from the tasks this one depends on:"
RESULTS_HEADER = "Results, in plan order:"
PLAN_REJECTED = "Your plan was rejected:"
INPUT_LINE = re.compile(r"^\[(\S+)\] (.*)$")
RESULT_LINE = re.compile(r"^\[(\S+) (\S+)\]")


@dataclass(frozen=True)
class ScriptedToolCall:
    """One tool call a scripted task asks for on its first turn."""

    name: str
    args: dict[str, Any]


@dataclass
class TaskScript:
    """How the server answers one task id."""

    answer: str
    """Start of the final answer."""
    tool_calls: list[ScriptedToolCall] = field(default_factory=list)
    """Asked for, all in one turn, before the final answer."""
    fail_status: int | None = None
    """Answer with this HTTP error status instead."""
    fail_message: str = "scripted failure"
    fail_times: int | None = None
    """Fail only the first N requests of this task; `None`: fail every one."""
    fail_headers: dict[str, str] = field(default_factory=dict)
    """Extra headers on the error response (e.g. `retry-after-ms`, `x-should-retry`)."""
    latency_s: float | None = None
    """Wait this long before each answer instead of the server's `latency_s`."""


@dataclass(frozen=True)
class Tokens:
    """Token counts as reported in a `usage` block."""

    input: int = 0
    output: int = 0
    total: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input + other.input, self.output + other.output, self.total + other.total
        )


@dataclass
class Call:
    """One `POST /v1/chat/completions` the server saw."""

    seq: int
    key: str | None
    """`planner`, `synthesizer`, a task id, or None when it could not tell."""
    status: int
    stream: bool
    include_usage: bool
    model: str
    authorization: str
    tools: list[str]
    tool_choice: Any
    body: dict[str, Any]
    started: float
    ended: float = 0.0
    tokens: Tokens | None = None
    """The usage reported, if any."""
    fault: str | None = None
    """The fault injected into this request (`FAULT_MODES`), or `throttled` (429 by
    the rate limit); None: answered as scripted."""


@dataclass
class _Reply:
    key: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def _off_script(message: str, *, key: str | None) -> _HTTPError:
    """A request the script does not cover: a 500 the client must not retry."""
    return _HTTPError(
        500, message, key=key, kind="server_error", headers={"x-should-retry": "false"}
    )


class _HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        key: str | None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
        loud: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.key = key
        self.kind = kind
        self.headers = headers or {}
        self.loud = loud
        """A mistake (recorded in `errors`), not a failure the test scripted."""


def text_of(content: Any) -> str:
    """Return the text of a message `content` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def prompt_tokens(body: dict[str, Any]) -> int:
    """Return a deterministic prompt token count for a request."""
    chars = 0
    messages = body.get("messages") or []
    for m in messages:
        chars += len(text_of(m.get("content")))
        for tc in m.get("tool_calls") or []:
            chars += len(json.dumps(tc.get("function", {}), sort_keys=True))
    tools = body.get("tools") or []
    return 3 + 4 * len(messages) + (chars + 3) // 4 + 11 * len(tools)


def completion_tokens(reply: _Reply) -> int:
    """Return a deterministic completion token count for a reply."""
    chars = len(reply.content or "")
    for tc in reply.tool_calls:
        chars += len(tc["function"]["name"]) + len(tc["function"]["arguments"])
    return 2 + (chars + 2) // 3 + 5 * len(reply.tool_calls)


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


_instances = itertools.count(1)


class ScriptedOpenAI:
    """The scripted server; `start()` it, point `ChatOpenAI` at `base_url`, `stop()` it.

    `base_url` carries a path prefix unique to this instance
    (`http://127.0.0.1:<port>/s<n>/v1`; plain `/v1` is served too): langchain-openai
    caches one `httpx.AsyncClient` per base URL for the whole process and Fanfold
    caches one `ChatOpenAI` per spec, so a port the OS hands out again later must
    not lead a later test to a client pooled on an earlier test's event loop.
    """

    def __init__(self, *, latency_s: float = 0.05, model: str = "test-model") -> None:
        self.latency_s = latency_s
        self.model = model
        self.prefix = f"/s{next(_instances)}"
        self.plan: dict[str, Any] | None = None
        """The `Plan` arguments the planner gets."""
        self.repaired_plan: dict[str, Any] | None = None
        """The `Plan` arguments the planner gets once told its plan was rejected."""
        self.rejections: list[str] = []
        """The text of every plan rejection the planner was sent."""
        self.tasks: dict[str, TaskScript] = {}
        self.errors: list[str] = []
        self.calls: list[Call] = []
        self.tool_results: dict[str, list[str]] = {}
        """Per task id: `name(args) = result` for every tool message it was sent."""
        self.inputs_seen: dict[str, dict[str, str]] = {}
        """Per task id: the dependency inputs its prompt carried."""
        self.descriptions: dict[str, str] = {}
        """Per task id: the description its prompt carried."""
        self.kinds: dict[str, str] = {}
        """Per task id: the agent kind its prompt named."""
        self.tools_offered: dict[str, set[str]] = {}
        """Per task id: the tool names bound on its requests (union)."""
        self.in_flight = 0
        self.max_in_flight = 0
        self.disconnects = 0
        """Answers the client hung up on before they were written."""
        self.faults: Callable[[str, int], str | None] | None = None
        """Per request (key, index among that key's requests): a fault mode, or None."""
        self.injected: list[Injected] = []
        """Every fault injected, in the order decided."""
        self.fault_headers: dict[str, str] = {"retry-after": "0.05"}
        """Headers of an injected 429."""
        self.slow_s = 5.0
        """How long a `slow` fault waits before answering (cut short by `stop()`)."""
        self.rate_limit: TokenBucket | None = None
        """Requests beyond this bucket get 429 with `retry-after-ms`."""
        self.throttled = 0
        """Requests answered 429 by `rate_limit`."""
        self._arrivals: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> ScriptedOpenAI:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"app": self})
        httpd = _Server(("127.0.0.1", 0), handler)
        httpd.app = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"scripted-openai-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving, close open connections and wait (bounded) for every thread."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # cuts every pending latency short
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
            threads = list(self._handler_threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout_s
        for t in [self._thread, *threads]:
            if t is not None:
                t.join(max(0.0, deadline - time.monotonic()))

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, `http://127.0.0.1:<port>/s<n>/v1`."""
        return f"http://127.0.0.1:{self.port}{self.prefix}/v1"

    def spec(self, model: str | None = None) -> str:
        """The Fanfold model spec for this server: `openai:<model>@<base_url>`."""
        return f"openai:{model or self.model}@{self.base_url}"

    # -- what the tests read ---------------------------------------------------

    def calls_for(self, key: str) -> list[Call]:
        """Every request for one key, in arrival order."""
        with self._lock:
            return [c for c in self.calls if c.key == key]

    def tokens_for(self, key: str) -> Tokens:
        """Sum of the usage reported for one key."""
        return sum((c.tokens for c in self.calls_for(key) if c.tokens), Tokens())

    def total_tokens(self) -> Tokens:
        """Sum of every usage the server reported."""
        with self._lock:
            return sum((c.tokens for c in self.calls if c.tokens), Tokens())

    # -- request handling (server threads) -------------------------------------

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _wait(self, key: str | None) -> None:
        script = self.tasks.get(key) if key else None
        latency = self.latency_s
        if script is not None and script.latency_s is not None:
            latency = script.latency_s
        self._stopping.wait(latency)

    def _fail_loudly(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def _fault_for(self, key: str, seq: int) -> str | None:
        with self._lock:
            index = self._arrivals[key]
            self._arrivals[key] += 1
        mode = self.faults(key, index) if self.faults is not None else None
        if mode is None:
            return None
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode `{mode}`; known: {FAULT_MODES}")
        with self._lock:
            self.injected.append(Injected(key, index, mode, seq))
        return mode

    def _throttle(self) -> float:
        wait = self.rate_limit.take() if self.rate_limit is not None else 0.0
        if wait:
            with self._lock:
                self.throttled += 1
        return wait

    def _answer(self, body: dict[str, Any]) -> _Reply:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _HTTPError(400, "`messages` must be a non-empty list", key=None)
        offered = _tool_names(body)
        users = [m for m in messages if m.get("role") == "user"]
        if "Plan" in offered:
            return self._plan_reply([text_of(m.get("content")) for m in users])
        first_user = text_of(users[0].get("content")) if users else ""
        if RESULTS_HEADER in first_user:
            return self._synthesize(first_user)
        match = TASK_RE.match(first_user)
        if match is None:
            raise _off_script(f"cannot tell what this request is: {first_user[:200]!r}", key=None)
        task_id, kind, rest = match.groups()
        return self._task_reply(task_id, kind, rest, messages, offered)

    def _plan_reply(self, user_texts: list[str]) -> _Reply:
        rejected = [t for t in user_texts if PLAN_REJECTED in t]
        plan = self.plan
        if rejected:
            with self._lock:
                self.rejections.extend(rejected)
            plan = self.repaired_plan
        if plan is None:
            which = "repaired plan" if rejected else "plan"
            raise _off_script(f"planner called but no {which} configured", key=PLANNER)
        return _Reply(PLANNER, tool_calls=[self._tool_call("Plan", plan)])

    def _synthesize(self, prompt: str) -> _Reply:
        lines = prompt.split(RESULTS_HEADER, 1)[1].strip().splitlines()
        seen = [m.groups() for m in map(RESULT_LINE.match, lines) if m]
        listing = ", ".join(f"{tid} ({status})" for tid, status in seen)
        return _Reply(SYNTHESIZER, content=f"Answer built from {len(seen)} results: {listing}.")

    def _task_reply(
        self,
        task_id: str,
        kind: str,
        rest: str,
        messages: list[dict[str, Any]],
        offered: list[str],
    ) -> _Reply:
        script = self.tasks.get(task_id)
        if script is None:
            raise _off_script(
                f"unknown task id `{task_id}`; scripted: {sorted(self.tasks)}", key=task_id
            )
        description, _, inputs_text = rest.partition("\n\n" + INPUTS_HEADER + "\n")
        inputs = {
            m.group(1): m.group(2)
            for m in map(INPUT_LINE.match, inputs_text.splitlines())
            if m is not None
        }
        with self._lock:
            self.descriptions[task_id] = description
            self.kinds[task_id] = kind
            self.inputs_seen[task_id] = inputs
            self.tools_offered.setdefault(task_id, set()).update(offered)
            earlier = sum(1 for c in self.calls if c.key == task_id)
        if script.fail_status is not None and (
            script.fail_times is None or earlier < script.fail_times
        ):
            raise _HTTPError(
                script.fail_status,
                script.fail_message,
                key=task_id,
                kind="server_error" if script.fail_status >= 500 else "invalid_request_error",
                headers=script.fail_headers,
                loud=False,
            )
        tool_msgs = [m for m in messages if m.get("role") == "tool"]
        if script.tool_calls and not tool_msgs:
            missing = [c.name for c in script.tool_calls if c.name not in offered]
            if missing:
                raise _off_script(
                    f"task `{task_id}` is scripted to call {missing} but was offered {offered}",
                    key=task_id,
                )
            return _Reply(
                task_id, tool_calls=[self._tool_call(c.name, c.args) for c in script.tool_calls]
            )
        asked = {
            tc["id"]: tc["function"]
            for m in messages
            if m.get("role") == "assistant"
            for tc in m.get("tool_calls") or []
        }
        results = []
        for m in tool_msgs:
            fn = asked.get(m.get("tool_call_id"), {"name": "?", "arguments": "?"})
            results.append(f"{fn['name']}({fn['arguments']}) = {text_of(m.get('content'))}")
        with self._lock:
            self.tool_results[task_id] = results
        parts = [script.answer]
        if results:
            parts.append("tools: " + "; ".join(results))
        if inputs:
            parts.append("saw: " + "; ".join(f"{d}=«{out}»" for d, out in inputs.items()))
        return _Reply(task_id, content=" | ".join(parts))

    def _tool_call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"call_{next(self._ids)}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }


def _tool_names(body: dict[str, Any]) -> list[str]:
    return [
        t.get("function", {}).get("name", "")
        for t in body.get("tools") or []
        if isinstance(t, dict)
    ]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when 50 subagents
    # connect at once: that would be a fault the test did not inject.
    request_queue_size = 256
    app: ScriptedOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return  # the client dropped the connection: not the server's problem
        self.app._fail_loudly(f"server bug: {type(exc).__name__}: {exc}")
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    app: ScriptedOpenAI
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection frees its thread after this

    def setup(self) -> None:
        super().setup()
        with self.app._lock:
            self.app._conns.add(self.connection)
            self.app._handler_threads.add(threading.current_thread())

    def finish(self) -> None:
        with self.app._lock:
            self.app._conns.discard(self.connection)
            self.app._handler_threads.discard(threading.current_thread())
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _route(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/")
        prefix = self.app.prefix
        return path[len(prefix) :] if path.startswith(prefix + "/") else path

    def _no_route(self) -> None:
        message = f"no route {self.command} {self.path}"
        self.app._fail_loudly(message)
        self._send_error(404, message, "not_found_error")

    def do_GET(self) -> None:
        if self._route() == "/v1/models":
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": self.app.model, "object": "model", "created": 0, "owned_by": "tests"}
                    ],
                },
            )
        else:
            self._no_route()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self._route() != "/v1/chat/completions":
            self._no_route()
            return
        app = self.app
        app._enter()
        started = time.monotonic()
        try:
            self._chat(raw, started)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up on this request (e.g. a task timed out): expected.
            self.close_connection = True
            with app._lock:
                app.disconnects += 1
        finally:
            app._leave()

    def _chat(self, raw: bytes, started: float) -> None:
        app = self.app
        try:
            body = json.loads(raw)
        except ValueError:
            app._fail_loudly(f"request body is not JSON: {raw[:200]!r}")
            self._send_error(400, "request body is not JSON", "invalid_request_error")
            return
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        call = Call(
            seq=next(app._seq),
            key=None,
            status=200,
            stream=stream,
            include_usage=include_usage,
            model=str(body.get("model")),
            authorization=self.headers.get("Authorization", ""),
            tools=_tool_names(body),
            tool_choice=body.get("tool_choice"),
            body=body,
            started=started,
        )
        try:
            reply = app._answer(body)
        except _HTTPError as exc:
            call.key, call.status = exc.key, exc.status
            if exc.loud:
                app._fail_loudly(f"HTTP {exc.status}: {exc.message}")
            app._wait(exc.key)
            call.ended = time.monotonic()
            app._record(call)
            self._send_error(exc.status, exc.message, exc.kind, exc.headers)
            return
        except Exception as exc:  # noqa: BLE001 - a bug in the script must be loud, not a hang
            app._fail_loudly(f"server bug: {type(exc).__name__}: {exc}")
            call.ended = time.monotonic()
            app._record(call)
            self._send_error(500, f"{type(exc).__name__}: {exc}", "server_error")
            return
        call.key = reply.key
        wait = app._throttle()
        if wait:
            call.status, call.fault, call.ended = 429, "throttled", time.monotonic()
            app._record(call)
            headers = {"retry-after-ms": str(max(1, round(wait * 1000)))}
            self._send_error(429, "rate limit reached", "rate_limit_error", headers)
            return
        fault = app._fault_for(reply.key, call.seq)
        if fault is not None:
            self._inject(fault, call, reply)
            return
        app._wait(reply.key)
        usage = _usage(body, reply)
        if not stream or include_usage:
            call.tokens = Tokens(
                usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
            )
        call.ended = time.monotonic()
        app._record(call)
        ident = f"chatcmpl-{call.seq}"
        if stream:
            self._send_stream(ident, call.model, reply, usage if include_usage else None)
        else:
            self._send_json(200, _completion(ident, call.model, reply, usage))

    def _inject(self, fault: str, call: Call, reply: _Reply) -> None:
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

    def _send_reply(self, call: Call, reply: _Reply) -> None:
        usage = _usage(call.body, reply)
        ident = f"chatcmpl-{call.seq}"
        if call.stream:
            self._send_stream(ident, call.model, reply, usage if call.include_usage else None)
        else:
            self._send_json(200, _completion(ident, call.model, reply, usage))

    def _send_broken_json(self, call: Call, reply: _Reply, *, cut: bool) -> None:
        data = json.dumps(
            _completion(f"chatcmpl-{call.seq}", call.model, reply, _usage(call.body, reply))
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

    def _send_broken_stream(self, call: Call, reply: _Reply, *, malformed: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        usage = _usage(call.body, reply) if call.include_usage else None
        chunks = list(_chunks(f"chatcmpl-{call.seq}", call.model, reply, usage))
        for chunk in chunks[:2]:
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if malformed:
            self.wfile.write(b'data: {"id": "broken", "choices": [{"delta": \n\n')
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    # -- writing ---------------------------------------------------------------

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(
        self, status: int, message: str, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        error = {"message": message, "type": kind, "param": None, "code": "scripted"}
        self._send_json(status, {"error": error}, headers)

    def _send_stream(
        self, ident: str, model: str, reply: _Reply, usage: dict[str, int] | None
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for chunk in _chunks(ident, model, reply, usage):
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def _usage(body: dict[str, Any], reply: _Reply) -> dict[str, int]:
    usage_in = prompt_tokens(body)
    usage_out = completion_tokens(reply)
    return {
        "prompt_tokens": usage_in,
        "completion_tokens": usage_out,
        "total_tokens": usage_in + usage_out,
    }


def _completion(ident: str, model: str, reply: _Reply, usage: dict[str, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
    }


def _chunks(
    ident: str, model: str, reply: _Reply, usage: dict[str, int] | None
) -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    yield chunk({"role": "assistant", "content": ""})
    text = reply.content or ""
    for i in range(0, len(text), 16):
        yield chunk({"content": text[i : i + 16]})
    for index, tc in enumerate(reply.tool_calls):
        fn = tc["function"]
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": tc["id"],
                        "type": "function",
                        "function": {"name": fn["name"], "arguments": ""},
                    }
                ]
            }
        )
        args = fn["arguments"]
        for i in range(0, len(args), 16):
            yield chunk(
                {"tool_calls": [{"index": index, "function": {"arguments": args[i : i + 16]}}]}
            )
    yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
    if usage is not None:
        yield {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": usage,
        }


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[ScriptedOpenAI]:
    """Run a `ScriptedOpenAI` for the duration of a `with` block."""
    server = ScriptedOpenAI(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def serving(**kwargs: Any) -> AsyncIterator[ScriptedOpenAI]:
    """Run a `ScriptedOpenAI` for an async test, closing its model clients first.

    The clients are closed while the test's event loop still runs, so no pooled
    connection outlives it.
    """
    from fanfold.nodes.models import aclose_models

    with running(**kwargs) as server:
        try:
            yield server
        finally:
            await aclose_models()
