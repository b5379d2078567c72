"""The OpenAI chat-completions wire format: replies, usage, error answers, streams.

`Reply` is what the server decided to answer; `usage_block` counts its tokens
deterministically; `completion_body` and `stream_chunks` are the JSON body and the
server-sent event chunks of that answer; `HTTPError` is an answer in OpenAI's error
format. `ReplyWriter` writes them to the client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.openai_server.scripts import Call


@dataclass
class Reply:
    key: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def off_script(message: str, *, key: str | None) -> HTTPError:
    """A request the script does not cover: a 500 the client must not retry."""
    return HTTPError(
        500, message, key=key, kind="server_error", headers={"x-should-retry": "false"}
    )


class HTTPError(Exception):
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


def completion_tokens(reply: Reply) -> int:
    """Return a deterministic completion token count for a reply."""
    chars = len(reply.content or "")
    for tc in reply.tool_calls:
        chars += len(tc["function"]["name"]) + len(tc["function"]["arguments"])
    return 2 + (chars + 2) // 3 + 5 * len(reply.tool_calls)


def tool_names(body: dict[str, Any]) -> list[str]:
    return [
        t.get("function", {}).get("name", "")
        for t in body.get("tools") or []
        if isinstance(t, dict)
    ]


def usage_block(body: dict[str, Any], reply: Reply) -> dict[str, int]:
    usage_in = prompt_tokens(body)
    usage_out = completion_tokens(reply)
    return {
        "prompt_tokens": usage_in,
        "completion_tokens": usage_out,
        "total_tokens": usage_in + usage_out,
    }


def completion_body(ident: str, model: str, reply: Reply, usage: dict[str, int]) -> dict[str, Any]:
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


def stream_chunks(
    ident: str, model: str, reply: Reply, usage: dict[str, int] | None
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


class ReplyWriter(BaseHTTPRequestHandler):
    """Writes well-formed answers: plain JSON, an error, a stream."""

    def _send_reply(self, call: Call, reply: Reply) -> None:
        usage = usage_block(call.body, reply)
        ident = f"chatcmpl-{call.seq}"
        if call.stream:
            self._send_stream(ident, call.model, reply, usage if call.include_usage else None)
        else:
            self._send_json(200, completion_body(ident, call.model, reply, usage))

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

    def _start_event_stream(self) -> None:
        """Send the headers of a server-sent event stream that ends with the connection."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send_stream(
        self, ident: str, model: str, reply: Reply, usage: dict[str, int] | None
    ) -> None:
        self._start_event_stream()
        for chunk in stream_chunks(ident, model, reply, usage):
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
