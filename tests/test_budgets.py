"""Run and task budgets over whole runs on the task-keyed fake: tokens and wall time.

A spent run budget (`max_total_tokens`, `max_wall_time_s`) stops dispatch, ends the
running tasks, runs no further tool or model call (and leaks no pending request),
and skips the synthesizer; a task budget (`max_task_tokens`) fails only its task.
"""

from __future__ import annotations

import asyncio
import gc
import time
import warnings

from langchain_core.tools import tool

from fanfold.graphs.api import arun
from tests.fakes import TaskScript, TaskScriptedModel
from tests.helpers import (
    by_id,
    checkpointed,
    error_types,
    plan_of,
    settings,
    statuses,
    task,
)


async def test_token_budget_stops_dispatch_and_skips_the_synthesizer() -> None:
    ids = [f"t{i}" for i in range(1, 9)]
    plan = plan_of(*(task(t) for t in ids))
    model = TaskScriptedModel(scripts={t: TaskScript(latency=0.01) for t in ids})
    # Each call costs 15 tokens; windows of 2: 30 after the first, and the second
    # window's last reply reaches the budget exactly (so no reply is in flight then).
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=2, max_total_tokens=60),
        plan=plan,
        graph=checkpointed(),
    )

    assert out.status == "budget_exceeded"
    assert [r.task_id for r in out.results] == ids
    assert statuses(out.results) == {t: "ok" if t <= "t4" else "cancelled" for t in ids}
    for r in out.results[:4]:
        assert r.output == f"output of {r.task_id}:" and r.usage.total_tokens == 15
    for r in out.results[4:]:
        assert r.error is not None and r.error.type == "BudgetExceeded"
        assert r.error.message == "token budget of 60 spent (60 used)"
        assert r.attempts == 0
    assert set(model.recorder.calls) == set(ids[:4])
    assert out.answer == ""  # no synthesizer call once the budget is spent
    assert out.metrics.tokens.total_tokens == 60
    assert out.metrics.retries == 0 and out.metrics.faults == {}
    assert out.metrics.stop_reason is not None and "token budget" in out.metrics.stop_reason


async def test_token_budget_ends_running_tasks() -> None:
    # The quick task's one reply spends the budget while a sibling hangs: the run
    # must stop then, not when the hung task's own timeout (5 s) ends it.
    plan = plan_of(task("quick"), task("hung", timeout_s=5.0), task("p1"), task("p2"))
    model = TaskScriptedModel(
        scripts={
            "quick": TaskScript(latency=0.01),
            "hung": TaskScript(behaviour="hang"),
            "p1": TaskScript(),
            "p2": TaskScript(),
        }
    )
    t0 = time.monotonic()
    out = await arun(
        "x", settings=settings(model, max_concurrency=2, max_total_tokens=10), plan=plan
    )
    wall = time.monotonic() - t0

    print(f"\ntoken budget with a hung sibling: run took {wall:.2f}s")
    assert out.status == "budget_exceeded"
    assert statuses(out.results) == {
        "quick": "ok",
        "hung": "cancelled",
        "p1": "cancelled",
        "p2": "cancelled",
    }
    assert error_types(out.results) == {
        "quick": None,
        "hung": "BudgetExceeded",
        "p1": "BudgetExceeded",
        "p2": "BudgetExceeded",
    }
    assert by_id(out.results)["quick"].output == "output of quick:"
    assert model.recorder.cancelled == {"hung"}
    assert set(model.recorder.calls) == {"quick", "hung"}
    assert out.answer == ""
    assert wall < 3.0


async def test_a_call_waiting_its_turn_when_the_budget_runs_out_leaks_nothing() -> None:
    # At 4 requests per second, `b` waits for the rate limiter while `a`'s reply
    # spends the budget; `b` must then end without a model call, and without leaving
    # a never-awaited request coroutine behind.
    model = TaskScriptedModel(scripts={"a": TaskScript(), "b": TaskScript()})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = await arun(
            "x",
            settings=settings(model, max_total_tokens=10, requests_per_second=4),
            plan=plan_of(task("a"), task("b")),
        )
        gc.collect()
    assert statuses(out.results) == {"a": "ok", "b": "cancelled"}
    assert error_types(out.results)["b"] == "BudgetExceeded"
    assert model.recorder.calls == {"a": 1}
    assert out.status == "budget_exceeded"
    leaked = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert leaked == []


async def test_a_spent_budget_runs_no_further_tool() -> None:
    # The model's reply asks for a tool and spends the budget: the task ends
    # cancelled, and the tool (here one with a side effect) must not run.
    ran: list[str] = []

    @tool
    async def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression (and remember that it did)."""
        ran.append(expression)
        return "0"

    model = TaskScriptedModel(scripts={"a": TaskScript(expression="1+1")})
    out = await arun(
        "x",
        settings=settings(model, max_total_tokens=10, tools=[calculator]),
        plan=plan_of(task("a")),
    )
    await asyncio.sleep(0.05)  # room for a detached tool to run, if one was started
    (r,) = out.results
    assert r.status == "cancelled" and r.error is not None and r.error.type == "BudgetExceeded"
    assert out.status == "budget_exceeded"
    assert ran == [], "a tool ran after the run's budget was spent"


async def test_wall_time_budget_ends_hung_tasks_and_stops_dispatch() -> None:
    ids = ["quick", "h1", "h2", "p1", "p2", "p3"]
    plan = plan_of(*(task(t) for t in ids))
    scripts = {t: TaskScript() for t in ids}
    scripts.update(h1=TaskScript(behaviour="hang"), h2=TaskScript(behaviour="hang"))
    model = TaskScriptedModel(scripts=scripts)
    budget = 0.5
    t0 = time.monotonic()
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=3, max_wall_time_s=budget),
        plan=plan,
        graph=checkpointed(),
    )
    wall = time.monotonic() - t0

    print(f"\nwall budget {budget}s: run took {wall:.3f}s")
    assert out.status == "budget_exceeded"
    assert statuses(out.results) == {t: "ok" if t == "quick" else "cancelled" for t in ids}
    types = error_types(out.results)
    assert all(types[t] == "BudgetExceeded" for t in ids if t != "quick")
    res = by_id(out.results)
    assert (
        res["h1"].error is not None and "wall time budget of 0.5s spent" in res["h1"].error.message
    )
    assert res["h1"].attempts == res["h2"].attempts == 1  # a budget is never retried
    assert all(res[t].attempts == 0 for t in ("p1", "p2", "p3"))
    assert model.recorder.cancelled == {"h1", "h2"}
    assert set(model.recorder.calls) == {"quick", "h1", "h2"}
    assert res["quick"].output == "output of quick:"
    assert out.answer == ""
    assert out.metrics.retries == 0
    assert budget <= wall < budget + 5.0  # the hung tasks' own timeout is 120 s


async def test_budgets_in_a_wide_window_end_every_task_once_spent() -> None:
    # No checkpointer: one window, tasks start as slots free. Whatever starts after
    # the budget is spent ends at once, without a model call.
    ids = [f"t{i}" for i in range(1, 9)]
    model = TaskScriptedModel(scripts={t: TaskScript(latency=0.01) for t in ids})
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=2, max_total_tokens=60),
        plan=plan_of(*(task(t) for t in ids)),
    )
    assert out.status == "budget_exceeded" and out.metrics.rounds == 1
    res = by_id(out.results)
    ok = {t for t in ids if res[t].status == "ok"}
    assert ok == {"t1", "t2", "t3", "t4"}  # 4 x 15 tokens spend the budget
    for t in set(ids) - ok:
        assert res[t].status == "cancelled" and res[t].error is not None
        assert res[t].error.type == "BudgetExceeded"
    assert out.metrics.tokens.total_tokens == 60
    # At most one task (started when t3 ended, before t4 did) was mid-call at the stop.
    assert set(model.recorder.calls) - ok <= {"t5"}
    assert all(res[t].attempts == 0 for t in ("t6", "t7", "t8"))

    # A wall-time budget: fast tasks go on in the slots the first finisher freed,
    # while two hung ones are ended when the budget runs out.
    ids = ["quick", "h1", "h2", "p1", "p2", "p3"]
    scripts = {t: TaskScript() for t in ids}
    scripts.update(h1=TaskScript(behaviour="hang"), h2=TaskScript(behaviour="hang"))
    model = TaskScriptedModel(scripts=scripts)
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=3, max_wall_time_s=0.5),
        plan=plan_of(*(task(t) for t in ids)),
    )
    assert out.status == "budget_exceeded"
    assert statuses(out.results) == {t: "cancelled" if t in ("h1", "h2") else "ok" for t in ids}
    assert model.recorder.cancelled == {"h1", "h2"}
    assert error_types(out.results)["h1"] == "BudgetExceeded"


async def test_task_token_budget_fails_only_that_task() -> None:
    ran: list[str] = []

    @tool
    async def lookup(q: str) -> str:
        """Look something up."""
        ran.append(q)
        return q

    plan = plan_of(
        task("tooly", tools=["lookup"]),
        task("plain", tools=[]),
        task("after_tooly", "tooly", tools=[]),
        task("after_plain", "plain", tools=[]),
    )
    model = TaskScriptedModel(
        scripts={
            "tooly": TaskScript(call=("lookup", {"q": "x"})),  # a tool call, then an answer
            "plain": TaskScript(),  # one call, 15 tokens
            "after_tooly": TaskScript(),
            "after_plain": TaskScript(),
        }
    )
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=4, max_task_tokens=15, tools=[lookup]),
        plan=plan,
    )

    assert statuses(out.results) == {
        "tooly": "failed",
        "plain": "ok",
        "after_tooly": "skipped",
        "after_plain": "ok",
    }
    tooly = by_id(out.results)["tooly"]
    assert tooly.error is not None and tooly.error.type == "BudgetExceeded"
    # Checked after the reply: its 15 tokens spent the budget, so its tool never ran.
    assert tooly.error.message == (
        "task token budget of 15 spent (15 used); the 1 tool call(s) of the last reply were not run"
    )
    assert ran == []
    assert tooly.attempts == 1 and tooly.tool_calls == 1 and tooly.usage.total_tokens == 15
    assert model.recorder.calls["tooly"] == 1  # stopped before a second call
    assert out.status == "partial"
    assert out.metrics.retries == 0
    assert out.answer.startswith("answer: tooly=failed, plain=ok")  # the run went on


async def test_a_timed_out_or_cancelled_task_keeps_the_tokens_it_spent() -> None:
    # Each task makes one model call (15 tokens), then waits in a slow tool: `late` runs
    # out of time there, `stopped` is cancelled there when `quick` meets the quorum.
    @tool
    async def slow(q: str) -> str:
        """Take a long time."""
        await asyncio.sleep(30)
        return q

    plan = plan_of(
        task("late", timeout_s=0.5, tools=["slow"]),
        task("stopped", tools=["slow"]),
        task("quick", tools=[]),
    )
    model = TaskScriptedModel(
        scripts={
            "late": TaskScript(latency=0, call=("slow", {"q": "x"})),
            "stopped": TaskScript(latency=0, call=("slow", {"q": "y"})),
            "quick": TaskScript(latency=0.8),
        }
    )
    out = await arun("x", settings=settings(model, tools=[slow], policy="quorum:1"), plan=plan)
    res = by_id(out.results)
    assert statuses(out.results) == {"late": "timed_out", "stopped": "cancelled", "quick": "ok"}
    assert res["late"].usage.total_tokens == 15
    assert res["stopped"].usage.total_tokens == 15
    assert out.metrics.tokens.total_tokens >= 45
