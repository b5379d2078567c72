"""MCP servers as a source of tools: one session per server, kept open for the run.

`langchain-mcp-adapters` speaks the protocol and turns MCP tools into LangChain
tools; this module keeps its sessions alive. `MultiServerMCPClient.get_tools()`
alone opens a new session for every tool call (a new process, for a stdio
server); an `McpToolset` opens one session per server, lets every subagent's calls
share it, and closes it when its run ends.

Each session lives in a task of its own (the SDK's transports are anyio task
groups: the task that enters one must leave it). A server that fails (its process
died, its HTTP endpoint went away, it hung past the tool timeout) is the model's
to see: the call ends with an error `ToolMessage`, the server is marked down and
reconnected in the background, and the tools come back at the registry's next
refresh. Its last known tools stay offered meanwhile (a call says it is down).

Names: an MCP tool keeps its own name unless a built-in or another tool of the
run has it, or a server listed earlier in the config offers one of that name:
then it is `<server>_<tool>` (then `_2`, `_3`, ... if that is taken too). Names
are made safe for model APIs (letters, digits, `_` and `-`, 64 characters at
most). A name, once given, stays with its tool for the toolset's life.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import contextvars
import importlib.util
import json
import math
import os
import re
import stat
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool

DEFAULT_MCP_TTL_S = 30.0
CLOSE_TIMEOUT_S = 5.0
"""How long closing waits for a session to end (a stdio server gets 2 s to exit
after its stdin closes, then is terminated) before it is cancelled."""
RECONNECT_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Waits between reconnect attempts to a server that is down (the last repeats)."""
CONNECT_TIMEOUT_S = 60.0
"""Bound on starting a session (a stdio server's start, an `npx` download, a handshake)
and on a server's first tool list."""
FIRST_WAIT_S = 10.0
"""How long the run's first look-up (the planner's) waits for a server's first attempt;
a server still starting after that joins in the background, at a later look-up."""
RELIST_TIMEOUT_S = 5.0
"""Bound on listing a connected server's tools again (a hung one is marked down)."""
CALL_WAIT_S = 3.0
"""How long a call to a server that is down waits for it to come back before it fails
(a restarted server costs the calls in flight, not the ones after)."""

TRANSPORTS = {
    "stdio": "stdio",
    "streamable_http": "streamable_http",
    "streamable-http": "streamable_http",
    "http": "streamable_http",
    "sse": "sse",
    "websocket": "websocket",
}
"""Transports `langchain-mcp-adapters` knows, by the names its configs use."""

_SESSION_GONE = {(-32000, "Connection closed"), (32600, "Session terminated")}
"""The MCP SDK's own errors for a session that is over: the connection closed
(`CONNECTION_CLOSED`), or an HTTP server no longer knows the session (it answered 404:
restarted). By code and text: servers send -32000 for any error of their own."""
_SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_TOOL_NAME = 64
MAX_DESCRIPTION = 2000
"""Characters of an MCP tool's description kept (it goes into every planning prompt)."""
MAX_PAGES = 100


class McpUnavailable(RuntimeError):
    """A tool call to an MCP server that is not connected now."""


# --- configuration -----------------------------------------------------------------


def check_mcp_servers(value: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return MCP server connections in `MultiServerMCPClient`'s format, checked.

    Accepts that format (`{"name": {"transport": "stdio", "command": ..., "args":
    [...]}}`) and the `{"mcpServers": {...}}` wrapper other clients write, where the
    transport may be left out: `command` means stdio, `url` streamable HTTP.

    Raises:
        ValueError: naming the server and the field to fix, or the extra to install.
    """
    if importlib.util.find_spec("langchain_mcp_adapters") is None:
        msg = "MCP servers need the `mcp` extra: pip install 'fanfold[mcp]'"
        raise ValueError(msg)
    if not isinstance(value, Mapping):
        msg = f"a JSON object of servers by name, got {type(value).__name__}"
        raise ValueError(msg)
    if set(value) == {"mcpServers"}:
        value = value["mcpServers"]
        if not isinstance(value, Mapping):
            msg = "`mcpServers` must be a JSON object of servers by name"
            raise ValueError(msg)
    if len(value) > MAX_SERVERS:
        msg = f"at most {MAX_SERVERS} servers (got {len(value)})"
        raise ValueError(msg)
    out: dict[str, dict[str, Any]] = {}
    for name, conn in value.items():
        if not isinstance(name, str) or not _SERVER_NAME.match(name):
            msg = (
                f"server name `{name}`: use 1-40 letters, digits, `_` or `-` (it prefixes "
                "tool names)"
            )
            raise ValueError(msg)
        out[name] = _check_connection(name, conn)
    return out


KEYS = {
    "stdio": {
        "transport",
        "command",
        "args",
        "env",
        "cwd",
        "encoding",
        "encoding_error_handler",
        "session_kwargs",
    },
    "streamable_http": {
        "transport",
        "url",
        "headers",
        "timeout",
        "sse_read_timeout",
        "terminate_on_close",
        "session_kwargs",
        "httpx_client_factory",
        "auth",
    },
    "sse": {
        "transport",
        "url",
        "headers",
        "timeout",
        "sse_read_timeout",
        "session_kwargs",
        "httpx_client_factory",
        "auth",
    },
    "websocket": {"transport", "url", "session_kwargs"},
}
"""The keys each transport's connection takes (`langchain-mcp-adapters`' `Connection`s)."""
MAX_SERVERS = 64
MAX_CONFIG_BYTES = 1024 * 1024
_SCHEMES = {
    "stdio": (),
    "streamable_http": ("http", "https"),
    "sse": ("http", "https"),
    "websocket": ("ws", "wss"),
}


def _check_connection(name: str, given_conn: Any) -> dict[str, Any]:
    where = f"server `{name}`"
    if not isinstance(given_conn, Mapping):
        msg = f"{where}: a JSON object with `command` (stdio) or `url` (HTTP)"
        raise ValueError(msg)
    conn: dict[str, Any] = dict(given_conn)
    given = conn.get("transport", conn.get("type"))
    conn.pop("type", None)
    if given is None:
        given = "stdio" if "command" in conn else "streamable_http" if "url" in conn else None
    if given is None:
        msg = f"{where}: needs `command` (a stdio server) or `url` (an HTTP server)"
        raise ValueError(msg)
    transport = TRANSPORTS.get(str(given)) if isinstance(given, str) else None
    if transport is None:
        msg = f"{where}: `transport` must be one of {sorted(TRANSPORTS)}"
        raise ValueError(msg)
    conn["transport"] = transport
    unknown = sorted(set(conn) - KEYS[transport])
    if unknown:
        msg = (
            f"{where}: unknown key(s) {unknown} for {transport} (known: {sorted(KEYS[transport])})"
        )
        raise ValueError(msg)
    if transport == "stdio":
        if not isinstance(conn.get("command"), str) or not conn["command"].strip():
            msg = f"{where}: `command` must be the program to start, as a string"
            raise ValueError(msg)
        args = conn.setdefault("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            msg = f"{where}: `args` must be a list of strings"
            raise ValueError(msg)
        _check_strings(where, conn, "env")
        if "cwd" in conn and not isinstance(conn["cwd"], str):
            msg = f"{where}: `cwd` must be a folder path, as a string"
            raise ValueError(msg)
        if "encoding" in conn:
            try:
                codecs.lookup(str(conn["encoding"]))
            except LookupError:
                msg = f"{where}: `encoding` must name a codec, such as utf-8"
                raise ValueError(msg) from None
    else:
        _check_url(where, conn.get("url"), _SCHEMES[transport])
        _check_strings(where, conn, "headers")
        for key in ("timeout", "sse_read_timeout"):
            value = conn.get(key)
            if value is not None and not (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and 0 < value < math.inf
            ):
                msg = f"{where}: `{key}` must be a number of seconds > 0"
                raise ValueError(msg)
    if not isinstance(conn.get("session_kwargs") or {}, Mapping):
        msg = f"{where}: `session_kwargs` must be an object"
        raise ValueError(msg)
    return conn


def _check_url(where: str, url: Any, schemes: tuple[str, ...]) -> None:
    """Refuse a URL that is not an address of this transport.

    The message never echoes the URL: it may carry a token.
    """
    ok = isinstance(url, str) and not any(ord(c) < 32 or c == "\x7f" for c in url)
    if ok:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in schemes and bool(parts.hostname)
    if not ok:
        names = " or ".join(f"{s}://" for s in schemes)
        msg = f"{where}: `url` must be a {names} address with a host"
        raise ValueError(msg)


def _check_strings(where: str, conn: dict[str, Any], key: str) -> None:
    value = conn.get(key)
    if value is None:
        return
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        msg = f"{where}: `{key}` must be an object of strings"
        raise ValueError(msg)


def load_mcp_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read and check an MCP servers file (see `check_mcp_servers`).

    Raises:
        ValueError: the file is missing, not JSON, or a server is wrong (named).
    """
    if not str(path).strip():
        msg = "give the path of a JSON file of MCP servers"
        raise ValueError(msg)
    try:
        # Open without blocking, then look at what was opened (never at the name, which
        # may be swapped between): a FIFO or a device would block or never end.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb", closefd=True) as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                msg = f"`{path}` is not a regular file"
                raise ValueError(msg)
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            msg = f"`{path}` has more than {MAX_CONFIG_BYTES} bytes"
            raise ValueError(msg)
    except OSError as exc:
        msg = f"cannot read `{path}`: {exc.strerror or exc}"
        raise ValueError(msg) from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        msg = f"`{path}` is not JSON: {why}"
        raise ValueError(msg) from None
    try:
        return check_mcp_servers(data)
    except ValueError as exc:
        msg = f"`{path}`: {exc}"
        raise ValueError(msg) from None


# --- sessions ----------------------------------------------------------------------


@dataclass
class ServerStatus:
    """One server's state and counts, for `RunMetrics.mcp`."""

    state: str = "new"
    """`new` (not tried yet), `connecting` (its first attempt), `up`, `down` (failed;
    reconnecting in the background) or `closed`."""
    connects: int = 0
    lists: int = 0
    calls: int = 0
    call_errors: int = 0
    last_error: str | None = None
    skipped_tools: dict[str, str] = field(default_factory=dict)
    """Tools left out because their schema cannot be bound to a model, with why."""


@dataclass
class _Server:
    name: str
    session: Any = None  # mcp.ClientSession while connected
    owner: asyncio.Task[None] | None = None
    stop: asyncio.Event | None = None
    reconnect: asyncio.Task[None] | None = None
    listed: bool = False
    """Whether the server ever listed its tools (its names are known)."""
    raw: dict[str, Any] = field(default_factory=dict)
    """Its MCP tools as last listed, by MCP name, in its order."""
    converted: dict[str, tuple[Any, BaseTool | None]] = field(default_factory=dict)
    """LangChain tools by MCP name, with the MCP tool they were made from."""
    status: ServerStatus = field(default_factory=ServerStatus)
    up: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while connected."""
    lost: asyncio.Event | None = None
    """Set when the current session is dropped: its calls in flight end then."""
    lost_error: BaseException | None = None
    """Why the last session was dropped."""
    failures: int = 0
    retry_at: float = 0.0
    attempted: asyncio.Future[None] | None = None
    """Done once the first connect attempt ended (the first look-up waits for it)."""
    announce: bool = True
    """Whether coming up should make the registry list again (not when the first
    look-up is still waiting for it: that look-up lists)."""


class McpToolset:
    """The tools of some MCP servers, over one session per server kept open.

    Use as a registry provider (`attach`) or on its own (`await toolset.tools()`),
    and close it (`await toolset.aclose()`, or `async with`). Safe to use from many
    subagents of one event loop at once.
    """

    def __init__(
        self,
        servers: Mapping[str, Mapping[str, Any]],
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        reserved: Callable[[], Iterable[str]] | Iterable[str] = (),
    ) -> None:
        """Prepare (not yet connect) the servers.

        Args:
            servers: connections as `MultiServerMCPClient` takes them (checked here).
            connect_timeout_s: bound on starting a session and on its first tool list.
            reserved: tool names taken by other tools of the run (or a callable
                returning them at each refresh): MCP tools of those names are prefixed.
        """
        self.connections = check_mcp_servers(servers)
        self.connect_timeout_s = connect_timeout_s
        self._reserved = reserved
        self._servers = {name: _Server(name) for name in self.connections}
        self._names: dict[tuple[str, str], str] = {}
        """The name each (server, MCP tool) was given: it keeps it."""
        self._closed = False
        self._owners: set[asyncio.Task[None]] = set()
        """Every session's task not yet ended (a dropped session may still be closing)."""
        self.on_change: Callable[[float], None] | None = None
        """Called (with a delay, 0 now) when the tools should be listed again: a server
        that was down is back."""

    # --- as a registry provider --------------------------------------------------

    def attach(self, registry: Any, *, ttl_s: float = DEFAULT_MCP_TTL_S) -> None:
        """Feed `registry` (a `ToolRegistry`) with these tools, cached for `ttl_s` seconds."""
        registry.add_provider(self.tools, name="mcp", ttl_s=ttl_s, stand_in=self.stand_in)
        self.on_change = lambda after_s: registry.invalidate("mcp", after_s=after_s)

    async def tools(self) -> list[BaseTool]:
        """Return every server's tools, listing them now (connecting first if needed).

        The first call connects every server, waiting up to `FIRST_WAIT_S` for each
        one's first attempt (one still starting joins at a later call); a server that
        is down reconnects in the background (its last known tools are returned).
        """
        if self._closed:
            msg = "this MCP toolset is closed"
            raise RuntimeError(msg)
        await asyncio.gather(*(self._list(s) for s in self._servers.values()))
        return self._named()

    async def _list(self, server: _Server) -> None:
        if server.session is None:
            attempted = server.attempted
            if server.status.state == "connecting" and attempted is not None:
                # Another caller started the first attempt: wait for the same one.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(attempted), FIRST_WAIT_S)
                return
            if server.status.state == "new":
                # The first time: the plan needs the tools, so wait for the first
                # attempt; a slow start goes on in the background and announces itself.
                server.status.state = "connecting"
                server.announce = False
                attempted = asyncio.get_running_loop().create_future()
                server.attempted = attempted
                self._reconnect_later(server)
                try:
                    await asyncio.wait_for(asyncio.shield(attempted), FIRST_WAIT_S)
                except TimeoutError:
                    server.announce = True
            else:
                self._reconnect_later(server)
            return
        # Listing again is quick on a healthy server; a hung one must not hold every
        # subagent's next step for long: it is marked down and reconnected instead.
        await self._list_now(server, RELIST_TIMEOUT_S)

    async def _list_now(self, server: _Server, bound: float) -> None:
        try:
            async with asyncio.timeout(bound):
                listed = await _list_all(server.session)
        except Exception as exc:  # noqa: BLE001 - a server's failure is its own
            if isinstance(exc, TimeoutError) or _transport_failed(exc):
                self._broke(server, exc)  # hung or gone: a new session
            else:
                # The server answered, with an error (or a list the SDK refuses): the
                # session is fine; keep the tools it had and ask again at the next TTL.
                server.status.last_error = f"tools/list: {_describe(exc)}"
            return
        server.status.lists += 1
        server.raw = {t.name: t for t in listed}
        server.listed = True
        server.failures = 0  # up and listing: the next failure backs off from the start

    async def _connect(self, server: _Server) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Any] = loop.create_future()
        stop = asyncio.Event()

        async def own() -> None:
            ended: BaseException = RuntimeError("the session ended")
            try:
                async with _open_session(self.connections[server.name], stop) as session:
                    if not ready.done():
                        ready.set_result(session)
                    await stop.wait()
            except BaseException as exc:  # noqa: BLE001 - reported through `ready`
                ended = exc
                if not ready.done():
                    ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
            finally:
                # Ended by itself (its transport failed), not told to: the server is down.
                if server.owner is asyncio.current_task() and not stop.is_set():
                    if ready.done() and not ready.cancelled() and ready.exception() is None:
                        self._broke(server, ended)
                        self._reconnect_later(server)

        # A fresh context: the session's task must not carry the run's config along.
        task = loop.create_task(own(), context=contextvars.Context())
        server.lost = asyncio.Event()
        self._owners.add(task)
        task.add_done_callback(self._ended)
        server.owner, server.stop = task, stop
        server.status.connects += 1
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                server.session = await asyncio.shield(ready)
        except BaseException as exc:
            # Told to stop, the session ends by itself, cleanly (a stdio server's pipes
            # closed, the process waited for or terminated): cancelling it midway
            # would leave the process to the garbage collector.
            ready.cancel()
            stop.set()
            if isinstance(exc, asyncio.CancelledError):
                raise
            error = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
            if isinstance(exc, TimeoutError):
                error = TimeoutError(f"no session within {self.connect_timeout_s:g}s")
            self._broke(server, error)
            return
        server.status.state = "up"
        server.status.last_error = None
        server.up.set()

    def _broke(self, server: _Server, error: BaseException) -> None:
        """Mark a server down after a failure; its session is closed, a reconnect due."""
        if server.status.state != "closed":
            server.status.state = "down"
        server.status.last_error = _describe(error)
        server.lost_error = error
        delay = RECONNECT_BACKOFF_S[min(server.failures, len(RECONNECT_BACKOFF_S) - 1)]
        server.failures += 1
        server.retry_at = time.monotonic() + delay
        self._drop_session(server)

    def _drop_session(self, server: _Server) -> None:
        server.session = None
        server.up.clear()
        if server.lost is not None:
            server.lost.set()  # a call sent as the connection died may never be answered
        if server.stop is not None:
            server.stop.set()
        server.owner = server.stop = None  # it ends on its own (the SDK closes it)

    def _reconnect_later(self, server: _Server) -> None:
        if self._closed or (server.reconnect is not None and not server.reconnect.done()):
            return

        async def again() -> None:
            while not self._closed:
                await asyncio.sleep(max(0.0, server.retry_at - time.monotonic()))
                await self._connect(server)
                if server.session is not None:
                    await self._list_now(server, self.connect_timeout_s)
                if server.attempted is not None and not server.attempted.done():
                    server.attempted.set_result(None)  # the first look-up waits no longer
                if server.session is not None:
                    if server.announce and self.on_change is not None:
                        self.on_change(0.0)  # up (again): list the tools at the next look-up
                    server.announce = True
                    return

        server.reconnect = asyncio.get_running_loop().create_task(
            again(), context=contextvars.Context()
        )

    # --- naming ------------------------------------------------------------------

    def _named(self) -> list[BaseTool]:
        reserved = self._reserved() if callable(self._reserved) else self._reserved
        taken = set(reserved)
        live = [(s, mcp_name) for s in self._servers.values() for mcp_name in s.raw]
        chosen: dict[tuple[str, str], str] = {}
        for server, mcp_name in live:  # names given before keep their tools
            name = self._names.get((server.name, mcp_name))
            if name is not None and name not in taken:
                chosen[(server.name, mcp_name)] = name
                taken.add(name)
        for server, mcp_name in live:
            key = (server.name, mcp_name)
            if key in chosen:
                continue
            name = _safe(mcp_name)
            if name in taken:
                name = _safe(f"{server.name}_{mcp_name}")
                n = 2
                while name in taken:
                    name = _safe(f"{server.name}_{mcp_name}", suffix=f"_{n}")
                    n += 1
            chosen[key] = self._names[key] = name
            taken.add(name)
        out = []
        for server, mcp_name in live:
            tool = self._converted(server, mcp_name)
            if tool is None:
                continue  # its schema does not bind (see `ServerStatus.skipped_tools`)
            name = chosen[(server.name, mcp_name)]
            if tool.name != name:
                tool.name = name
            out.append(tool)
        return out

    def _converted(self, server: _Server, mcp_name: str) -> BaseTool | None:
        """Return the LangChain tool for an MCP tool, the same object while it is unchanged.

        Bound models are cached by tool identity: a new object each refresh would bind anew.
        """
        from langchain_core.utils.function_calling import convert_to_openai_tool
        from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool

        raw = server.raw[mcp_name]
        known = server.converted.get(mcp_name)
        if known is not None and known[0] == raw:
            return known[1]
        tool: BaseTool | None = None
        try:
            tool = convert_mcp_tool_to_langchain_tool(
                _LiveSession(self, server),  # type: ignore[arg-type]
                raw,
                server_name=server.name,
            )
            about = (raw.description or "").strip()
            if len(about) > MAX_DESCRIPTION:
                about = about[:MAX_DESCRIPTION] + " [description cut]"
            tool.description = f"{about} (MCP server `{server.name}`)".strip()
            # What every model binding does with it: one tool whose schema cannot be
            # turned into a function (a dangling `$ref`) must not fail every subagent.
            convert_to_openai_tool(tool)
        except Exception as exc:  # noqa: BLE001 - the tool is left out, and said so
            server.status.skipped_tools[mcp_name] = _describe(exc)
            tool = None
        else:
            server.status.skipped_tools.pop(mcp_name, None)
        server.converted[mcp_name] = (raw, tool)
        return tool

    def stand_in(self, name: str) -> BaseTool | None:
        """Return an error tool for a name a never-reached server may offer, else None."""
        unreached = [s for s in self._servers.values() if not s.listed]
        if not unreached or _safe(name) != name:
            return None
        why = "; ".join(f"`{s.name}`: {s.status.last_error or 'not tried yet'}" for s in unreached)

        async def unavailable(**_: Any) -> str:
            msg = (
                f"`{name}` is not offered by any MCP server reached so far; not reached: "
                f"{why}. Fanfold reconnects at its next tool refresh: try again later, or "
                "go on without it"
            )
            raise McpUnavailable(msg)

        return StructuredTool(
            name=name,
            description=f"(not available yet: its MCP server was not reached) {why}",
            args_schema={"type": "object", "properties": {}, "additionalProperties": True},
            coroutine=unavailable,
        )

    # --- calls, status, closing --------------------------------------------------

    async def _call(self, server: _Server, name: str, arguments: Any, **kwargs: Any) -> Any:
        server.status.calls += 1
        for attempt in (1, 2):
            session = await self._live(server)
            lost = server.lost
            try:
                result = await _unless(session.call_tool(name, arguments, **kwargs), lost)
            except _Lost:
                gone = server.lost_error
                if attempt == 1 and gone is not None and _never_sent(gone):
                    # The pipe broke as this call was written (a server that died while
                    # idle): once more, on the new session. A server that died after it
                    # read the call may run it twice.
                    continue
                server.status.call_errors += 1
                msg = (
                    f"MCP server `{server.name}`: the connection was lost during the call "
                    f"({server.status.last_error or 'closed'}); it is reconnected in the "
                    "background"
                )
                raise McpUnavailable(msg) from None
            except Exception as exc:
                if not _transport_failed(exc):
                    server.status.call_errors += 1  # the call's own error: the session is fine
                    raise
                if server.session is session:
                    self._broke(server, exc)
                    self._reconnect_later(server)
                if attempt == 1 and _never_sent(exc):
                    continue  # it never reached the server: once more, on the new session
                server.status.call_errors += 1
                msg = (
                    f"MCP server `{server.name}`: {_describe(exc)}; it is reconnected in "
                    "the background"
                )
                raise McpUnavailable(msg) from exc
            if getattr(result, "isError", False):
                server.status.call_errors += 1
            return result
        raise AssertionError  # pragma: no cover - the loop returns or raises

    async def _live(self, server: _Server) -> Any:
        """Return the server's session, waiting up to `CALL_WAIT_S` for one if it is down.

        Raises:
            McpUnavailable: still down after the wait.
        """
        if server.session is None and server.listed and not self._closed:
            self._reconnect_later(server)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CALL_WAIT_S):
                    await server.up.wait()
        if server.session is None:
            server.status.call_errors += 1
            msg = (
                f"MCP server `{server.name}` is not connected "
                f"({server.status.last_error or 'down'}); Fanfold reconnects it in the "
                "background: try again shortly"
            )
            raise McpUnavailable(msg)
        return server.session

    def status(self) -> dict[str, dict[str, Any]]:
        """Return each server's state and counts."""
        return {
            name: {
                "state": s.status.state,
                "connects": s.status.connects,
                "lists": s.status.lists,
                "calls": s.status.calls,
                "call_errors": s.status.call_errors,
                "last_error": s.status.last_error,
                "skipped_tools": dict(s.status.skipped_tools),
            }
            for name, s in self._servers.items()
        }

    async def aclose(self) -> None:
        """Close every session (stdio servers exit); safe to call more than once."""
        self._closed = True
        for server in self._servers.values():
            if server.reconnect is not None:
                server.reconnect.cancel()
            self._drop_session(server)
            server.status.state = "closed"
        # Sessions dropped earlier (a broken one) may still be ending: wait for them too.
        owners = set(self._owners)
        if not owners:
            return
        _, pending = await asyncio.wait(owners, timeout=CLOSE_TIMEOUT_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._owners.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: never "Task exception was never retrieved"

    async def __aenter__(self) -> McpToolset:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_BRACED_VAR = re.compile(r"\$\{([^}]+)\}")


class _Stopped(Exception):
    """The session was told to stop before it was ready."""


@contextlib.asynccontextmanager
async def _open_session(conn: Mapping[str, Any], stop: asyncio.Event) -> Any:
    """Yield an initialized session, or raise `_Stopped` if `stop` is set first.

    stdio: opened as the adapters open one, but with an `errlog` that has a file
    descriptor (the SDK's default is the `sys.stderr` of when it was imported; in
    Jupyter that stream has none, and the server never started). Other transports:
    the adapters' `create_session`. `${VAR}` in stdio `env` and HTTP `headers` values
    is taken from the environment (braced only, as the adapters do for `env`).
    """
    from langchain_mcp_adapters.sessions import create_session
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    async with contextlib.AsyncExitStack() as stack:
        if conn["transport"] == "stdio":
            env = conn.get("env")
            params = StdioServerParameters(
                command=conn["command"],
                args=conn.get("args", []),
                env=None if env is None else {k: _expand(v) for k, v in env.items()},
                cwd=conn.get("cwd"),
                encoding=conn.get("encoding", "utf-8"),
                encoding_error_handler=conn.get("encoding_error_handler", "strict"),
            )
            errlog = stack.enter_context(_errlog())
            read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
            session = await stack.enter_async_context(
                ClientSession(read, write, **(conn.get("session_kwargs") or {}))
            )
        else:
            given = dict(conn)
            if given.get("headers"):
                given["headers"] = {k: _expand(v) for k, v in given["headers"].items()}
            session = await stack.enter_async_context(create_session(given))  # type: ignore[arg-type]
        # The handshake is raced against `stop`, so a server that never answers ends
        # with the session closed in order, not cancelled halfway.
        handshake = asyncio.ensure_future(session.initialize())
        told = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({handshake, told}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            told.cancel()
            if not handshake.done():
                handshake.cancel()
                with contextlib.suppress(BaseException):
                    await handshake
        if handshake.cancelled():
            raise _Stopped
        handshake.result()
        yield session


def _expand(value: str) -> str:
    return _BRACED_VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), value)


@contextlib.contextmanager
def _errlog() -> Any:
    """Yield a stream with a file descriptor for a server's stderr."""
    for stream in (sys.stderr, sys.__stderr__):
        if stream is not None and _has_fd(stream):
            yield stream
            return
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        yield devnull


def _has_fd(stream: Any) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        return False
    return True


async def _list_all(session: Any) -> list[Any]:
    """Return every tool a session lists, page by page (at most `MAX_PAGES`)."""
    tools: list[Any] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = await session.list_tools(cursor=cursor)
        tools.extend(page.tools or [])
        cursor = page.nextCursor
        if not cursor:
            return tools
    msg = f"the tool list has more than {MAX_PAGES} pages"
    raise RuntimeError(msg)


def _transport_failed(exc: BaseException) -> bool:
    """Tell whether a call's error means its session is gone (not the call's own error)."""
    import anyio
    import httpx
    from mcp.shared.exceptions import McpError

    exc = _inner(exc)
    if isinstance(exc, McpError):
        return (exc.error.code, exc.error.message) in _SESSION_GONE
    transport = (
        anyio.ClosedResourceError,
        anyio.BrokenResourceError,
        anyio.EndOfStream,
        httpx.TransportError,
        ConnectionError,
    )
    return isinstance(exc, transport)


def _never_sent(exc: BaseException) -> bool:
    """Tell whether a failed call certainly never reached the server (safe to send again).

    Its session's pipe was already closed, or the HTTP server did not know the session.
    """
    import anyio
    from mcp.shared.exceptions import McpError

    exc = _inner(exc)
    if isinstance(exc, McpError):
        return (exc.error.code, exc.error.message) == (32600, "Session terminated")
    return isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError)


class _Lost(Exception):
    """The session a call was sent on was dropped before it answered."""


async def _unless(call: Any, lost: asyncio.Event | None) -> Any:
    """Await `call`; raise `_Lost` as soon as `lost` is set (the call is cancelled)."""
    if lost is None:
        return await call
    if lost.is_set():
        call.close()
        raise _Lost
    work = asyncio.ensure_future(call)
    watch = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()  # lost first (or we were cancelled): the answer will not come
    if not work.done() or work.cancelled():
        raise _Lost
    return work.result()


class _LiveSession:
    """What the adapters' tools call: the server's current session, whichever it is."""

    def __init__(self, toolset: McpToolset, server: _Server) -> None:
        self._toolset = toolset
        self._server = server

    async def call_tool(self, name: str, arguments: Any = None, **kwargs: Any) -> Any:
        return await self._toolset._call(self._server, name, arguments, **kwargs)


def _safe(name: str, *, suffix: str = "") -> str:
    """Return `name` as a tool name model APIs accept, at most 64 characters with `suffix`."""
    base = _UNSAFE.sub("_", name) or "tool"
    return base[: MAX_TOOL_NAME - len(suffix)] + suffix


def _inner(error: BaseException) -> BaseException:
    """Return the first error inside exception groups (anyio task groups raise them)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _describe(error: BaseException) -> str:
    """Return an error's type and text, from inside an exception group too."""
    error = _inner(error)
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"[:300]


__all__ = [
    "DEFAULT_MCP_TTL_S",
    "McpToolset",
    "McpUnavailable",
    "ServerStatus",
    "check_mcp_servers",
    "load_mcp_config",
]
