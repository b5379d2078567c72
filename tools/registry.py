"""A registry of tools that many subagents look up at once.

Static tools are registered once. Dynamic providers (a sync or async callable
returning tools, as an MCP client's `list_tools` would) are cached for a TTL and
refreshed once per expiry, however many subagents look them up at the same time.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.tools import BaseTool

ToolProvider = Callable[[], Iterable[BaseTool] | Awaitable[Iterable[BaseTool]]]
"""A callable returning the current tools of a dynamic source."""

StandIn = Callable[[str], BaseTool | None]
"""For a name no loaded tool has, a provider's stand-in tool, or None (see `add_provider`)."""

DEFAULT_TTL_S = 30.0


class UnknownToolError(KeyError):
    """A tool name that the registry does not know."""

    def __init__(self, names: Sequence[str], known: Iterable[str]) -> None:
        self.names = list(names)
        self.known = sorted(known)
        msg = f"unknown tool(s) {', '.join(f'`{n}`' for n in self.names)}; known: {self.known}"
        super().__init__(msg)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class RegistryStats:
    """Cache counters of a registry.

    `hits`: look-ups served from cache; `misses`: look-ups that met an expired
    provider; `refreshes`: provider calls; `errors`: provider calls that raised.
    """

    hits: int = 0
    misses: int = 0
    refreshes: int = 0
    errors: int = 0

    def minus(self, other: RegistryStats) -> dict[str, int]:
        """Return the counts since `other`, as a dict."""
        return {
            "hits": self.hits - other.hits,
            "misses": self.misses - other.misses,
            "refreshes": self.refreshes - other.refreshes,
            "errors": self.errors - other.errors,
        }


@dataclass
class _Provider:
    name: str
    fn: ToolProvider
    ttl_s: float
    stand_in: StandIn | None = None
    tools: dict[str, BaseTool] = field(default_factory=dict)
    expires_at: float = 0.0  # monotonic; 0: never loaded
    due: float | None = None
    """An earlier expiry asked for (`invalidate`) while a refresh was under way."""
    inflight: asyncio.Future[str] | None = None
    """The refresh under way: its outcome, `loaded`, `failed` or `cancelled`."""


class ToolRegistry:
    """Named LangChain tools, safe to use from many subagents at once.

    Writes take a lock and swap in new dicts; reads use a snapshot, so a subagent
    never sees a half-updated registry.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """Let pydantic accept a registry as it is (in run settings), never copy it."""
        from pydantic_core import core_schema

        return core_schema.is_instance_schema(cls)

    def __init__(
        self, tools: Iterable[BaseTool] = (), *, parent: ToolRegistry | None = None
    ) -> None:
        self._parent = parent
        self._lock = threading.Lock()
        self._tools: dict[str, BaseTool] = {}
        self._providers: list[_Provider] = []
        self._stats = RegistryStats()
        for tool in tools:
            self.register(tool)

    # --- writing ---------------------------------------------------------------------

    def register(self, tool: BaseTool, *, replace: bool = False) -> None:
        """Add a tool under its own name.

        Raises:
            TypeError: `tool` is not a LangChain `BaseTool`.
            ValueError: a tool of that name exists and `replace` is false.
        """
        if not isinstance(tool, BaseTool):
            msg = f"`{tool!r}` is not a LangChain BaseTool; wrap it with `@tool` first"
            raise TypeError(msg)
        with self._lock:
            if tool.name in self._tools and not replace:
                msg = f"a tool named `{tool.name}` is already registered"
                raise ValueError(msg)
            tools = dict(self._tools)
            tools[tool.name] = tool
            self._tools = tools

    def add_provider(
        self,
        fn: ToolProvider,
        *,
        name: str | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        stand_in: StandIn | None = None,
    ) -> None:
        """Add a dynamic source of tools, cached for `ttl_s` seconds.

        `stand_in`: asked for a name that no loaded tool has (in a plan, an allow-list);
        a tool it returns is handed out under that name instead of an unknown-tool
        error. An MCP toolset returns one while a server was never reached: its tools
        are not known yet, and the stand-in answers each call with an error saying so.

        Raises:
            TypeError: `fn` is not callable.
            ValueError: `ttl_s` is not positive.
        """
        if not callable(fn):
            msg = f"tool provider `{fn!r}` is not callable"
            raise TypeError(msg)
        if not ttl_s > 0:
            msg = f"`ttl_s` must be > 0, got `{ttl_s}`"
            raise ValueError(msg)
        label = name or str(getattr(fn, "__name__", "provider"))
        with self._lock:
            self._providers = [*self._providers, _Provider(label, fn, ttl_s, stand_in)]

    def invalidate(self, name: str, *, after_s: float = 0.0) -> None:
        """Let provider `name` expire within `after_s` seconds (its source changed or broke).

        Asked during the provider's refresh, it applies to the tools that refresh loads.
        """
        due = time.monotonic() + after_s
        for provider in self._all_providers():
            if provider.name == name:
                if provider.inflight is not None:
                    provider.due = due if provider.due is None else min(provider.due, due)
                provider.expires_at = min(provider.expires_at, due)

    def _all_providers(self) -> list[_Provider]:
        return [*(self._parent._all_providers() if self._parent else []), *self._providers]

    # --- reading ---------------------------------------------------------------------

    def _snapshot(self) -> dict[str, BaseTool]:
        tools: dict[str, BaseTool] = self._parent._snapshot() if self._parent else {}
        for provider in self._providers:
            tools.update(provider.tools)
        tools.update(self._tools)  # a static tool wins over a provider's of the same name
        return tools

    def names(self) -> list[str]:
        """Return the tool names known now (providers as last loaded), sorted."""
        return sorted(self._snapshot())

    def __contains__(self, name: object) -> bool:
        return name in self._snapshot()

    @property
    def stats(self) -> RegistryStats:
        """Return a copy of the cache counters."""
        if self._parent is not None and not self._providers:
            return self._parent.stats
        s = self._stats
        return RegistryStats(s.hits, s.misses, s.refreshes, s.errors)

    def stand_in(self, name: str) -> BaseTool | None:
        """Return a provider's stand-in for a name no loaded tool has, if one offers it."""
        for provider in self._all_providers():
            if provider.stand_in is not None:
                tool = provider.stand_in(name)
                if tool is not None:
                    return tool
        return None

    def accepts(self, name: str) -> bool:
        """Tell whether `name` resolves: a loaded tool, or a provider's stand-in."""
        return name in self._snapshot() or self.stand_in(name) is not None

    def resolve(self, names: Sequence[str] | None) -> list[BaseTool]:
        """Return the tools for an allow-list (`None`: every tool), without refreshing.

        A name no loaded tool has resolves to a provider's stand-in, if one offers it.

        Raises:
            UnknownToolError: a name is not known.
        """
        tools = self._snapshot()
        if names is None:
            return [tools[n] for n in sorted(tools)]
        for name in names:
            if name not in tools:
                tool = self.stand_in(name)
                if tool is not None:
                    tools[name] = tool
        missing = [n for n in names if n not in tools]
        if missing:
            raise UnknownToolError(missing, tools)
        return [tools[n] for n in names]

    async def aresolve(
        self, names: Sequence[str] | None, *, stats: RegistryStats | None = None
    ) -> list[BaseTool]:
        """Refresh expired providers (once each, however many callers), then resolve.

        `stats`: also count this look-up there (a run's own counters).

        Raises:
            UnknownToolError: a name is not known.
        """
        await self.arefresh(stats=stats)
        return self.resolve(names)

    async def arefresh(self, *, stats: RegistryStats | None = None) -> None:
        """Bring every expired provider up to date; count a hit or a miss.

        `stats`: also count the look-up and any refresh it made there.
        """
        if self._parent is not None:
            await self._parent.arefresh(stats=stats)
            if not self._providers:
                return
        now = time.monotonic()
        expired = [p for p in self._providers if p.expires_at <= now]
        counters = [self._stats] if stats is None else [self._stats, stats]
        if not expired:
            for c in counters:
                c.hits += 1
            return
        for c in counters:
            c.misses += 1
        await asyncio.gather(*(self._refresh(p, counters) for p in expired))

    async def _refresh(self, provider: _Provider, counters: list[RegistryStats]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            inflight = provider.inflight
            if inflight is None or inflight.done() or inflight.get_loop() is not loop:
                break
            # Someone else is refreshing: wait for it. Were it cancelled (its run was),
            # the tools are still not loaded: go round and refresh here instead.
            if await asyncio.shield(inflight) != "cancelled":
                return
        fut: asyncio.Future[str] = loop.create_future()
        provider.inflight = fut
        provider.due = None
        outcome = "cancelled"
        try:
            for c in counters:
                c.refreshes += 1
            result = provider.fn()
            if inspect.isawaitable(result):
                result = await result
            tools = {}
            for tool in result:
                if not isinstance(tool, BaseTool):
                    msg = f"provider `{provider.name}` returned `{tool!r}`, not a BaseTool"
                    raise TypeError(msg)
                tools[tool.name] = tool
            provider.tools = tools
            provider.expires_at = min(time.monotonic() + provider.ttl_s, provider.due or math.inf)
            outcome = "loaded"
        except Exception:  # noqa: BLE001 - keep the last good tools; try again next look-up
            outcome = "failed"
            for c in counters:
                c.errors += 1
        finally:
            fut.set_result(outcome)
            provider.inflight = None

    def merged(self, extra: Iterable[BaseTool]) -> ToolRegistry:
        """Return a registry layered on this one, plus `extra` (extra wins on a name).

        The layer shares this registry's providers and their cache.
        """
        reg = ToolRegistry(parent=self)
        for tool in extra:
            reg.register(tool, replace=True)
        return reg


def default_registry() -> ToolRegistry:
    """Return a registry holding the built-in tools."""
    from fanfold.tools.builtins import BUILTIN_TOOLS

    return ToolRegistry(BUILTIN_TOOLS)
