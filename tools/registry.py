"""A registry of tools that many subagents look up at once."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from langchain_core.tools import BaseTool


class UnknownToolError(KeyError):
    """A tool name that the registry does not know."""

    def __init__(self, names: Sequence[str], known: Iterable[str]) -> None:
        self.names = list(names)
        self.known = sorted(known)
        msg = f"unknown tool(s) {', '.join(f'`{n}`' for n in self.names)}; known: {self.known}"
        super().__init__(msg)

    def __str__(self) -> str:
        return str(self.args[0])


class ToolRegistry:
    """Named LangChain tools, safe to read from many subagents at once.

    Registration takes a lock; look-ups read an immutable snapshot, so a
    subagent never sees a half-updated registry.
    """

    def __init__(self, tools: Iterable[BaseTool] = ()) -> None:
        self._lock = threading.Lock()
        self._tools: dict[str, BaseTool] = {}
        for tool in tools:
            self.register(tool)

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

    def names(self) -> list[str]:
        """Return the registered tool names, sorted."""
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def resolve(self, names: Sequence[str] | None) -> list[BaseTool]:
        """Return the tools for an allow-list; `None` means every tool.

        Raises:
            UnknownToolError: a name is not registered.
        """
        tools = self._tools
        if names is None:
            return [tools[n] for n in sorted(tools)]
        missing = [n for n in names if n not in tools]
        if missing:
            raise UnknownToolError(missing, tools)
        return [tools[n] for n in names]

    def merged(self, extra: Iterable[BaseTool]) -> ToolRegistry:
        """Return a new registry with these tools plus `extra` (extra wins on a name)."""
        reg = ToolRegistry(self._tools.values())
        for tool in extra:
            reg.register(tool, replace=True)
        return reg


def default_registry() -> ToolRegistry:
    """Return a registry holding the built-in tools."""
    from tools.builtins import BUILTIN_TOOLS

    return ToolRegistry(BUILTIN_TOOLS)
