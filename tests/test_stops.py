"""How runs stop: at once, for the reason that stopped them, and never by a hang or a raise.

Each test here pins a way a run used to stop late, wrongly or not at all.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
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
)
from fanfold.graphs.orchestrator import compile_orchestrator, graph
from fanfold.graphs.scoped import steps_needed
from fanfold.nodes.errors import SettingsError
from tests.fakes import TaskScript, TaskScriptedModel
from tests.helpers import by_id, plan_of, settings, statuses, task


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
