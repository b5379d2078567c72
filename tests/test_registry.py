"""The tool registry under concurrency: TTL-cached providers refreshed once."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.tools import BaseTool, tool

from fanfold import RunSettings, Task, execute_tasks_parallel
from fanfold.tools import ToolRegistry, UnknownToolError
from tests.fakes import TaskScript, TaskScriptedModel


def _make_tool(name: str) -> BaseTool:
    async def fn(x: str) -> str:
        return f"{name}:{x}"

    fn.__name__ = name
    fn.__doc__ = f"The {name} tool."
    return tool(fn)


class Provider:
    """A dynamic tool source (as an MCP client would be) that counts its calls."""

    def __init__(self, names: list[str], delay: float = 0.05) -> None:
        self.names = names
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> list[BaseTool]:
        self.calls += 1
        await asyncio.sleep(self.delay)  # slow enough that look-ups pile up behind it
        return [_make_tool(n) for n in self.names]


async def test_hundred_concurrent_lookups_after_expiry_call_the_provider_once() -> None:
    provider = Provider(["mcp_search"])
    reg = ToolRegistry()
    reg.add_provider(provider, ttl_s=0.2)
    first = await asyncio.gather(*(reg.aresolve(["mcp_search"]) for _ in range(100)))
    assert provider.calls == 1
    assert all(tools[0].name == "mcp_search" for tools in first)
    # Within the TTL: served from cache.
    await asyncio.gather(*(reg.aresolve(None) for _ in range(50)))
    assert provider.calls == 1
    stats = reg.stats
    assert stats.refreshes == 1 and stats.hits == 50 and stats.misses == 100
    # After expiry: once more, however many look up at the same time.
    await asyncio.sleep(0.25)
    provider.names = ["mcp_search", "mcp_fetch"]
    await asyncio.gather(*(reg.aresolve(["mcp_fetch"]) for _ in range(100)))
    assert provider.calls == 2
    assert reg.names() == ["mcp_fetch", "mcp_search"]


async def test_a_sync_provider_works_and_a_failing_one_keeps_the_last_tools() -> None:
    state = {"fail": False}

    def provider() -> list[BaseTool]:
        if state["fail"]:
            raise ConnectionError("server down")
        return [_make_tool("dyn")]

    reg = ToolRegistry()
    reg.add_provider(provider, ttl_s=0.05)
    assert [t.name for t in await reg.aresolve(["dyn"])] == ["dyn"]
    state["fail"] = True
    await asyncio.sleep(0.06)
    assert [t.name for t in await reg.aresolve(["dyn"])] == ["dyn"]  # stale but there
    assert reg.stats.errors == 1


def test_static_registration_rules() -> None:
    reg = ToolRegistry([_make_tool("a")])
    with pytest.raises(ValueError, match="already registered"):
        reg.register(_make_tool("a"))
    with pytest.raises(TypeError, match="BaseTool"):
        reg.register(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(UnknownToolError, match="`nope`"):
        reg.resolve(["nope"])
    with pytest.raises(ValueError, match="ttl_s"):
        reg.add_provider(lambda: [], ttl_s=0)


def test_concurrent_registration_from_threads() -> None:
    reg = ToolRegistry()
    tools = [_make_tool(f"t{i}") for i in range(200)]
    errors: list[BaseException] = []

    def work(chunk: list[BaseTool]) -> None:
        try:
            for t in chunk:
                reg.register(t)
                reg.resolve([t.name])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(tools[i::8],)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(reg.names()) == 200


async def test_a_run_uses_provider_tools_and_reports_cache_counts() -> None:
    provider = Provider(["mcp_lookup"], delay=0.0)
    reg = ToolRegistry()
    reg.add_provider(provider, ttl_s=60)
    plan_tasks = [Task(id=f"p{i}", description="x", tools=["mcp_lookup"]) for i in range(6)]
    model = TaskScriptedModel(scripts={f"p{i}": TaskScript() for i in range(6)})
    results = await execute_tasks_parallel(
        plan_tasks, model=model, settings=RunSettings(tool_registry=reg), max_concurrency=6
    )
    assert [r.status for r in results] == ["ok"] * 6
    assert provider.calls == 1
    assert all(model.recorder.tools[f"p{i}"] == ["mcp_lookup"] for i in range(6))


async def test_unknown_tool_names_are_caught_at_plan_validation() -> None:
    from fanfold import PlanError

    model = TaskScriptedModel(scripts={})
    with pytest.raises(PlanError, match="unknown tool"):
        await execute_tasks_parallel(
            [Task(id="a", description="x", tools=["mcp_missing"])], model=model
        )


async def test_invalidate_brings_the_next_refresh_forward_even_during_one() -> None:
    provider = Provider(["a"], delay=0.1)
    reg = ToolRegistry()
    reg.add_provider(provider, name="p", ttl_s=60)
    await reg.arefresh()
    await reg.arefresh()
    assert provider.calls == 1  # cached for 60 s
    reg.invalidate("p")
    await reg.arefresh()
    assert provider.calls == 2
    # Asked while a refresh runs (the source changed under it): that load expires at once.
    reg.invalidate("p")
    refreshing = asyncio.ensure_future(reg.arefresh())
    await asyncio.sleep(0.02)
    assert provider.calls == 3  # under way
    reg.invalidate("p")
    await refreshing
    await reg.arefresh()
    assert provider.calls == 4
    # A layer over the registry reaches its parent's providers.
    layer = reg.merged(())
    layer.invalidate("p")
    await layer.arefresh()
    assert provider.calls == 5


async def test_a_stand_in_answers_for_names_no_loaded_tool_has() -> None:
    reg = ToolRegistry([_make_tool("a")])
    asked: list[str] = []

    def stand_in(name: str) -> BaseTool | None:
        asked.append(name)
        return _make_tool(name) if name.startswith("later_") else None

    reg.add_provider(Provider([]), name="p", stand_in=stand_in)
    assert reg.accepts("a") and reg.accepts("later_x") and not reg.accepts("other")
    (got,) = reg.resolve(["later_x"])
    assert got.name == "later_x"
    assert "later_x" not in reg.names()  # a stand-in is not a known tool
    with pytest.raises(UnknownToolError, match="other"):
        reg.resolve(["a", "other"])
    assert "a" not in asked  # loaded names never ask
