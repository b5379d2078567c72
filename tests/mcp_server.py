"""A real MCP server for the tests, written with the `mcp` SDK (FastMCP).

    python -m tests.mcp_server --transport stdio [--log FILE] [--extra-file FILE]
    python -m tests.mcp_server --transport http --port N [--log FILE] [--extra-file FILE]

Tools: `add`, `echo`, `pid`, `slow`, `fail`, `rpc_error`, `big` (and `broken`, whose
schema cannot bind, with `--bad-schema`; `--fail-lists` fails every list after the
first). Each `tools/list` and each tool call appends a JSON line to `--log`
(`{"op": "list"|"call", "pid": ..., ...}`), so a test counts list calls and sees which
process served a call. While `--extra-file` exists, the tool list also offers `extra`
(a tool added while the server runs). `--start-delay S` waits before serving;
`--stubborn` ignores SIGTERM and outlives the end of its stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from mcp.server.fastmcp import FastMCP
from mcp.shared.exceptions import McpError
from mcp.types import ErrorData
from mcp.types import Tool as MCPTool


def _log(path: str | None, **fields: Any) -> None:
    if path:
        line = json.dumps({**fields, "pid": os.getpid(), "t": time.time()})
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


class TestServer(FastMCP):
    """FastMCP with a counted, changeable tool list."""

    def __init__(
        self,
        log: str | None,
        extra_file: str | None,
        *,
        bad_schema: bool = False,
        fail_lists: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__("fanfold-test", log_level="WARNING", **kwargs)
        self.log_path = log
        self.extra_file = extra_file
        self.bad_schema = bad_schema
        self.fail_lists = fail_lists
        self.lists = 0

    async def list_tools(self) -> list[MCPTool]:
        _log(self.log_path, op="list")
        self.lists += 1
        if self.fail_lists and self.lists > 1:
            msg = "the tool catalogue is unavailable"
            raise RuntimeError(msg)  # answered as a JSON-RPC error: the session is fine
        offer = self.extra_file and Path(self.extra_file).exists()  # noqa: ASYNC240 - a test's flag
        if offer and "extra" not in self._names():
            log = self.log_path

            def extra(text: str) -> str:
                """Say the extra tool was called."""
                _log(log, op="call", tool="extra")
                return f"extra: {text}"

            self.add_tool(extra, name="extra", description="A tool added while running.")
        tools = await super().list_tools()
        if self.bad_schema:  # a schema no model binding can use: a `$ref` that leads nowhere
            schema = {"type": "object", "properties": {"x": {"$ref": "#/$defs/Nope"}}}
            tools.append(MCPTool(name="broken", description="Broken.", inputSchema=schema))
        return tools

    def _names(self) -> set[str]:
        return {t.name for t in self._tool_manager.list_tools()}


def build(log: str | None, extra_file: str | None, **kwargs: Any) -> TestServer:
    server = TestServer(log, extra_file, **kwargs)

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        _log(log, op="call", tool="add")
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Return the text as it was given."""
        _log(log, op="call", tool="echo")
        return text

    @server.tool()
    def pid() -> int:
        """Return the server's process id."""
        _log(log, op="call", tool="pid")
        return os.getpid()

    @server.tool()
    async def slow(seconds: float) -> str:
        """Wait, then answer: a server that takes its time (or hangs)."""
        _log(log, op="call", tool="slow")
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    def fail(message: str) -> str:
        """Fail with the message: an error result, not a broken server."""
        _log(log, op="call", tool="fail")
        raise ValueError(message)

    @server.tool()
    def rpc_error(message: str) -> str:
        """Answer with a JSON-RPC error of code -32000, as many servers do for any failure."""
        _log(log, op="call", tool="rpc_error")
        raise McpError(ErrorData(code=-32000, message=message))

    @server.tool()
    def big(chars: int) -> str:
        """Return a text of this many characters."""
        _log(log, op="call", tool="big")
        return "x" * chars

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log")
    parser.add_argument("--extra-file")
    parser.add_argument(
        "--stubborn", action="store_true", help="ignore SIGTERM and outlive the end of stdin"
    )
    parser.add_argument("--start-delay", type=float, default=0.0, help="seconds before serving")
    parser.add_argument("--bad-schema", action="store_true", help="also list an unbindable tool")
    parser.add_argument("--fail-lists", action="store_true", help="fail every list after one")
    args = parser.parse_args()
    flags = {"bad_schema": args.bad_schema, "fail_lists": args.fail_lists}
    time.sleep(args.start_delay)  # a slow start: an `npx` download, a big import
    if args.stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.transport == "stdio":
        build(args.log, args.extra_file, **flags).run("stdio")
        if args.stubborn:
            time.sleep(3600)  # stdin closed: a polite server exits here; this one does not
    else:
        server = build(args.log, args.extra_file, host="127.0.0.1", port=args.port, **flags)
        server.run("streamable-http")


if __name__ == "__main__":
    main()
