"""`ScriptedOpenAI`: the server's state, its lifecycle, and what it answers to whom."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from tests.openai_server.faults import FAULT_MODES, Injected, TokenBucket
from tests.openai_server.handler import Handler, Server
from tests.openai_server.scripts import PLANNER, SYNTHESIZER, Call, TaskScript, Tokens
from tests.openai_server.wire import HTTPError, Reply, off_script, text_of, tool_names

TASK_RE = re.compile(r"^Task (\S+) \((\S+)\): (.*)", re.DOTALL)
INPUTS_HEADER = "Inputs from the tasks this one depends on:"
RESULTS_HEADER = "Results, in plan order:"
PLAN_REJECTED = "Your plan was rejected:"
INPUT_LINE = re.compile(r"^\[(\S+)\] (.*)$")
RESULT_LINE = re.compile(r"^\[(\S+) (\S+)\]")


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
        handler = type("Handler", (Handler,), {"app": self})
        httpd = Server(("127.0.0.1", 0), handler)
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

    def _answer(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, "`messages` must be a non-empty list", key=None)
        offered = tool_names(body)
        users = [m for m in messages if m.get("role") == "user"]
        if "Plan" in offered:
            return self._plan_reply([text_of(m.get("content")) for m in users])
        first_user = text_of(users[0].get("content")) if users else ""
        if RESULTS_HEADER in first_user:
            return self._synthesize(first_user)
        match = TASK_RE.match(first_user)
        if match is None:
            raise off_script(f"cannot tell what this request is: {first_user[:200]!r}", key=None)
        task_id, kind, rest = match.groups()
        return self._task_reply(task_id, kind, rest, messages, offered)

    def _plan_reply(self, user_texts: list[str]) -> Reply:
        rejected = [t for t in user_texts if PLAN_REJECTED in t]
        plan = self.plan
        if rejected:
            with self._lock:
                self.rejections.extend(rejected)
            plan = self.repaired_plan
        if plan is None:
            which = "repaired plan" if rejected else "plan"
            raise off_script(f"planner called but no {which} configured", key=PLANNER)
        return Reply(PLANNER, tool_calls=[self._tool_call("Plan", plan)])

    def _synthesize(self, prompt: str) -> Reply:
        lines = prompt.split(RESULTS_HEADER, 1)[1].strip().splitlines()
        seen = [m.groups() for m in map(RESULT_LINE.match, lines) if m]
        listing = ", ".join(f"{tid} ({status})" for tid, status in seen)
        return Reply(SYNTHESIZER, content=f"Answer built from {len(seen)} results: {listing}.")

    def _task_reply(
        self,
        task_id: str,
        kind: str,
        rest: str,
        messages: list[dict[str, Any]],
        offered: list[str],
    ) -> Reply:
        script = self.tasks.get(task_id)
        if script is None:
            raise off_script(
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
            raise HTTPError(
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
                raise off_script(
                    f"task `{task_id}` is scripted to call {missing} but was offered {offered}",
                    key=task_id,
                )
            return Reply(
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
        return Reply(task_id, content=" | ".join(parts))

    def _tool_call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"call_{next(self._ids)}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
