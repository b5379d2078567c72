"""The HTTP side: routes, and a chat completion from request to answer (or fault)."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tests.openai_server.faults import FaultInjection
from tests.openai_server.scripts import Call, Tokens
from tests.openai_server.wire import HTTPError, completion_body, tool_names, usage_block

if TYPE_CHECKING:
    from tests.openai_server.server import ScriptedOpenAI


class Server(ThreadingHTTPServer):
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


class Handler(FaultInjection):
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
            tools=tool_names(body),
            tool_choice=body.get("tool_choice"),
            body=body,
            started=started,
        )
        try:
            reply = app._answer(body)
        except HTTPError as exc:
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
        usage = usage_block(body, reply)
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
            self._send_json(200, completion_body(ident, call.model, reply, usage))
