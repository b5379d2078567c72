"""Eager dispatch: without a checkpointer, a task may be sent with the inputs it waits for.

Then a task starts when its own inputs are done, not when the superstep that ran
them is, so a DAG runs at its critical path rather than wave by wave.
"""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from fanfold import Plan, RunSettings, TaskFailedError, arun
from fanfold.graphs.orchestrator import compile_orchestrator
from fanfold.nodes.scope import ScopedControl
from tests.fakes import TaskScript, TaskScriptedModel


def _plan(*tasks: tuple[str, list[str]], timeouts: dict[str, float] | None = None) -> Plan:
    timeouts = timeouts or {}
    return Plan.model_validate(
        {
            "tasks": [
                {"id": tid, "description": f"do {tid}", "depends_on": deps, "tools": []}
                | ({"timeout_s": timeouts[tid]} if tid in timeouts else {})
                for tid, deps in tasks
            ]
        }
    )


async def _run(plan: Plan, scripts: dict[str, TaskScript], **kw: Any) -> Any:
    model = TaskScriptedModel(scripts=scripts)
    settings = RunSettings(model=model, start_jitter_s=0, max_concurrency=8, **kw)
    out = await arun("", settings=settings, plan=plan)
    return out, model.recorder


# a -> b -> c is the critical path; slow takes longer than a and b together.
CHAIN = (("a", []), ("slow", []), ("b", ["a"]), ("c", ["b"]))


async def test_a_dependent_starts_when_its_own_inputs_are_done() -> None:
    scripts = {
        "a": TaskScript(latency=0.05),
        "slow": TaskScript(latency=0.6),
        "b": TaskScript(latency=0.05),
        "c": TaskScript(latency=0.05),
    }
    out, rec = await _run(_plan(*CHAIN), scripts)
    by_id = {r.task_id: r for r in out.results}
    assert all(r.status == "ok" for r in out.results)
    assert out.metrics.rounds == 1  # one window: b and c waited in it
    # b and c ran while `slow` still did: no barrier at the end of a's superstep.
    assert rec.first_start["c"] < rec.last_end["slow"]
    for dep, task in (("a", "b"), ("b", "c")):
        assert rec.first_start[task] >= rec.last_end[dep]
        assert by_id[dep].output in rec.prompts[task]  # the input reached the prompt
    # Its clock and its interval start when its inputs are ready, not when sent.
    assert by_id["c"].started_at is not None and by_id["b"].ended_at is not None
    assert by_id["c"].started_at >= by_id["b"].ended_at


async def test_with_a_checkpointer_dependents_wait_for_the_next_window() -> None:
    scripts = {t: TaskScript(latency=0.01) for t, _ in CHAIN}
    model = TaskScriptedModel(scripts=scripts)
    out = await arun(
        "",
        settings=RunSettings(model=model, start_jitter_s=0),
        plan=_plan(*CHAIN),
        graph=compile_orchestrator(checkpointer=InMemorySaver()),
    )
    assert all(r.status == "ok" for r in out.results)
    assert out.metrics.rounds == 3  # a, slow | b | c: nothing waits inside a window


async def test_a_waiting_task_is_skipped_when_an_input_fails_and_never_calls_the_model() -> None:
    scripts = {
        "a": TaskScript(behaviour="raise"),
        "slow": TaskScript(latency=0.3),
        "b": TaskScript(),
        "c": TaskScript(),
    }
    out, rec = await _run(_plan(*CHAIN), scripts, max_retries=0)
    by_id = {r.task_id: r for r in out.results}
    assert by_id["a"].status == "failed"
    assert by_id["slow"].status == "ok"
    for tid, blocker in (("b", "`a` failed"), ("c", "`b` skipped")):
        r = by_id[tid]
        assert r.status == "skipped" and r.attempts == 0
        assert r.error is not None and r.error.type == "DependencyFailed"
        assert r.error.message == blocker
    assert set(rec.calls) == {"a", "slow"}
    assert out.metrics.counts["skipped"] == 2 and out.status == "partial"


async def test_a_waiting_tasks_timeout_counts_from_when_its_inputs_are_ready() -> None:
    plan = _plan(("a", []), ("b", ["a"]), ("hangs", ["a"]), timeouts={"b": 0.25, "hangs": 0.2})
    scripts = {
        "a": TaskScript(latency=0.4),  # longer than b's whole timeout
        "b": TaskScript(latency=0.05),
        "hangs": TaskScript(behaviour="hang"),
    }
    out, rec = await _run(plan, scripts)
    by_id = {r.task_id: r for r in out.results}
    assert out.metrics.rounds == 1
    assert by_id["b"].status == "ok"  # waited 0.4 s, then ran well inside 0.25 s
    hung = by_id["hangs"]
    assert hung.status == "timed_out" and hung.error is not None
    assert hung.error.type == "TaskTimeout" and "no result after 0.2s" in hung.error.message
    assert hung.duration_s >= 0.2
    assert "hangs" in rec.cancelled  # its model call was cancelled


async def test_fail_fast_cancels_tasks_waiting_for_inputs() -> None:
    scripts = {
        "a": TaskScript(behaviour="raise"),
        "slow": TaskScript(behaviour="hang"),
        "b": TaskScript(),
        "c": TaskScript(),
    }
    model = TaskScriptedModel(scripts=scripts)
    settings = RunSettings(model=model, start_jitter_s=0, policy="fail_fast", max_retries=0)
    with pytest.raises(TaskFailedError) as caught:
        await arun("", settings=settings, plan=_plan(*CHAIN))
    ended = {r.task_id: r.status for r in caught.value.results}
    # One result per task: the failure; the rest ended with the run, saying why.
    assert ended == {"a": "failed", "slow": "cancelled", "b": "cancelled", "c": "cancelled"}
    for r in caught.value.results[1:]:
        assert r.error is not None and r.error.type == "RunStopped"
        assert "`a` failed under fail_fast" in r.error.message
    assert set(model.recorder.calls) == {"a", "slow"}
    assert model.recorder.cancelled == {"slow"}


async def test_runs_sharing_a_settings_object_never_see_each_others_results() -> None:
    # graph.ainvoke with one settings object shares one run scope between runs: the
    # results a waiting task reads are keyed by its window, not by task id alone.
    # Task `a`'s first call raises; every later call follows the script.
    fails_once = TaskScript(latency=0.01, errors=[RuntimeError("first call of a fails")])
    model = TaskScriptedModel(
        scripts={t: TaskScript(latency=0.01) for t, _ in CHAIN} | {"a": fails_once}
    )
    settings = RunSettings(model=model, start_jitter_s=0, max_retries=0)
    graph = compile_orchestrator(synthesize_answer=False)
    plan = _plan(*CHAIN)
    first = await graph.ainvoke({"request": "", "given_plan": plan}, context=settings)
    second = await graph.ainvoke({"request": "", "given_plan": plan}, context=settings)
    assert {r.task_id: r.status for r in first["results"]} == {
        "a": "failed",
        "slow": "ok",
        "b": "skipped",
        "c": "skipped",
    }
    assert all(r.status == "ok" for r in second["results"])
    assert first["metrics"].rounds == second["metrics"].rounds == 1


async def test_a_run_leaves_no_eager_window_open_in_its_scope() -> None:
    # Windows close as the run goes (a long run must not pile them up): when the
    # next step follows them, and when a policy stops the run.
    plan = _plan(*CHAIN)
    graph = compile_orchestrator(synthesize_answer=False)
    ok = TaskScriptedModel(scripts={t: TaskScript(latency=0.01) for t, _ in CHAIN})
    settings = RunSettings(model=ok, start_jitter_s=0)
    control = ScopedControl()
    out = await graph.ainvoke(
        {"request": "", "given_plan": plan}, context=settings, control=control
    )
    assert out["metrics"].rounds == 1
    assert control.scope is not None and control.scope._windows == {}

    failing = {t: TaskScript(latency=0.01) for t, _ in CHAIN} | {"a": TaskScript(behaviour="raise")}
    settings = RunSettings(
        model=TaskScriptedModel(scripts=failing),
        start_jitter_s=0,
        policy="fail_fast",
        max_retries=0,
    )
    control = ScopedControl()
    with pytest.raises(TaskFailedError):
        await graph.ainvoke({"request": "", "given_plan": plan}, context=settings, control=control)
    assert control.scope is not None and control.scope._windows == {}
