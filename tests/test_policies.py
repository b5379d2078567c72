"""What ends tasks early in a whole run: a task's own timeout, fail_fast, quorum:K.

Graph tests run the whole orchestrator on the task-keyed fake of `tests.fakes`. A
hung task stops at its timeout while its siblings finish; fail_fast cancels hung
siblings and raises with the finished results; a quorum stops dispatch and cancels
the rest once met, and raises as soon as it is out of reach; the CLI parses
`--policy quorum:K`. Every timing bound is `CANCEL_BOUND_S`, the bound we promise,
or a generous ceiling far below the timeout that would otherwise apply.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from fanfold.graphs import cli
from fanfold.graphs.api import arun
from fanfold.nodes.domain import Plan
from fanfold.nodes.errors import QuorumUnreachable, TaskFailedError
from tests.fakes import TaskScript, TaskScriptedModel
from tests.helpers import (
    by_id,
    checkpointed,
    plan_of,
    settings,
    statuses,
    task,
)

CANCEL_BOUND_S = 0.2
"""The bound we promise: a cancelled task ends within 0.2 s (a timeout's overshoot, and
the time from the deciding failure to fail_fast's or an unreachable quorum's error)."""


# --- a task's own timeout --------------------------------------------------------------


async def test_a_hung_task_stops_at_its_timeout_and_siblings_are_unaffected() -> None:
    timeout = 0.5
    plan = plan_of(
        task("hung", timeout_s=timeout),
        task("s1"),
        task("s2"),
        task("s3", "s1"),
    )
    model = TaskScriptedModel(
        scripts={
            "hung": TaskScript(behaviour="hang"),
            "s1": TaskScript(latency=0.05),
            "s2": TaskScript(latency=0.2),
            "s3": TaskScript(latency=0.01),
        }
    )
    events: list[dict[str, Any]] = []
    t0 = time.monotonic()
    out = await arun(
        "x", settings=settings(model, max_concurrency=4), plan=plan, on_event=events.append
    )
    wall = time.monotonic() - t0

    res = by_id(out.results)
    assert statuses(out.results) == {"hung": "timed_out", "s1": "ok", "s2": "ok", "s3": "ok"}
    hung = res["hung"]
    assert hung.error is not None and hung.error.type == "TaskTimeout"
    assert hung.started_at is not None and hung.ended_at is not None
    own = (hung.ended_at - hung.started_at).total_seconds()
    assert own == pytest.approx(hung.duration_s, abs=1e-5)
    overshoot = own - timeout
    # Independently: from the moment the subagent announced its start.
    (start_event,) = [
        e for e in events if e["fanfold"] == "task_started" and e["task_id"] == "hung"
    ]
    seen_overshoot = (hung.ended_at - datetime.fromisoformat(start_event["at"])).total_seconds()
    seen_overshoot -= timeout
    ms = f"result {overshoot * 1000:.1f} ms, seen {seen_overshoot * 1000:.1f} ms"
    print(f"\ntimeout overshoot: {ms}")
    assert 0 <= overshoot <= CANCEL_BOUND_S
    # LangGraph's clock starts when the task gets its slot, a little before `brief`
    # announces it: measured from the announcement, the overshoot can only look smaller.
    assert seen_overshoot <= CANCEL_BOUND_S
    assert "hung" in model.recorder.cancelled  # the model call itself was cancelled
    # Siblings: their own answers, one model call each, nothing cancelled.
    for tid in ("s1", "s2", "s3"):
        assert res[tid].output == f"output of {tid}:"
        assert res[tid].attempts == 1
    assert model.recorder.calls == {"hung": 1, "s1": 1, "s2": 1, "s3": 1}
    assert model.recorder.cancelled == {"hung"}
    assert out.status == "partial"
    assert out.answer == "answer: hung=timed_out, s1=ok, s2=ok, s3=ok"
    assert wall < timeout + 5.0  # nowhere near the 120 s default timeout


# --- fail_fast -------------------------------------------------------------------------


async def test_fail_fast_cancels_hung_siblings_at_once_and_keeps_finished_results() -> None:
    plan = plan_of(
        task("quick"),
        task("h1"),
        task("bad"),
        task("h2"),
        task("h3"),
        task("later", "quick"),
    )
    model = TaskScriptedModel(
        scripts={
            "quick": TaskScript(latency=0.01),
            "bad": TaskScript(latency=0.15, behaviour="raise"),
            "h1": TaskScript(behaviour="hang"),
            "h2": TaskScript(behaviour="hang"),
            "h3": TaskScript(behaviour="hang"),
            "later": TaskScript(),
        }
    )
    with pytest.raises(TaskFailedError) as caught:
        await arun("x", settings=settings(model, max_concurrency=5, policy="fail_fast"), plan=plan)
    raised_at = datetime.now(UTC)
    err = caught.value
    assert err.result.task_id == "bad" and err.result.status == "failed"
    assert err.result.ended_at is not None
    latency = (raised_at - err.result.ended_at).total_seconds()
    print(f"\nfail_fast: siblings cancelled, error raised {latency * 1000:.1f} ms after failure")
    assert 0 <= latency <= CANCEL_BOUND_S
    # The hung siblings' model calls were cancelled, not left running.
    assert model.recorder.cancelled == {"h1", "h2", "h3"}
    assert model.recorder.in_flight == 0
    # One result per task, in plan order: what finished, the failure, and the rest
    # cancelled by the stop (running or never started), each saying why.
    assert [(r.task_id, r.status) for r in err.results] == [
        ("quick", "ok"),
        ("h1", "cancelled"),
        ("bad", "failed"),
        ("h2", "cancelled"),
        ("h3", "cancelled"),
        ("later", "cancelled"),
    ]
    results = by_id(err.results)
    assert results["quick"].output == "output of quick:"
    assert results["bad"].error is not None and results["bad"].error.type == "ModelError"
    for tid in ("h1", "h2", "h3", "later"):
        r = results[tid]
        assert r.error is not None and r.error.type == "RunStopped"
        assert "`bad` failed under fail_fast" in r.error.message
    assert "later" not in model.recorder.calls


# --- quorum:K --------------------------------------------------------------------------


QUORUM_IDS = ["a", "b", "h1", "h2", "p1", "p2", "p3", "p4"]


def quorum_case(b_latency: float) -> tuple[Plan, TaskScriptedModel]:
    """Eight quick tasks, of which `b` takes `b_latency` and h1, h2 hang."""
    scripts = {t: TaskScript(latency=0.01) for t in QUORUM_IDS}
    scripts["b"] = TaskScript(latency=b_latency)
    scripts["h1"] = TaskScript(behaviour="hang")
    scripts["h2"] = TaskScript(behaviour="hang")
    return plan_of(*(task(t) for t in QUORUM_IDS)), TaskScriptedModel(scripts=scripts)


async def test_quorum_stops_dispatch_and_cancels_the_rest() -> None:
    ids = QUORUM_IDS
    plan, model = quorum_case(b_latency=0.05)
    t0 = time.monotonic()
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=4, policy="quorum:2"),
        plan=plan,
        graph=checkpointed(),
    )
    wall = time.monotonic() - t0

    assert out.status == "ok"
    assert [r.task_id for r in out.results] == ids
    assert statuses(out.results) == {
        "a": "ok",
        "b": "ok",
        "h1": "cancelled",
        "h2": "cancelled",
        "p1": "cancelled",
        "p2": "cancelled",
        "p3": "cancelled",
        "p4": "cancelled",
    }
    # The running hung tasks ended at once, their model calls cancelled.
    assert model.recorder.cancelled == {"h1", "h2"}
    assert wall < 10.0  # the hung tasks' own timeout is 120 s
    # One stop, one cause: running or never started, every cancelled task says the same.
    quorum = ("QuorumReached", "quorum of 2 ok tasks reached")
    for r in out.results:
        if r.status == "cancelled":
            assert r.error is not None and (r.error.type, r.error.message) == quorum
    # No more dispatch: the second window never reached the model.
    assert set(model.recorder.calls) == {"a", "b", "h1", "h2"}
    for tid in ("p1", "p2", "p3", "p4"):
        r = by_id(out.results)[tid]
        assert r.attempts == 0 and r.error is not None
        assert (r.error.type, r.error.message) == ("QuorumReached", "quorum of 2 ok tasks reached")
    assert out.metrics.counts["ok"] == 2 and out.metrics.counts["cancelled"] == 6
    assert out.metrics.stop_reason == "quorum of 2 ok tasks reached"
    # The synthesizer still wrote the answer of a run that met its quorum.
    assert out.answer.startswith("answer: a=ok, b=ok, h1=cancelled")


async def test_quorum_in_a_wide_window_starts_tasks_as_slots_free_then_stops() -> None:
    # No checkpointer: every task is in one window and LangGraph starts each the
    # moment a slot frees. p1 takes a's slot and ends ok long before b does.
    plan, model = quorum_case(b_latency=2.0)
    out = await arun("x", settings=settings(model, max_concurrency=4, policy="quorum:2"), plan=plan)

    assert out.status == "ok"
    assert out.metrics.rounds == 1
    assert statuses(out.results) == {
        "a": "ok",
        "p1": "ok",
        **{t: "cancelled" for t in ("b", "h1", "h2", "p2", "p3", "p4")},
    }
    # Running when the quorum was met: their calls were cancelled, and they say why
    # exactly as the tasks that never started do.
    assert model.recorder.cancelled == {"b", "h1", "h2"}
    for tid in ("b", "h1", "h2"):
        r = by_id(out.results)[tid]
        assert r.error is not None
        assert (r.error.type, r.error.message) == ("QuorumReached", "quorum of 2 ok tasks reached")
    # Started after it (they waited for a slot): no model call, no attempt.
    assert set(model.recorder.calls) == {"a", "b", "h1", "h2", "p1"}
    for tid in ("p2", "p3", "p4"):
        r = by_id(out.results)[tid]
        assert r.attempts == 0 and r.error is not None
        assert (r.error.type, r.error.message) == ("QuorumReached", "quorum of 2 ok tasks reached")
    assert out.metrics.peak_concurrency <= 4


async def test_quorum_unreachable_raises_as_soon_as_it_is() -> None:
    plan = plan_of(task("ok1"), task("f1"), task("f2"), task("f3"), task("h1"), task("h2"))
    model = TaskScriptedModel(
        scripts={
            "ok1": TaskScript(latency=0.01),
            "f1": TaskScript(latency=0.05, behaviour="raise"),
            "f2": TaskScript(latency=0.1, behaviour="raise"),
            "f3": TaskScript(latency=0.2, behaviour="raise"),
            "h1": TaskScript(behaviour="hang"),
            "h2": TaskScript(behaviour="hang"),
        }
    )
    # K=4 of 6: after f1 and f2 failed, 4 can still succeed; after f3, only 3.
    with pytest.raises(QuorumUnreachable, match="quorum of 4 is out of reach") as caught:
        await arun("x", settings=settings(model, max_concurrency=6, policy="quorum:4"), plan=plan)
    raised_at = datetime.now(UTC)
    err = caught.value
    assert [(r.task_id, r.status) for r in err.results] == [
        ("ok1", "ok"),
        ("f1", "failed"),
        ("f2", "failed"),
        ("f3", "failed"),
        ("h1", "cancelled"),
        ("h2", "cancelled"),
    ]
    for r in err.results[4:]:
        assert r.error is not None and r.error.type == "RunStopped"
        assert "quorum of 4 is out of reach" in r.error.message
    f3 = by_id(err.results)["f3"]
    assert f3.ended_at is not None
    latency = (raised_at - f3.ended_at).total_seconds()
    print(f"\nquorum unreachable raised {latency * 1000:.1f} ms after the deciding failure")
    assert 0 <= latency <= CANCEL_BOUND_S
    assert model.recorder.cancelled == {"h1", "h2"}


def test_cli_parses_quorum_and_rejects_a_bad_one(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["run", "alpha, beta", "--model", "demo:latency=0.01", "--policy", "quorum:2", "--json"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["status"] == "ok"
    assert {r["task_id"]: r["status"] for r in doc["results"]} == {
        "t1": "ok",
        "t2": "ok",
        "compare": "cancelled",
        "report": "cancelled",
    }
    assert cli.main(["run", "x", "--policy", "quorum:0"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "fanfold: --policy must be one of settle, fail_fast or quorum:K (K >= 1), got 'quorum:0'\n"
    )
