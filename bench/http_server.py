"""A small, fast OpenAI-compatible chat-completions server for the real-HTTP benchmark.

    python bench/http_server.py --port 8765 --latency 0.02

Plain asyncio streams (uvloop when it is installed), HTTP/1.1 keep-alive,
Content-Length bodies only. It answers

- `POST /v1/chat/completions`: after `--latency` seconds, a `chat.completion`
  whose content is `echo: ` + the last message's text, `finish_reason` `stop`
  and a `usage` block (an SSE stream of the same when the request asks for
  `stream: true`, sent as one Content-Length body);
- `GET /v1/models`: one model;
- `GET /stats`: what it saw since the last reset (JSON);
- `POST /reset`: zero the counters.

It counts TCP connections accepted (total and peak open at once) and requests
served. A connection whose first request is `/stats` or `/reset` is a control
connection and is not counted. Binds 127.0.0.1; prints `ready` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

CONTROL_PATHS = (b"/stats", b"/reset")
MAX_HEADER_BYTES = 64 * 1024


class Stats:
    """Connection and request counters since the last reset."""

    def __init__(self) -> None:
        self.open = 0
        self.reset()

    def reset(self) -> None:
        """Zero the counters; the peak restarts from the connections open now."""
        self.opened = 0
        self.closed = 0
        self.peak_open = self.open
        self.requests = 0
        self.chat_requests = 0
        self.request_bytes = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.bad_requests = 0
        self.streamed = 0
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as JSON-ready data."""
        return {
            "connections_opened": self.opened,
            "connections_closed": self.closed,
            "open_now": self.open,
            "peak_open": self.peak_open,
            "requests": self.requests,
            "chat_requests": self.chat_requests,
            "streamed": self.streamed,
            "bad_requests": self.bad_requests,
            "request_bytes": self.request_bytes,
            "peak_in_flight": self.peak_in_flight,
            "cpu_s": time.process_time() - self.cpu0,
            "since_reset_s": time.perf_counter() - self.t0,
        }


def response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    """Return a whole HTTP/1.1 response with a Content-Length body."""
    head = (
        b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )  # fmt: skip
    return head + body


def text_of(content: Any) -> str:
    """Return the text of a message's `content` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class Server:
    """The HTTP handler and its counters."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.stats = Stats()
        self.ids = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until the client closes it."""
        stats = self.stats
        stats.open += 1
        stats.opened += 1
        counted, first = True, True
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    writer.write(response("431 Request Header Fields Too Large", b"{}"))
                    return
                lines = head.split(b"\r\n")
                try:
                    method, path, _version = lines[0].split(b" ", 2)
                except ValueError:
                    writer.write(response("400 Bad Request", b'{"error": "bad request line"}'))
                    return
                length, close = 0, False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                    elif name == b"transfer-encoding":
                        writer.write(response("501 Not Implemented", b'{"error": "chunked"}'))
                        return
                body = await reader.readexactly(length) if length else b""
                path = path.split(b"?", 1)[0]
                if first:
                    first = False
                    if path in CONTROL_PATHS:
                        # Not a client's connection: take it out of the counts.
                        counted = False
                        stats.open -= 1
                        stats.opened -= 1
                    else:
                        # The peak is taken at a connection's first request, so a
                        # control connection never raises it.
                        stats.peak_open = max(stats.peak_open, stats.open)
                writer.write(await self.route(method, path, body))
                if close:
                    return
        finally:
            if counted:
                self.stats.open -= 1
                self.stats.closed += 1
            writer.close()

    async def route(self, method: bytes, path: bytes, body: bytes) -> bytes:
        """Return the response to one request."""
        stats = self.stats
        if path in CONTROL_PATHS:
            if path == b"/reset" and method == b"POST":
                stats.reset()
            return response("200 OK", json.dumps(stats.as_dict()).encode())
        stats.requests += 1
        if method == b"POST" and path == b"/v1/chat/completions":
            return await self.chat(body)
        if method == b"GET" and path == b"/v1/models":
            return response(
                "200 OK",
                b'{"object": "list", "data": [{"id": "m", "object": "model", "created": 0,'
                b' "owned_by": "bench"}]}',
            )
        stats.bad_requests += 1
        return response("404 Not Found", b'{"error": {"message": "not found"}}')

    async def chat(self, body: bytes) -> bytes:
        """Answer one chat completion after the latency."""
        stats = self.stats
        try:
            request = json.loads(body)
            messages = request["messages"]
            text = text_of(messages[-1].get("content"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            stats.bad_requests += 1
            return response("400 Bad Request", b'{"error": {"message": "bad request body"}}')
        stats.chat_requests += 1
        stats.request_bytes += len(body)
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            await asyncio.sleep(self.latency)
        finally:
            stats.in_flight -= 1
        self.ids += 1
        content = "echo: " + text
        usage = {
            "prompt_tokens": len(body) // 4,
            "completion_tokens": len(content) // 4 + 1,
            "total_tokens": len(body) // 4 + len(content) // 4 + 1,
        }
        common = {"id": f"chatcmpl-{self.ids}", "created": int(time.time())}
        common["model"] = str(request.get("model", "m"))
        if request.get("stream"):
            stats.streamed += 1
            return response("200 OK", sse(common, content, usage), b"text/event-stream")
        out = {
            **common,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        return response("200 OK", json.dumps(out).encode())


def sse(common: dict[str, Any], content: str, usage: dict[str, int]) -> bytes:
    """Return the same answer as a chat.completion.chunk event stream."""
    base = {**common, "object": "chat.completion.chunk"}

    def choice(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = [
        {**base, "choices": [choice({"role": "assistant", "content": content}, None)]},
        {**base, "choices": [choice({}, "stop")]},
        {**base, "choices": [], "usage": usage},
    ]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n"
    )


async def serve(port: int, latency: float, backlog: int) -> None:
    """Listen on 127.0.0.1:`port` until killed."""
    server = Server(latency)
    listener = await asyncio.start_server(
        server.handle, "127.0.0.1", port, backlog=backlog, limit=MAX_HEADER_BYTES
    )
    print("ready", flush=True)
    async with listener:
        await listener.serve_forever()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per chat call")
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio even if present")
    args = parser.parse_args(argv)
    runner: Any = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            pass
    try:
        runner(serve(args.port, args.latency, args.backlog))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
