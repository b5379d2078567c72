"""MCP servers feed the tool registry: real servers (tests/mcp_server.py) over stdio and
streamable HTTP on 127.0.0.1, one session per server for a run, failures the model's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolMessage

from fanfold import Plan, RunSettings, Task, arun
from fanfold.nodes.errors import SettingsError
from fanfold.nodes.run_tools import MAX_TOOL_RESULT_CHARS
from fanfold.tools import ToolRegistry
from fanfold.tools.mcp import McpToolset, check_mcp_servers, load_mcp_config
from tests.fakes import TaskScript, TaskScriptedModel
from tests.llmock_server import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(90)


def stdio(log: Path, *extra: str) -> dict[str, Any]:
    """A stdio connection to the test server, as a user's config would have it."""
    return {
        "command": sys.executable,
        "args": ["-m", "tests.mcp_server", "--log", str(log), *extra],
        "cwd": str(ROOT),
    }


def entries(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def calls(log: Path, tool: str | None = None) -> list[dict[str, Any]]:
    return [e for e in entries(log) if e["op"] == "call" and (tool is None or e["tool"] == tool)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # a child of ours that exited: reap it
        if done:
            return False
    return True


async def wait_until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            msg = "condition not met in time"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)


class HttpServer:
    """The test server over streamable HTTP, in a process of its own on a free port."""

    def __init__(self, log: Path, extra_file: Path | None = None) -> None:
        self.log = log
        self.port = free_port()
        self.extra = ["--extra-file", str(extra_file)] if extra_file else []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        args = ["--transport", "http", "--port", str(self.port), "--log", str(self.log)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.mcp_server", *args, *self.extra],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                msg = f"MCP test server did not start on port {self.port}"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # only the process this test started, by its pid
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        self.proc = None


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(tmp_path / "http.log", extra_file=tmp_path / "extra")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def adds(n: int, **kw: Any) -> Plan:
    return Plan(
        tasks=[
            Task(id=f"t{i}", description=f"add {i} {i + 1}", tools=["add"], **kw) for i in range(n)
        ]
    )


def mcp_settings(servers: dict[str, Any], **kw: Any) -> RunSettings:
    return RunSettings(mcp_servers=servers, start_jitter_s=0, **kw)


# --- fan-outs over real servers --------------------------------------------------


async def test_stdio_fan_out_uses_one_server_process_for_the_run(tmp_path: Path) -> None:
    log = tmp_path / "stdio.log"
    settings = mcp_settings({"math": stdio(log)}, max_concurrency=10)
    out = await arun("adds", settings=settings, plan=adds(50))
    assert [r.status for r in out.results] == ["ok"] * 50
    for i, r in enumerate(out.results):
        assert f"add -> {2 * i + 1}" in r.output, r.output
        assert r.tool_errors == 0
    served = calls(log, "add")
    assert len(served) == 50
    pids = {e["pid"] for e in entries(log)}
    assert len(pids) == 1  # one process for the whole run, not one per call
    status = out.metrics.mcp["math"]
    assert status["connects"] == 1 and status["calls"] == 50 and status["state"] == "up"
    # Closed with the run: the stdio server exits.
    (pid,) = pids
    await wait_until(lambda: not alive(pid))


async def test_streamable_http_fan_out(http_server: HttpServer) -> None:
    settings = mcp_settings({"math": {"url": http_server.url}}, max_concurrency=10)
    out = await arun("adds", settings=settings, plan=adds(50))
    assert [r.status for r in out.results] == ["ok"] * 50
    assert all(f"add -> {2 * i + 1}" in r.output for i, r in enumerate(out.results))
    assert len(calls(http_server.log, "add")) == 50
    assert out.metrics.mcp["math"]["connects"] == 1


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_one_session_serves_concurrent_calls(
    transport: str, tmp_path: Path, http_server: HttpServer
) -> None:
    """Tool calls per second through one session (the figure is printed: `-s`)."""
    log = tmp_path / "rate.log"
    conn = stdio(log) if transport == "stdio" else {"url": http_server.url}
    async with McpToolset({"s": conn}) as toolset:
        tool = next(t for t in await toolset.tools() if t.name == "add")
        n = 300
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(
                tool.ainvoke(
                    {"type": "tool_call", "id": str(i), "name": "add", "args": {"a": i, "b": 1}}
                )
                for i in range(n)
            )
        )
        elapsed = time.perf_counter() - started
    assert [r.content[0]["text"] for r in replies] == [str(i + 1) for i in range(n)]
    print(f"\n{transport}: {n} concurrent MCP tool calls in {elapsed:.2f}s = {n / elapsed:.0f}/s")


async def test_a_toolset_of_your_own_serves_many_runs(tmp_path: Path) -> None:
    log = tmp_path / "shared.log"
    from fanfold.tools import default_registry

    async with McpToolset({"s": stdio(log)}) as toolset:
        registry = default_registry()
        toolset.attach(registry, ttl_s=60)
        settings = RunSettings(tool_registry=registry, start_jitter_s=0)
        for _ in range(3):
            out = await arun("adds", settings=settings, plan=adds(3))
            for i, r in enumerate(out.results):
                assert f"add -> {2 * i + 1}" in r.output, r.output
        assert toolset.status()["s"]["connects"] == 1  # one session for the three runs
        assert len({e["pid"] for e in entries(log)}) == 1
    (pid,) = {e["pid"] for e in entries(log)}
    await wait_until(lambda: not alive(pid))  # closed by its owner, not by a run


# --- the tool list: TTL, one refresh, names ---------------------------------------


async def test_a_new_tool_is_offered_after_the_ttl_with_one_list_call(tmp_path: Path) -> None:
    log, flag = tmp_path / "ttl.log", tmp_path / "extra"
    toolset = McpToolset({"s": stdio(log, "--extra-file", str(flag))})
    registry = ToolRegistry()
    toolset.attach(registry, ttl_s=1.0)
    try:
        await registry.arefresh()
        assert "extra" not in registry.names()
        flag.touch()  # the server now offers a tool more
        await registry.arefresh()
        assert "extra" not in registry.names()  # cached: the TTL has not run out
        lists_before = sum(e["op"] == "list" for e in entries(log))
        await asyncio.sleep(1.1)
        found = await asyncio.gather(*(registry.aresolve(["extra"]) for _ in range(100)))
        assert all(tools[0].name == "extra" for tools in found)
        assert sum(e["op"] == "list" for e in entries(log)) == lists_before + 1
        stats = registry.stats
        # Each of the 100 met an expired list (a miss); one of them listed, 99 waited.
        assert (stats.refreshes, stats.misses, stats.hits) == (2, 1 + 100, 1)
        reply = await found[0][0].ainvoke(
            {"type": "tool_call", "id": "1", "name": "extra", "args": {"text": "hi"}}
        )
        assert reply.content[0]["text"] == "extra: hi"
    finally:
        await toolset.aclose()


async def test_a_server_slow_to_start_joins_at_a_later_look_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fanfold.tools.mcp as mcp_module

    monkeypatch.setattr(mcp_module, "FIRST_WAIT_S", 0.3)
    toolset = McpToolset({"s": stdio(tmp_path / "slow.log", "--start-delay", "1.5")})
    registry = ToolRegistry()
    toolset.attach(registry, ttl_s=60)
    try:
        started = time.monotonic()
        await registry.arefresh()  # the planner's look-up: it does not wait for the start
        assert time.monotonic() - started < 1.4
        assert registry.names() == [] and toolset.status()["s"]["state"] == "connecting"
        assert registry.stand_in("add") is not None  # a plan may name its tools meanwhile

        async def offered() -> bool:
            await registry.arefresh()
            return "add" in registry.names()

        deadline = time.monotonic() + 30
        while not await offered():  # up in the background: the next look-up lists it
            assert time.monotonic() < deadline, toolset.status()
            await asyncio.sleep(0.05)
        assert toolset.status()["s"]["connects"] == 1  # one attempt, just slow
        assert registry.stats.refreshes == 2  # announced once, listed once more
    finally:
        await toolset.aclose()


async def test_colliding_names_get_the_server_prefix(tmp_path: Path) -> None:
    from langchain_core.tools import tool

    @tool
    def echo(text: str) -> str:
        """A tool of the user's own named like an MCP tool."""
        return f"mine: {text}"

    settings = mcp_settings(
        {"a": stdio(tmp_path / "a.log"), "b": stdio(tmp_path / "b.log")}, tools=[echo]
    )
    plan = Plan(
        tasks=[
            Task(id="t1", description="add 1 2", tools=["add"]),
            Task(id="t2", description="b_add 3 4", tools=["b_add"]),
            Task(id="t3", description="a_echo hi", tools=["a_echo"]),
            Task(id="t4", description="echo hi", tools=["echo"]),
        ]
    )
    out = await arun("names", settings=settings, plan=plan)
    by = {r.task_id: r.output for r in out.results}
    assert "add -> 3" in by["t1"] and "b_add -> 7" in by["t2"]
    assert "a_echo -> hi" in by["t3"] and "echo -> mine: hi" in by["t4"]
    assert len(calls(tmp_path / "a.log", "add")) == 1  # `add`: the first server's
    assert len(calls(tmp_path / "b.log", "add")) == 1  # `b_add`: the second's


async def test_a_name_once_given_stays_with_its_tool(tmp_path: Path) -> None:
    fa, fb = tmp_path / "fa", tmp_path / "fb"
    fb.touch()  # only the second server offers `extra` at first
    servers = {
        "a": stdio(tmp_path / "a.log", "--extra-file", str(fa)),
        "b": stdio(tmp_path / "b.log", "--extra-file", str(fb)),
    }
    async with McpToolset(servers) as toolset:
        registry = ToolRegistry()
        toolset.attach(registry, ttl_s=0.3)
        (extra,) = await registry.aresolve(["extra"])
        assert "`b`" in extra.description
        fa.touch()  # now the first server, listed earlier in the config, offers one too
        await asyncio.sleep(0.35)
        await registry.arefresh()
        (same,) = registry.resolve(["extra"])
        (other,) = registry.resolve(["a_extra"])
        assert same is extra and "`a`" in other.description  # `extra` stays b's
        reply = await other.ainvoke(
            {"type": "tool_call", "id": "1", "name": "a_extra", "args": {"text": "x"}}
        )
        assert reply.content[0]["text"] == "extra: x"
        assert len(calls(tmp_path / "a.log", "extra")) == 1  # the first server's served it
        assert len(calls(tmp_path / "b.log", "extra")) == 0


def test_tool_names_are_made_safe_for_model_apis() -> None:
    from fanfold.tools.mcp import _safe

    assert _safe("github.search/issues") == "github_search_issues"
    assert _safe("x" * 100) == "x" * 64
    assert _safe("y" * 100, suffix="_2") == "y" * 62 + "_2"


async def test_planner_sees_mcp_tools_and_the_demo_calls_them(tmp_path: Path) -> None:
    log = tmp_path / "plan.log"
    out = await arun("echo hello there; add 2 3", settings=mcp_settings({"s": stdio(log)}))
    tasks = {t.id: t for t in out.plan.tasks}
    assert tasks["t1"].tools == ["echo"] and tasks["t2"].tools == ["add"]
    by = {r.task_id: r.output for r in out.results}
    assert "echo -> hello there" in by["t1"] and "add -> 5" in by["t2"]
    assert len(calls(log)) == 2
    # What the planning prompt lists: each MCP tool with its description and server.
    from fanfold.nodes.planner import kinds_and_tools

    async with McpToolset({"s": stdio(tmp_path / "p2.log")}) as toolset:
        registry = ToolRegistry()
        toolset.attach(registry)
        await registry.arefresh()
        listed = kinds_and_tools(RunSettings(), registry)["tools"]
    assert "- add: Add two integers. (MCP server `s`)" in listed.splitlines()


async def test_a_kind_may_allow_mcp_tools(tmp_path: Path) -> None:
    from fanfold import AgentKind

    log = tmp_path / "k.log"
    adder = AgentKind(name="adder", system_prompt="You add.", tools=["add"])
    settings = mcp_settings({"s": stdio(log)}, kinds=[adder])
    plan = Plan(tasks=[Task(id="t1", description="add 20 22", kind="adder")])  # no tools=
    out = await arun("k", settings=settings, plan=plan)
    assert "add -> 42" in out.results[0].output
    assert [e["tool"] for e in calls(log)] == ["add"]


# --- failures are the model's to see ----------------------------------------------


async def test_error_results_hangs_and_big_results(tmp_path: Path) -> None:
    log = tmp_path / "f.log"
    plan = Plan(
        tasks=[
            Task(id="err", description="fail boom", tools=["fail"]),
            Task(id="hang", description="slow 60", tools=["slow"]),
            Task(id="big", description=f"big {MAX_TOOL_RESULT_CHARS + 5000}", tools=["big"]),
            Task(id="ok", description="add 1 1", tools=["add"]),
        ]
    )
    settings = mcp_settings({"s": stdio(log)}, tool_timeout_s=1.0)
    started = time.monotonic()
    out = await arun("failures", settings=settings, plan=plan)
    assert time.monotonic() - started < 20
    by = {r.task_id: r for r in out.results}
    assert all(r.status == "ok" for r in out.results)  # the subagents went on
    assert "Error executing tool fail: boom" in by["err"].output
    assert "timed out after 1s" in by["hang"].output
    assert by["err"].tool_errors == 1 and by["hang"].tool_errors == 1
    assert by["big"].tool_errors == 0 and "[cut: this result has" in by["big"].output
    assert "add -> 2" in by["ok"].output
    # A hung call is not a broken server: later calls still work on the same session.
    assert out.metrics.mcp["s"]["connects"] == 1


async def test_a_big_result_is_cut_with_a_note_before_it_reaches_state(tmp_path: Path) -> None:
    async with McpToolset({"s": stdio(tmp_path / "b.log")}) as toolset:
        from fanfold.nodes.run_tools import call_tool

        tools = {t.name: t for t in await toolset.tools()}
        call = {"name": "big", "args": {"chars": 3 * MAX_TOOL_RESULT_CHARS}, "id": "1"}
        reply = await call_tool(call, tools)  # type: ignore[arg-type]
    assert isinstance(reply, ToolMessage)
    text = "".join(b["text"] for b in reply.content if isinstance(b, dict))
    assert len(text) < MAX_TOOL_RESULT_CHARS + 500
    said = re.search(r"this result has (\d+) characters; only the first (\d+) are shown", text)
    assert said, text[-300:]
    assert int(said.group(1)) >= 3 * MAX_TOOL_RESULT_CHARS  # as JSON: the block's fields too
    assert int(said.group(2)) == MAX_TOOL_RESULT_CHARS
    assert reply.artifact is None  # the structured copy is dropped with the cut


async def test_a_server_down_at_start_is_an_error_the_model_sees(tmp_path: Path) -> None:
    down = {"url": f"http://127.0.0.1:{free_port()}/mcp"}  # nothing listens there
    settings = mcp_settings({"gone": down, "s": stdio(tmp_path / "s.log")})
    plan = Plan(
        tasks=[
            Task(id="t1", description="lookup x", tools=["lookup"]),  # the down server's
            Task(id="t2", description="add 2 2", tools=["add"]),
        ]
    )
    out = await arun("down", settings=settings, plan=plan)
    by = {r.task_id: r for r in out.results}
    assert by["t1"].status == "ok" and by["t1"].tool_errors == 1
    assert "not offered by any MCP server reached so far" in by["t1"].output
    assert "`gone`" in by["t1"].output
    assert "add -> 4" in by["t2"].output
    assert out.metrics.mcp["gone"]["state"] == "down"  # as the run ended
    assert out.metrics.mcp["gone"]["last_error"]
    # A plan naming a tool nobody could offer is still refused when every server is up.
    with pytest.raises(Exception, match="unknown tool"):
        await arun(
            "typo",
            settings=mcp_settings({"s": stdio(tmp_path / "s2.log")}),
            plan=Plan(tasks=[Task(id="t1", description="x", tools=["lookp"])]),
        )


def test_transport_failures_are_told_from_a_call_s_own_errors() -> None:
    import anyio
    import httpx
    from mcp.shared.exceptions import McpError
    from mcp.types import ErrorData

    from fanfold.tools.mcp import _never_sent, _transport_failed

    def err(code: int, text: str) -> McpError:
        return McpError(ErrorData(code=code, message=text))

    gone = [err(-32000, "Connection closed"), err(32600, "Session terminated")]
    gone += [anyio.ClosedResourceError(), anyio.BrokenResourceError(), httpx.ConnectError("x")]
    own = [err(-32000, "upstream API rate limited"), err(-32602, "unknown tool")]
    own += [RuntimeError("Tool bad has an output schema but did not return structured content")]
    own += [ValueError("bad content block")]
    assert all(_transport_failed(e) for e in gone)
    assert not any(_transport_failed(e) for e in own)
    # Sent again only when it certainly never reached the server.
    assert _never_sent(anyio.ClosedResourceError()) and _never_sent(gone[1])
    assert not _never_sent(gone[0]) and not _never_sent(httpx.ConnectError("x"))


async def test_a_server_s_own_errors_leave_the_session_and_siblings_alone(tmp_path: Path) -> None:
    log = tmp_path / "own.log"
    async with McpToolset({"s": stdio(log, "--bad-schema", "--fail-lists")}) as toolset:
        from fanfold.nodes.run_tools import call_tool

        registry = ToolRegistry()
        toolset.attach(registry, ttl_s=0.2)
        tools = {t.name: t for t in await registry.aresolve(None)}
        # A tool whose schema no binding can use is left out, and said so.
        assert "broken" not in tools and "add" in tools
        assert "broken" in toolset.status()["s"]["skipped_tools"]
        slow = [
            asyncio.ensure_future(
                call_tool({"name": "slow", "args": {"seconds": 0.6}, "id": str(i)}, tools)  # type: ignore[typeddict-item]
            )
            for i in range(3)
        ]
        await asyncio.sleep(0.2)
        errs = [
            await call_tool({"name": "fail", "args": {"message": "no"}, "id": "f"}, tools),  # type: ignore[typeddict-item]
            await call_tool({"name": "rpc_error", "args": {"message": "x"}, "id": "r"}, tools),  # type: ignore[typeddict-item]
        ]
        assert [e.status for e in errs] == ["error", "error"]
        assert [r.status for r in await asyncio.gather(*slow)] == ["success"] * 3
        # Lists now fail (the server answers with an error): the tools it had stay offered
        # and the session is kept; no reconnect storm.
        for _ in range(5):
            await asyncio.sleep(0.25)
            await registry.arefresh()
        assert "add" in registry.names()
        status = toolset.status()["s"]
        assert status["connects"] == 1 and status["state"] == "up"
        assert "tools/list" in status["last_error"]
        reply = await call_tool({"name": "add", "args": {"a": 1, "b": 2}, "id": "a"}, tools)  # type: ignore[typeddict-item]
        assert reply.status == "success"


async def test_a_server_that_died_while_idle_costs_no_call(tmp_path: Path) -> None:
    log = tmp_path / "idle.log"
    async with McpToolset({"s": stdio(log)}) as toolset:
        tools = {t.name: t for t in await toolset.tools()}
        call = {"type": "tool_call", "id": "1", "name": "pid", "args": {}}
        first = int((await tools["pid"].ainvoke(call)).content[0]["text"])
        os.kill(first, signal.SIGKILL)  # the server this test started
        await wait_until(lambda: not alive(first))
        reply = await tools["pid"].ainvoke(call)  # sent on a closed pipe: sent again
        assert reply.status != "error", reply.content
        assert int(reply.content[0]["text"]) != first
        assert toolset.status()["s"]["connects"] == 2


async def test_a_wall_time_budget_bounds_a_server_that_never_starts(tmp_path: Path) -> None:
    log = tmp_path / "never.log"
    settings = mcp_settings({"s": stdio(log, "--start-delay", "60")}, max_wall_time_s=1.0)
    started = time.monotonic()
    out = await arun("adds", settings=settings, plan=adds(2))
    assert time.monotonic() - started < 8  # 1 s budget, then the server's close
    assert out.status == "budget_exceeded"


async def test_killing_the_stdio_server_mid_run(tmp_path: Path) -> None:
    log = tmp_path / "kill.log"
    plan = Plan(tasks=[Task(id=f"t{i}", description="slow 0.4", tools=["slow"]) for i in range(20)])
    settings = mcp_settings({"s": stdio(log)}, max_concurrency=4, tool_timeout_s=10.0)
    run = asyncio.ensure_future(arun("kill", settings=settings, plan=plan))
    await wait_until(lambda: len(calls(log)) >= 2)
    first = calls(log)[0]["pid"]
    os.kill(first, signal.SIGKILL)  # the server this run started (its pid, from its log)
    out = await asyncio.wait_for(run, 60)
    assert len(out.results) == 20 and all(r.status == "ok" for r in out.results)
    assert sum(r.tool_errors for r in out.results) >= 1  # the calls in flight failed
    later = [e for e in calls(log) if e["pid"] != first]
    assert later, "no call reached a restarted server"
    ok_after = [r for r in out.results if "slow -> slept 0.4" in r.output]
    assert len(ok_after) >= len(later) >= 1
    assert out.metrics.mcp["s"]["connects"] >= 2
    assert not any(alive(p) for p in {e["pid"] for e in entries(log)} if p != first)


async def test_killing_and_restarting_the_http_server(http_server: HttpServer) -> None:
    plan = Plan(tasks=[Task(id=f"t{i}", description="slow 0.4", tools=["slow"]) for i in range(20)])
    settings = mcp_settings({"s": {"url": http_server.url}}, max_concurrency=4, tool_timeout_s=5.0)
    run = asyncio.ensure_future(arun("kill", settings=settings, plan=plan))
    await wait_until(lambda: len(calls(http_server.log)) >= 2)
    first = calls(http_server.log)[0]["pid"]
    http_server.kill()
    await asyncio.sleep(0.5)
    http_server.start()  # the same port, a new process: the old session is unknown there
    out = await asyncio.wait_for(run, 60)
    assert len(out.results) == 20 and all(r.status == "ok" for r in out.results)
    assert sum(r.tool_errors for r in out.results) >= 1
    assert [e for e in calls(http_server.log) if e["pid"] != first], "no call after restart"
    assert out.metrics.mcp["s"]["connects"] >= 2


async def test_cancelling_a_run_closes_its_sessions(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    plan = Plan(tasks=[Task(id="t1", description="slow 30", tools=["slow"])])
    run = asyncio.ensure_future(arun("c", settings=mcp_settings({"s": stdio(log)}), plan=plan))
    await wait_until(lambda: len(calls(log)) >= 1)
    pid = calls(log)[0]["pid"]
    run.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert time.monotonic() - started < 8
    await wait_until(lambda: not alive(pid))


async def test_a_failed_run_closes_its_sessions(tmp_path: Path) -> None:
    from fanfold.nodes.errors import TaskFailedError

    log = tmp_path / "e.log"
    plan = Plan(
        tasks=[
            Task(id="t0", description="slow 0.3", tools=["slow"]),
            Task(id="t1", description="add 1 2", tools=["add"]),
        ]
    )
    settings = mcp_settings({"s": stdio(log)}, model="demo:fail=t1", policy="fail_fast")
    with pytest.raises(TaskFailedError):
        await arun("e", settings=settings, plan=plan)
    pids = {e["pid"] for e in entries(log)}
    assert len(pids) == 1  # the server ran (listed its tools, served t0)
    assert not any(alive(p) for p in pids)


async def test_a_stubborn_stdio_server_is_ended_when_the_run_ends(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    settings = mcp_settings({"s": stdio(log, "--stubborn")})
    out = await arun("adds", settings=settings, plan=adds(2))
    assert all(r.status == "ok" for r in out.results)
    (pid,) = {e["pid"] for e in entries(log)}
    # It ignored the end of its stdin and SIGTERM; the SDK kills it: gone when arun returns.
    assert not alive(pid)


async def test_delegated_subtasks_share_the_run_sessions(tmp_path: Path) -> None:
    log = tmp_path / "d.log"
    scripts = {
        "p1": TaskScript(call=("delegate", {"tasks": ["one", "two", "three"]})),
        **{f"p1.{c}": TaskScript(call=("add", {"a": c, "b": 10})) for c in (1, 2, 3)},
    }
    model = TaskScriptedModel(
        scripts=scripts, plan={"tasks": [{"id": "p1", "description": "big", "tools": ["delegate"]}]}
    )
    out = await arun("d", settings=mcp_settings({"s": stdio(log)}, model=model, max_depth=2))
    (parent,) = out.results
    assert [s.status for s in parent.subtasks] == ["ok"] * 3
    assert [s.output for s in parent.subtasks] == [f"output of p1.{c}: {c + 10}" for c in (1, 2, 3)]
    assert len({e["pid"] for e in entries(log)}) == 1
    assert out.metrics.mcp["s"]["connects"] == 1


# --- configuration ----------------------------------------------------------------


def test_configs_in_either_format_and_typed_errors(tmp_path: Path) -> None:
    wrapped = {
        "mcpServers": {
            "fs": {"command": "npx", "args": ["-y", "x"]},
            "web": {"url": "https://h/mcp"},
        }
    }
    checked = check_mcp_servers(wrapped)
    assert (
        checked["fs"]["transport"] == "stdio" and checked["web"]["transport"] == "streamable_http"
    )
    assert (
        check_mcp_servers({"w": {"url": "http://h/sse", "transport": "sse"}})["w"]["transport"]
        == "sse"
    )
    for bad, says in [
        ({"a": {"args": []}}, "needs `command`"),
        ({"a": {"command": "x", "args": "y"}}, "`args` must be a list"),
        ({"a": {"url": "ftp://h"}}, "`url` must be"),
        ({"a": {"url": "http://h", "transport": "carrier-pigeon"}}, "`transport` must be"),
        ({"a b": {"command": "x"}}, "server name"),
        ({"a": {"command": "x", "env": {"K": 1}}}, "`env` must be an object of strings"),
        ({"a": {"command": "x", "evn": {"K": "v"}}}, "unknown key(s) ['evn']"),
        ({"a": {"url": "http://h", "header": {}}}, "unknown key(s) ['header']"),
        ({"a": {"url": "http://"}}, "with a host"),
        ({"a": {"url": "http://h/\r\nX-Evil: 1"}}, "with a host"),
        ({"a": {"url": "ws://h", "transport": "http"}}, "http:// or https://"),
        ({"a": {"command": "x", "cwd": 5}}, "`cwd` must be"),
        ({"a": {"command": "x", "encoding": "no-such-codec"}}, "`encoding` must name a codec"),
        ({"a": {"url": "http://h", "timeout": float("nan")}}, "`timeout` must be"),
        ({f"s{i}": {"command": "x"} for i in range(65)}, "at most 64 servers"),
    ]:
        with pytest.raises(SettingsError, match="mcp_servers") as err:
            RunSettings(mcp_servers=bad)
        assert says in str(err.value)
    # A token in a config is never echoed by an error.
    with pytest.raises(SettingsError) as err:
        RunSettings(mcp_servers={"gh": {"command": "npx", "args": "x", "env": {"T": "ghp_SECRET"}}})
    assert "ghp_SECRET" not in str(err.value) and "'gh'" in str(err.value)
    path = tmp_path / "servers.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        load_mcp_config(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_mcp_config(tmp_path / "missing.json")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        load_mcp_config(fifo)  # never blocks waiting for a writer
    path.write_text("[" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        load_mcp_config(path)
    # Without the extra installed, the setting says which one to install.
    with pytest.MonkeyPatch.context() as mp:
        import importlib.util

        real = importlib.util.find_spec
        mp.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == "langchain_mcp_adapters" else real(name, *a),
        )
        with pytest.raises(SettingsError, match=r"pip install 'fanfold\[mcp\]'"):
            RunSettings(mcp_servers={"a": {"command": "x"}})
    # Configs may hold secrets: they are not saved with a run.
    assert "mcp_servers" not in RunSettings(mcp_servers=wrapped).to_json()


# --- the command line ---------------------------------------------------------------


def test_cli_run_with_mcp_servers_file(tmp_path: Path) -> None:
    from tests.test_cli import check_failure, fanfold

    log = tmp_path / "cli.log"
    servers = tmp_path / "servers.json"
    servers.write_text(json.dumps({"mcpServers": {"t": stdio(log)}}))  # as other clients write
    proc = fanfold("run", "echo hello there; add 2 3", "--mcp", str(servers), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    outputs = {r["task_id"]: r["output"] for r in doc["results"]}
    assert "echo -> hello there" in outputs["t1"] and "add -> 5" in outputs["t2"]
    assert doc["metrics"]["mcp"]["t"]["calls"] == 2
    assert {e["tool"] for e in calls(log)} == {"echo", "add"}
    (pid,) = {e["pid"] for e in entries(log)}
    assert not alive(pid)  # the command's run closed its server
    # Without --json, the summary says how each server did.
    proc = fanfold("run", "add 2 3", "--mcp", str(servers))
    assert proc.returncode == 0, proc.stderr
    assert "mcp t: up, 1 calls, 0 errors, 1 connects" in proc.stdout
    # A bad file: a typed error naming the flag, exit 2, nothing run.
    servers.write_text(json.dumps({"t": {"args": ["x"]}}))
    proc = fanfold("run", "x", "--mcp", str(servers), "--json")
    line, _ = check_failure(proc, 2, "BadInput")  # as every bad flag
    assert "--mcp must be MCP server connections" in line and "needs `command`" in line


async def test_a_stdio_server_starts_where_stderr_has_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    # As in Jupyter: sys.stderr is a stream without a file descriptor.
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    async with McpToolset({"s": stdio(tmp_path / "j.log")}) as toolset:
        names = [t.name for t in await toolset.tools()]
    assert "add" in names, toolset.status()


async def test_braced_variables_in_http_headers_are_expanded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import langchain_mcp_adapters.sessions

    from fanfold.tools.mcp import _open_session

    monkeypatch.setenv("FANFOLD_TEST_TOKEN", "s3cret")
    seen: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def capture(conn: dict[str, Any]) -> Any:
        seen.update(conn)
        raise RuntimeError("captured")
        yield  # pragma: no cover

    monkeypatch.setattr(langchain_mcp_adapters.sessions, "create_session", capture)
    conn = check_mcp_servers(
        {"s": {"url": "http://h/mcp", "headers": {"Authorization": "Bearer ${FANFOLD_TEST_TOKEN}"}}}
    )["s"]
    with pytest.raises(RuntimeError, match="captured"):
        async with _open_session(conn, asyncio.Event()):
            pass
    assert seen["headers"] == {"Authorization": "Bearer s3cret"}
    assert conn["headers"] == {"Authorization": "Bearer ${FANFOLD_TEST_TOKEN}"}  # not saved
