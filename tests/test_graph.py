"""The orchestrator, whole: fan-out, ordering, dependencies, limits and policies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import InvalidUpdateError

from fanfold import Plan, RunSettings, TaskFailedError, arun
from fanfold.graphs.orchestrator import compile_orchestrator
from tests.fakes import TaskScript, TaskScriptedModel, dag_plan, scripts_for


def _model(plan: dict[str, Any], **overrides: TaskScript) -> TaskScriptedModel:
    return TaskScriptedModel(scripts=scripts_for(plan, **overrides), plan=plan)


async def test_twenty_tasks_at_concurrency_four() -> None:
    plan = dag_plan(20)
    model = _model(plan)
    events: list[dict[str, Any]] = []
    out = await arun(
        "do twenty things",
        settings=RunSettings(model=model, max_concurrency=4, start_jitter_s=0),
        on_event=events.append,
    )
    ids = [t["id"] for t in plan["tasks"]]
    assert [r.task_id for r in out.results] == ids
    assert all(r.status == "ok" for r in out.results), [r.error for r in out.results]
    assert out.status == "ok"
    rec = model.recorder
    # Each task ran its two model calls (tool call, then answer) exactly once.
    assert rec.calls == dict.fromkeys(ids, 2)
    assert rec.peak == 4
    assert out.metrics.peak_concurrency == 4
    assert out.metrics.counts["ok"] == 20
    by_id = {r.task_id: r for r in out.results}
    for t in plan["tasks"]:
        for dep in t["depends_on"]:
            assert rec.first_start[t["id"]] >= rec.last_end[dep]
            assert by_id[dep].output in rec.prompts[t["id"]]
        n = int(t["id"][1:])
        assert by_id[t["id"]].output == f"output of {t['id']}: {n * 1000 + 7}"
        assert by_id[t["id"]].tool_calls == 1
        assert by_id[t["id"]].usage.total_tokens == 30
    # Progress events: one start and one finish per task, start before finish.
    started = [e["task_id"] for e in events if e["fanfold"] == "task_started"]
    finished = [e["task_id"] for e in events if e["fanfold"] == "task_finished"]
    assert sorted(started) == sorted(ids) and sorted(finished) == sorted(ids)
    assert out.metrics.tokens.total_tokens == 20 * 30 + 15 + 15  # + planner + synthesizer
    assert out.answer.startswith("answer: t01=ok")
    # A window per layer: 8 tasks are ready at once, more than the 4 slots, so no
    # dependent is sent to wait for its inputs (nodes/dispatch.py).
    assert out.metrics.rounds == 3


async def test_with_a_checkpointer_each_window_is_max_concurrency_sends() -> None:
    # A finished task's checkpoint write must not wait behind queued tasks (LangGraph
    # gates both with one semaphore): with a checkpointer a window is at most mc.
    plan = dag_plan(20)
    model = _model(plan)
    out = await arun(
        "do twenty things",
        settings=RunSettings(model=model, max_concurrency=4, start_jitter_s=0),
        graph=compile_orchestrator(checkpointer=InMemorySaver()),
    )
    assert all(r.status == "ok" for r in out.results)
    assert model.recorder.peak == 4 and out.metrics.peak_concurrency == 4
    assert out.metrics.rounds == 5  # 8 + 6 + 6 tasks in three layers, 4 per window


async def test_results_follow_plan_order_not_completion_order() -> None:
    plan = {
        "tasks": [
            {"id": f"t{i}", "description": f"item {i}", "kind": "general"} for i in range(1, 7)
        ]
    }
    # The first task is the slowest, the last the fastest.
    scripts = {f"t{i}": TaskScript(latency=0.02 * (7 - i)) for i in range(1, 7)}
    model = TaskScriptedModel(scripts=scripts, plan=plan)
    events: list[dict[str, Any]] = []
    out = await arun(
        "x",
        settings=RunSettings(model=model, max_concurrency=6, start_jitter_s=0),
        on_event=events.append,
    )
    finished = [e["task_id"] for e in events if e["fanfold"] == "task_finished"]
    assert finished == [f"t{i}" for i in range(6, 0, -1)]
    assert [r.task_id for r in out.results] == [f"t{i}" for i in range(1, 7)]


async def test_settle_turns_a_raise_and_a_timeout_into_results() -> None:
    plan = dag_plan(20)
    for t in plan["tasks"]:
        if t["id"] == "t03":
            t["timeout_s"] = 0.3
    model = _model(
        plan,
        t02=TaskScript(behaviour="raise"),
        t03=TaskScript(behaviour="hang"),
    )
    out = await arun("x", settings=RunSettings(model=model, max_concurrency=4))
    by_id = {r.task_id: r for r in out.results}
    assert len(out.results) == 20
    assert by_id["t02"].status == "failed"
    assert by_id["t02"].error is not None and by_id["t02"].error.type == "ModelError"
    assert by_id["t02"].error.exception == "RuntimeError"
    assert "scripted failure for t02" in by_id["t02"].error.message
    assert by_id["t03"].status == "timed_out"
    assert by_id["t03"].duration_s >= 0.3
    assert "t03" in model.recorder.cancelled
    blocked = {t["id"] for t in plan["tasks"] if {"t02", "t03"} & set(t["depends_on"])}
    assert blocked, "the plan should have dependents of t02/t03"
    for r in out.results:
        if r.task_id in {"t02", "t03"}:
            continue
        if r.status == "skipped":
            assert r.error is not None and r.error.type == "DependencyFailed"
            assert r.task_id not in model.recorder.calls
    assert blocked <= {r.task_id for r in out.results if r.status == "skipped"}
    # Siblings were unaffected: every task not blocked ended ok.
    assert all(
        r.status == "ok" for r in out.results if r.status not in {"failed", "timed_out", "skipped"}
    )
    assert out.status == "partial"
    assert out.metrics.counts == {
        "ok": 20 - 2 - out.metrics.counts["skipped"],
        "failed": 1,
        "timed_out": 1,
        "cancelled": 0,
        "skipped": out.metrics.counts["skipped"],
    }


async def test_fail_fast_stops_the_run_and_keeps_finished_results() -> None:
    plan = dag_plan(20)
    model = _model(
        plan,
        t01=TaskScript(latency=0.01),
        t03=TaskScript(behaviour="hang"),
        t04=TaskScript(latency=0.05, behaviour="raise"),
    )
    t0 = time.monotonic()
    with pytest.raises(TaskFailedError) as info:
        await arun("x", settings=RunSettings(model=model, max_concurrency=4, policy="fail_fast"))
    assert time.monotonic() - t0 < 30  # it did not wait for the hung task's 120 s timeout
    err = info.value
    assert err.result.task_id == "t04" and err.result.status == "failed"
    finished = {r.task_id: r.status for r in err.results}
    assert finished["t04"] == "failed"
    assert finished.get("t01") == "ok"
    # Nothing past the first generation ran, and the hung sibling was cancelled.
    later = {t["id"] for t in plan["tasks"] if t["depends_on"]}
    assert not later & set(model.recorder.calls)
    assert "t03" in model.recorder.cancelled


async def test_wide_parallel_writes_never_conflict() -> None:
    plan = {"tasks": [{"id": f"w{i}", "description": "x"} for i in range(60)]}
    scripts = {f"w{i}": TaskScript(latency=0.0) for i in range(60)}
    model = TaskScriptedModel(scripts=scripts, plan=plan)
    try:
        out = await arun("x", settings=RunSettings(model=model, max_concurrency=60, max_tasks=60))
    except InvalidUpdateError as exc:  # pragma: no cover - the assertion below explains
        pytest.fail(f"parallel writes conflicted: {exc}")
    assert [r.task_id for r in out.results] == [f"w{i}" for i in range(60)]
    assert model.recorder.peak > 1


async def test_max_concurrency_from_the_compiled_default_and_run_config() -> None:
    plan = {"tasks": [{"id": f"c{i}", "description": "x"} for i in range(8)]}
    scripts = {f"c{i}": TaskScript(latency=0.03) for i in range(8)}
    model = TaskScriptedModel(scripts=scripts, plan=plan)
    graph = compile_orchestrator(max_concurrency=2)
    settings = RunSettings(model=model, start_jitter_s=0)
    # Straight through LangGraph: the compiled default applies.
    out = await graph.ainvoke({"request": "x"}, context=settings)
    assert model.recorder.peak == 2
    assert out["metrics"].peak_concurrency == 2
    # A run config's top-level max_concurrency wins over the default.
    model.recorder.peak = 0
    await graph.ainvoke({"request": "x"}, {"max_concurrency": 3}, context=settings)
    assert model.recorder.peak == 3
    # Under "configurable" it is not a concurrency setting at all.
    model.recorder.peak = 0
    await graph.ainvoke(
        {"request": "x"}, {"configurable": {"max_concurrency": 5}}, context=settings
    )
    assert model.recorder.peak == 2


async def test_given_plan_skips_the_planner_model() -> None:
    plan = Plan.model_validate({"tasks": [{"id": "a", "description": "x"}]})
    model = TaskScriptedModel(scripts={"a": TaskScript()}, plan=None)  # asking for a plan fails
    out = await arun("x", settings=RunSettings(model=model), plan=plan)
    assert [r.status for r in out.results] == ["ok"]


async def test_runs_share_nothing_between_concurrent_runs() -> None:
    plan = {"tasks": [{"id": "a", "description": "x"}, {"id": "b", "description": "y"}]}
    m1 = TaskScriptedModel(scripts={"a": TaskScript(), "b": TaskScript()}, plan=plan)
    m2 = TaskScriptedModel(scripts={"a": TaskScript(), "b": TaskScript()}, plan=plan)
    o1, o2 = await asyncio.gather(
        arun("x", settings=RunSettings(model=m1)), arun("x", settings=RunSettings(model=m2))
    )
    assert m1.recorder.calls == {"a": 1, "b": 1} == m2.recorder.calls
    assert [r.task_id for r in o1.results] == [r.task_id for r in o2.results] == ["a", "b"]


async def test_a_round_where_every_task_fails_still_reaches_the_reducer() -> None:
    plan = {
        "tasks": [
            {"id": "a", "description": "x", "timeout_s": 0.1},
            {"id": "b", "description": "y"},
            {"id": "c", "description": "z", "depends_on": ["a", "b"]},
            {"id": "d", "description": "w", "depends_on": ["c"]},
        ]
    }
    scripts = {"a": TaskScript(behaviour="hang"), "b": TaskScript(behaviour="raise")}
    model = TaskScriptedModel(scripts=scripts, plan=plan)
    out = await arun("x", settings=RunSettings(model=model))
    assert [(r.task_id, r.status) for r in out.results] == [
        ("a", "timed_out"),
        ("b", "failed"),
        ("c", "skipped"),
        ("d", "skipped"),
    ]
    assert out.metrics.rounds == 1
    assert out.answer == "answer: a=timed_out, b=failed, c=skipped, d=skipped"
