"""Steering a running fan-out from Python: `start()` and its `RunHandle`.

Cancel one task (its dependents skipped, its siblings untouched), add tasks to the
running plan, pause and resume dispatch, stop with an answer from what finished.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from langchain_core.tools import tool

from fanfold import Plan, PlanError, RunSettings, Task, arun, start
from fanfold.nodes.events import ProgressEvent
from tests.fakes import TaskScript, TaskScriptedModel


def plan_of(*tasks: Task) -> Plan:
    return Plan(tasks=list(tasks))


def task(tid: str, *deps: str) -> Task:
    return Task(id=tid, description=f"do {tid}", depends_on=list(deps), tools=["text_stats"])


async def started(handle: Any, task_id: str) -> None:
    async for event in handle.events():
        if event["fanfold"] == "task_started" and event["task_id"] == task_id:
            return
    msg = f"{task_id} never started"
    raise AssertionError(msg)


async def test_cancelling_a_running_task_ends_it_at_once_and_skips_its_dependents() -> None:
    model = TaskScriptedModel(
        scripts={
            "slow": TaskScript(behaviour="hang"),  # would never end by itself
            "sibling": TaskScript(latency=0.3),
            "after": TaskScript(),
            "other": TaskScript(latency=0.2),
        }
    )
    plan = plan_of(task("slow"), task("sibling"), task("after", "slow"), task("other", "sibling"))
    handle = await start("x", settings=RunSettings(model=model, start_jitter_s=0), plan=plan)
    await started(handle, "slow")
    asked = time.monotonic()
    assert await handle.cancel_task("slow", "the user changed their mind")
    ended = None
    async for event in handle.events():
        if event["fanfold"] == "task_finished" and event["task_id"] == "slow":
            ended = time.monotonic()
            break
    assert ended is not None and ended - asked < 1.0  # measured: ~1 ms (event-driven)
    out = await handle.result()
    by = {r.task_id: r for r in out.results}
    assert by["slow"].status == "cancelled"
    assert by["slow"].error is not None and by["slow"].error.type == "Cancelled"
    assert by["slow"].error.message == "the user changed their mind"
    assert by["after"].status == "skipped" and "`slow` cancelled" in by["after"].error.message  # type: ignore[union-attr]
    assert by["sibling"].status == "ok" and by["other"].status == "ok"
    assert "after" not in model.recorder.calls  # the dependent never ran
    assert out.status == "partial" and out.answer


async def test_cancelling_a_task_that_has_not_started_and_one_that_ended() -> None:
    model = TaskScriptedModel(scripts={t: TaskScript(latency=0.3) for t in ("a", "b", "c", "d")})
    settings = RunSettings(model=model, start_jitter_s=0, max_concurrency=1)
    handle = await start("x", settings=settings, plan=plan_of(task("a"), task("b"), task("c")))
    await started(handle, "a")
    assert await handle.cancel_task("c", "later")  # queued behind a and b
    with pytest.raises(KeyError, match="no task `zz`"):
        await handle.cancel_task("zz")
    out = await handle.result()
    by = {r.task_id: r for r in out.results}
    assert by["c"].status == "cancelled" and by["c"].attempts == 0
    assert "c" not in model.recorder.calls
    assert [by["a"].status, by["b"].status] == ["ok", "ok"]
    assert not await handle.cancel_task("a")  # it had ended: its result stands


async def test_a_cancel_is_not_a_failure_under_fail_fast() -> None:
    model = TaskScriptedModel(
        scripts={"a": TaskScript(behaviour="hang"), "b": TaskScript(latency=0.3)}
    )
    settings = RunSettings(model=model, start_jitter_s=0, policy="fail_fast")
    handle = await start("x", settings=settings, plan=plan_of(task("a"), task("b")))
    await started(handle, "a")
    await handle.cancel_task("a", "stop that one")
    out = await handle.result()  # no TaskFailedError: the run went on
    assert [r.status for r in out.results] == ["cancelled", "ok"]


async def test_a_tool_that_ignores_cancellation_does_not_hold_a_cancel() -> None:
    release = threading.Event()

    @tool
    def stubborn(text: str) -> str:
        """Block in a thread, deaf to cancellation."""
        release.wait(30)
        return text

    model = TaskScriptedModel(scripts={"a": TaskScript(call=("stubborn", {"text": "x"}))})
    settings = RunSettings(model=model, tools=[stubborn], start_jitter_s=0)
    plan = plan_of(Task(id="a", description="x", tools=["stubborn"]))
    handle = await start("x", settings=settings, plan=plan)
    try:
        await started(handle, "a")
        await asyncio.sleep(0.2)  # inside the tool now
        asked = time.monotonic()
        await handle.cancel_task("a", "taking too long")
        out = await asyncio.wait_for(handle.result(), 5)
        assert time.monotonic() - asked < 2.0
        assert out.results[0].status == "cancelled"
    finally:
        release.set()


async def test_added_tasks_join_the_plan_and_run_in_this_run() -> None:
    model = TaskScriptedModel(
        scripts={t: TaskScript(latency=0.2) for t in ("a", "b", "extra", "last")}
    )
    settings = RunSettings(model=model, start_jitter_s=0, max_concurrency=1)
    handle = await start("x", settings=settings, plan=plan_of(task("a"), task("b")))
    await started(handle, "a")
    await handle.add_tasks(
        [task("extra", "a"), {"id": "last", "description": "x", "depends_on": ["extra", "b"]}]
    )
    with pytest.raises(PlanError, match="unknown task"):
        await handle.add_tasks([task("bad", "nope")])
    with pytest.raises(PlanError, match="duplicate|already"):
        await handle.add_tasks([task("a")])
    out = await handle.result()
    assert [t.id for t in out.plan.tasks] == ["a", "b", "extra", "last"]  # type: ignore[union-attr]
    assert all(t.round == 1 for t in out.plan.tasks)  # type: ignore[union-attr]
    assert [r.task_id for r in out.results] == ["a", "b", "extra", "last"]
    assert {r.status for r in out.results} == {"ok"}
    assert "output of a" in model.recorder.prompts["extra"]  # it got its input
    with pytest.raises(RuntimeError, match="no longer dispatches"):
        await handle.add_tasks([task("late")])


async def test_pause_holds_dispatch_and_resume_releases_it() -> None:
    model = TaskScriptedModel(scripts={t: TaskScript(latency=0.3) for t in "abcd"})
    settings = RunSettings(model=model, start_jitter_s=0, max_concurrency=2)
    events: list[tuple[float, ProgressEvent]] = []
    handle = await start(
        "x",
        settings=settings,
        plan=plan_of(*(task(t) for t in "abcd")),
        on_event=lambda e: events.append((time.monotonic(), e)),
    )
    await started(handle, "b")
    await handle.pause()
    paused_at = time.monotonic()
    await asyncio.sleep(1.5)  # a and b finish meanwhile; c and d must wait
    resumed_at = time.monotonic()
    await handle.resume()
    out = await handle.result()
    assert {r.status for r in out.results} == {"ok"}
    starts = {e["task_id"]: t for t, e in events if e["fanfold"] == "task_started"}
    ends = {e["task_id"]: t for t, e in events if e["fanfold"] == "task_finished"}
    assert ends["a"] < resumed_at and ends["b"] < resumed_at  # running tasks finished
    assert starts["c"] >= resumed_at and starts["d"] >= resumed_at  # held until resume
    assert paused_at < resumed_at


async def test_stop_lets_running_tasks_finish_and_answers_from_them() -> None:
    model = TaskScriptedModel(scripts={t: TaskScript(latency=0.4) for t in "abcdef"})
    settings = RunSettings(model=model, start_jitter_s=0, max_concurrency=2)
    handle = await start("x", settings=settings, plan=plan_of(*(task(t) for t in "abcdef")))
    await started(handle, "b")
    await handle.stop("enough for now")
    out = await handle.result()
    by = {r.task_id: r for r in out.results}
    assert by["a"].status == by["b"].status == "ok"  # running when stopped: finished
    rest = [by[t] for t in "cdef"]
    assert {r.status for r in rest} == {"cancelled"}
    assert all("enough for now" in (r.error.message if r.error else "") for r in rest)
    assert not set("cdef") & set(model.recorder.calls)
    assert out.status == "partial" and out.answer  # synthesized from what finished


async def test_a_paused_run_can_be_stopped() -> None:
    model = TaskScriptedModel(scripts={t: TaskScript(latency=0.2) for t in "abc"})
    settings = RunSettings(model=model, start_jitter_s=0, max_concurrency=1)
    handle = await start("x", settings=settings, plan=plan_of(*(task(t) for t in "abc")))
    await started(handle, "a")
    await handle.pause()
    await asyncio.sleep(0.4)
    await handle.stop("never mind")
    out = await asyncio.wait_for(handle.result(), 10)
    assert [r.status for r in out.results] == ["ok", "cancelled", "cancelled"]


async def test_store_commands_pause_resume_and_refuse_what_they_do_not_know() -> None:
    from langgraph.store.memory import InMemoryStore

    from fanfold.graphs.orchestrator import compile_orchestrator

    model = TaskScriptedModel(scripts={t: TaskScript(latency=0.3) for t in "abc"})
    store = InMemoryStore()
    graph = compile_orchestrator(store=store)
    settings = RunSettings(model=model, start_jitter_s=0, max_concurrency=1)
    ns = ("fanfold", "steer", "th-1")
    events: list[tuple[float, ProgressEvent]] = []
    first = asyncio.Event()

    def seen(event: ProgressEvent) -> None:
        events.append((time.monotonic(), event))
        if event["fanfold"] == "task_started":
            first.set()

    run = asyncio.ensure_future(
        arun(
            "x",
            settings=settings,
            plan=plan_of(*(task(t) for t in "abc")),
            graph=graph,
            config={"configurable": {"thread_id": "th-1"}},
            on_event=seen,
        )
    )
    await asyncio.wait_for(first.wait(), 10)
    await store.aput(ns, "1", {"action": "pause"})
    await store.aput(ns, "2", {"action": "shout"})
    await asyncio.sleep(1.2)  # a finishes; b and c are held
    resumed_at = time.monotonic()
    await store.aput(ns, "3", {"action": "resume"})
    out = await asyncio.wait_for(run, 30)
    assert [r.status for r in out.results] == ["ok", "ok", "ok"]
    starts = {e["task_id"]: t for t, e in events if e["fanfold"] == "task_started"}
    assert starts["b"] >= resumed_at - 0.05 and starts["c"] > starts["b"]
    answers = {i.key: i.value for i in await store.asearch((*ns, "done"))}
    assert answers["1"] == {"ok": True} and answers["3"] == {"ok": True}
    assert answers["2"]["ok"] is False and "unknown action `shout`" in answers["2"]["error"]
