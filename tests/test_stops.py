"""How runs stop: at once, for the reason that stopped them, and never by a hang or a raise.

Each test here pins a way a run used to stop late, wrongly or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, tool

from fanfold import (
    Plan,
    QuorumUnreachable,
    RunSettings,
    Task,
    TaskFailedError,
    ToolRegistry,
    arun,
    execute_tasks_parallel,
    run,
)
from fanfold.graphs.orchestrator import compile_orchestrator, graph
from fanfold.graphs.scoped import steps_needed
from fanfold.nodes.errors import SettingsError
from fanfold.testing import REPLY_USAGE, AsyncFakeModel
from tests.fakes import TaskScript, TaskScriptedModel
from tests.helpers import by_id, plan_of, settings, statuses, task
from tests.hostile.tools import hold_again, hold_task, release, sleepy, stubborn
from tests.openai_server import ScriptedToolCall, running
from tests.openai_server import TaskScript as OpenAITaskScript
from tests.test_cli import fanfold


async def test_fail_fast_stops_a_wide_window_at_once() -> None:
    # 12 tasks at max_concurrency=4, no checkpointer: one window holds them all and
    # LangGraph queues 8. The handler that stops the run waits for a slot behind them,
    # so the stop itself must end the queued tasks (else they run in full: 10 s).
    scripts = {f"t{i}": TaskScript(latency=5.0) for i in range(12)}
    scripts["t3"] = TaskScript(latency=0.1, behaviour="raise")
    model = TaskScriptedModel(scripts=scripts)
    plan = plan_of(*(task(f"t{i}", tools=[]) for i in range(12)))
    t0 = time.monotonic()
    with pytest.raises(TaskFailedError) as caught:
        await arun("", settings=settings(model, max_concurrency=4, policy="fail_fast"), plan=plan)
    took = time.monotonic() - t0
    assert took < 4.0, took  # the running siblings' 5 s calls were cancelled
    assert set(model.recorder.calls) == {"t0", "t1", "t2", "t3"}  # no queued task started
    assert statuses(caught.value.results) == {
        f"t{i}": ("failed" if i == 3 else "cancelled") for i in range(12)
    }


async def test_an_unreachable_quorum_stops_a_wide_window_at_once() -> None:
    scripts = {f"t{i}": TaskScript(latency=1.0, behaviour="raise") for i in range(10)}
    model = TaskScriptedModel(scripts=scripts)
    plan = plan_of(*(task(f"t{i}", tools=[]) for i in range(10)))
    with pytest.raises(QuorumUnreachable):
        await arun(
            "",
            settings=settings(model, max_concurrency=2, policy="quorum:9", max_retries=0),
            plan=plan,
        )
    # Two failures leave at most 8 of 10: out of reach; nothing queued ran after that.
    assert set(model.recorder.calls) == {"t0", "t1"}


async def test_a_quorum_larger_than_the_plan_fails_before_any_task_runs() -> None:
    model = TaskScriptedModel(scripts={"a": TaskScript(), "b": TaskScript()})
    with pytest.raises(QuorumUnreachable, match="quorum of 3 is out of reach: the plan has 2"):
        await arun(
            "", settings=settings(model, policy="quorum:3"), plan=plan_of(task("a"), task("b"))
        )
    assert model.recorder.calls == {}


async def test_a_quorum_never_met_by_the_end_fails_the_run() -> None:
    # Re-planning could have added tasks (so the plan's size alone says nothing); the
    # planner declined, and 2 ok tasks end the run short of 3.
    model = TaskScriptedModel(
        scripts={"a": TaskScript(), "b": TaskScript()},
        extensions=[{"tasks": [], "rationale": "enough"}],
    )
    with pytest.raises(QuorumUnreachable, match="2 of 2 tasks ended ok") as caught:
        await arun(
            "",
            settings=settings(model, policy="quorum:3", max_rounds=2),
            plan=plan_of(task("a", tools=[]), task("b", tools=[])),
        )
    assert statuses(caught.value.results) == {"a": "ok", "b": "ok"}


async def test_a_wall_budget_spent_while_planning_ends_the_run_budget_exceeded() -> None:
    model = TaskScriptedModel(
        scripts={"a": TaskScript()},
        plan={"tasks": [{"id": "a", "description": "x"}]},
        planner_latency=2.0,
    )
    out = await arun("x", settings=settings(model, max_wall_time_s=0.2))
    assert out.status == "budget_exceeded"
    assert out.results == [] and out.plan is None and out.answer == ""
    assert out.metrics.stop_reason is not None and "wall time budget" in out.metrics.stop_reason
    assert model.recorder.calls == {}


async def test_a_wall_budget_spent_while_replanning_keeps_every_result() -> None:
    model = TaskScriptedModel(
        scripts={"a": TaskScript(latency=0), "b": TaskScript(latency=0)},
        extensions=[{"tasks": [{"id": "c", "description": "more"}]}],
        planner_latency=0.6,
    )
    out = await arun(
        "x",
        settings=settings(model, max_rounds=2, max_wall_time_s=0.3),
        plan=plan_of(task("a", tools=[]), task("b", tools=[])),
    )
    assert out.status == "budget_exceeded"
    assert statuses(out.results) == {"a": "ok", "b": "ok"}  # kept, not lost in a raise
    assert out.metrics.stop_reason is not None and "wall time budget" in out.metrics.stop_reason


@pytest.mark.parametrize("max_concurrency", [3, 4])
async def test_dependents_of_a_task_a_quorum_cancelled_are_cancelled_too(
    max_concurrency: int,
) -> None:
    # Whether `after` was waiting in process (eager) or not yet sent, the same stop
    # ends it the same way (it used to be `skipped` at 3 and `cancelled` at 4).
    model = TaskScriptedModel(
        scripts={
            "a": TaskScript(latency=0.01),
            "b": TaskScript(latency=0.01),
            "slow": TaskScript(behaviour="hang"),
            "after": TaskScript(),
        }
    )
    plan = plan_of(task("a"), task("b"), task("slow"), task("after", "slow"))
    out = await arun(
        "", settings=settings(model, max_concurrency=max_concurrency, policy="quorum:2"), plan=plan
    )
    after = by_id(out.results)["after"]
    assert after.status == "cancelled"
    assert after.error is not None and after.error.type == "QuorumReached"


async def test_a_config_limit_bounds_delegated_subtasks_too() -> None:
    scripts: dict[str, TaskScript] = {
        "p": TaskScript(latency=0.05, call=("delegate", {"tasks": ["x", "y", "z"]}))
    }
    scripts |= {f"p.{i}": TaskScript(latency=0.1) for i in range(1, 4)}
    model = TaskScriptedModel(scripts=scripts)
    out = await arun(
        "",
        settings=settings(model, max_depth=2),
        plan=plan_of(task("p")),
        config={"max_concurrency": 1},
    )
    assert out.results[0].status == "ok" and len(out.results[0].subtasks) == 3
    assert model.recorder.peak == 1  # one model call at a time, at every level
    assert out.metrics.effective_concurrency[0] == (0.0, 1)


async def test_a_cancelled_run_does_not_leave_a_shared_registry_without_tools() -> None:
    started = asyncio.Event()

    @tool
    async def lookup(q: str) -> str:
        """Look something up."""
        return q

    async def slow_provider() -> list[BaseTool]:
        started.set()
        await asyncio.sleep(0.3)
        return [lookup]

    registry = ToolRegistry()
    registry.add_provider(slow_provider, ttl_s=3600)
    plan = Plan(tasks=[Task(id="a", description="x", tools=["lookup"])])

    def run() -> Any:
        model = TaskScriptedModel(scripts={"a": TaskScript(latency=0)})
        return arun("", settings=settings(model, tool_registry=registry), plan=plan)

    first = asyncio.ensure_future(run())
    await started.wait()
    second = asyncio.ensure_future(run())  # waits on the first run's refresh
    await asyncio.sleep(0.05)
    first.cancel()  # ... which is abandoned mid-way
    out = await asyncio.wait_for(second, timeout=10)
    assert out.results[0].status == "ok"  # it refreshed itself, and planned with `lookup`
    assert "lookup" in registry.names()


def test_synchronous_invoke_says_what_to_call_instead() -> None:
    with pytest.raises(TypeError, match="fanfold.run"):
        graph.invoke({"request": "x"})
    with pytest.raises(TypeError, match="ainvoke"):
        list(graph.stream({"request": "x"}))


async def test_execute_tasks_parallel_never_replans_or_asks_for_approval() -> None:
    model = TaskScriptedModel(scripts={"t1": TaskScript(), "t2": TaskScript()})
    results = await execute_tasks_parallel(
        ["do a", "do b"],
        model=model,
        settings=RunSettings(max_rounds=2, approve_plan=True, start_jitter_s=0),
    )
    assert [r.status for r in results] == ["ok", "ok"]
    assert model.recorder.planner_calls == []


def test_a_graph_limit_that_cannot_work_is_refused() -> None:
    with pytest.raises(SettingsError, match="max_concurrency"):
        compile_orchestrator(max_concurrency=-1)


async def test_a_baked_config_limit_that_cannot_work_is_refused_at_the_run() -> None:
    capped = compile_orchestrator(synthesize_answer=False).with_config(max_concurrency="4")
    with pytest.raises(SettingsError, match="max_concurrency"):
        await capped.ainvoke({"request": "", "given_plan": plan_of(task("a"))})


async def test_no_plan_the_settings_accept_hits_langgraphs_step_limit() -> None:
    seen: list[int] = []

    @tool
    async def probe() -> str:
        """Report the recursion limit of the run."""
        from langgraph.config import get_config

        seen.append(int(get_config()["recursion_limit"]))
        return "ok"

    model = TaskScriptedModel(scripts={"a": TaskScript(latency=0, call=("probe", {}))})
    s = settings(model, tools=[probe], max_tasks=6000)
    await arun("", settings=s, plan=plan_of(task("a", tools=["probe"])))
    # 6000 tasks one at a time take two LangGraph steps each (subagent, reducer).
    assert seen == [steps_needed(s)] and seen[0] > 2 * 6000


# --- stops that return, whatever a stubborn part does --------------------------------------

STOP_BOUND_S = 3.0
"""A stop must return long before a stubborn part lets go (30 s). Measured: ~0.01 s after
the stop's cause (docs/ARCHITECTURE.md); the margin is for loaded machines."""


class StubbornModel(AsyncFakeModel):
    """A chat model whose calls for task `a` ignore cancellation; task `b`'s answer (or
    fail, with `fail_b`)."""

    fail_b: bool = False

    async def _agenerate(self, messages: list[Any], stop: Any = None, **kwargs: Any) -> Any:
        first = next(str(m.content) for m in messages if m.type == "human")
        if first.startswith("Task a "):
            await hold_task()
        await asyncio.sleep(0.2)
        if self.fail_b:
            raise ValueError("b fails")
        message = AIMessage(content="done", usage_metadata=REPLY_USAGE)
        return ChatResult(generations=[ChatGeneration(message=message)])


@contextlib.contextmanager
def holding() -> Iterator[None]:
    """Hostile parts hold within the block and are released at its end, inside the
    test: the test's event loop would otherwise wait on them as it closes."""
    hold_again()
    try:
        yield
    finally:
        release()


def _stop_settings(stop: str, model: Any, **kw: Any) -> RunSettings:
    if stop == "wall":
        kw["max_wall_time_s"] = 1.0
    elif stop == "tokens":
        kw["max_total_tokens"] = 10  # b's reply (15 tokens) spends it
    elif stop == "quorum":
        kw["policy"] = "quorum:1"  # b's result meets it
    elif stop == "fail_fast":
        kw["policy"] = "fail_fast"
    return settings(model, **kw)


STOP_ERROR = {"wall": "BudgetExceeded", "tokens": "BudgetExceeded", "quorum": "QuorumReached"}


@pytest.mark.parametrize("stop", ["wall", "tokens", "quorum", "fail_fast"])
@pytest.mark.parametrize("part", ["sync tool", "async tool", "model call"])
async def test_every_stop_returns_at_once_whatever_ignores_it(part: str, stop: str) -> None:
    with holding():
        await _stop_with_a_stubborn_part(part, stop)


async def _stop_with_a_stubborn_part(part: str, stop: str) -> None:
    # Task `a` is stuck in a part that ignores cancellation; task `b` causes the stop.
    b = TaskScript(latency=0.2, behaviour="raise" if stop == "fail_fast" else "ok")
    if part == "model call":
        model: Any = StubbornModel(fail_b=stop == "fail_fast")
        tools: list[Any] = []
    else:
        held = sleepy if part == "sync tool" else stubborn
        model = TaskScriptedModel(
            scripts={"a": TaskScript(latency=0, call=(held.name, {"q": "x"})), "b": b}
        )
        tools = [held]
    plan = plan_of(task("a", tools=[t.name for t in tools]), task("b", tools=[]))
    s = _stop_settings(stop, model, tools=tools, max_retries=0)
    t0 = time.monotonic()
    if stop == "fail_fast":
        with pytest.raises(TaskFailedError) as caught:
            await arun("", settings=s, plan=plan)
        results = caught.value.results
    else:
        out = await arun("", settings=s, plan=plan)
        results = out.results
        assert out.status == ("ok" if stop == "quorum" else "budget_exceeded")
    took = time.monotonic() - t0
    assert took < (1.0 if stop == "wall" else 0.2) + STOP_BOUND_S, took
    a = by_id(results)["a"]
    assert a.status == "cancelled", a
    assert a.error is not None
    assert a.error.type == STOP_ERROR.get(stop, "RunStopped"), a.error


async def test_a_wall_budget_beats_a_longer_task_timeout_on_a_stubborn_tool() -> None:
    with holding():
        await _wall_budget_and_task_timeout()


async def _wall_budget_and_task_timeout() -> None:
    # It used to wait for the task's own timeout (5 s) and call the task timed_out.
    model = TaskScriptedModel(scripts={"a": TaskScript(latency=0, call=("stubborn", {"q": "x"}))})
    s = settings(model, tools=[stubborn], max_wall_time_s=1.0, task_timeout_s=5.0)
    t0 = time.monotonic()
    out = await arun("", settings=s, plan=plan_of(task("a", tools=["stubborn"])))
    assert time.monotonic() - t0 < 1.0 + STOP_BOUND_S
    assert out.status == "budget_exceeded"
    a = out.results[0]
    assert a.status == "cancelled" and a.error is not None and a.error.type == "BudgetExceeded"


def test_the_sync_api_returns_at_once_though_a_tool_ignores_the_stop() -> None:
    with holding():
        _sync_api_stop()


def _sync_api_stop() -> None:
    model = TaskScriptedModel(
        scripts={"a": TaskScript(latency=0, call=("stubborn", {"q": "x"})), "b": TaskScript()}
    )
    s = settings(model, tools=[stubborn], policy="quorum:1")
    t0 = time.monotonic()
    out = run("", settings=s, plan=plan_of(task("a", tools=["stubborn"]), task("b", tools=[])))
    assert time.monotonic() - t0 < STOP_BOUND_S  # `asyncio.run` would wait the tool's 30 s
    assert statuses(out.results) == {"a": "cancelled", "b": "ok"}


@pytest.mark.parametrize("held", ["sleepy", "stubborn"])
def test_the_command_exits_at_once_though_a_tool_ignores_the_stop(
    held: str, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            [
                {"id": "a", "description": "look up", "tools": [held]},
                {"id": "b", "description": "other", "tools": []},
            ]
        )
    )
    with running(latency_s=0.05) as server:
        server.tasks = {
            "a": OpenAITaskScript("a", tool_calls=[ScriptedToolCall(held, {"q": "x"})]),
            "b": OpenAITaskScript("b"),
        }
        t0 = time.monotonic()
        proc = fanfold(
            "run", "x", "--plan", str(plan), "--model", server.spec(),
            "--tools", f"tests.hostile.tools:{held}", "--max-wall-time", "1", "--json",
            timeout=60,
        )  # fmt: skip
        took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "budget_exceeded"
    assert {r["task_id"]: r["status"] for r in doc["results"]} == {"a": "cancelled", "b": "ok"}
    # The process ended, not only the run: the tool still holds on for ~29 s more.
    assert took < 20, took
    assert "Task was destroyed" not in proc.stderr and "Traceback" not in proc.stderr
