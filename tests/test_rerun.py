"""Rerun: only the tasks that did not end ok run again; every ok result is kept.

Real checkpointers (SQLite, PostgreSQL), real runs. The fake model counts its calls
per task, so "not called again" is counted, not assumed; the CLI runs in a
subprocess on the demo model, whose `fail=` option makes chosen tasks fail.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fanfold import NothingToRerun, RunSettings, TaskFailedError, ThreadBusy, arerun, arun
from fanfold.graphs.checkpoint import open_checkpointer
from fanfold.graphs.cli import EXIT_BAD_INPUT
from fanfold.graphs.lease import thread_lease
from fanfold.graphs.orchestrator import compile_orchestrator
from fanfold.nodes.domain import Plan, SubagentResult
from fanfold.nodes.rerun import rerun_selection
from fanfold.testing import TaskScript, TaskScriptedModel
from tests.helpers import by_id, plan_of, settings, statuses, task
from tests.test_cli import fanfold

ROOT = Path(__file__).resolve().parent.parent
IDS = [f"t{i}" for i in range(1, 21)]
FAILING = {"t4", "t13"}


def _config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


def _model(failing: set[str] = frozenset(), **scripts: TaskScript) -> TaskScriptedModel:
    base = {t: TaskScript(latency=0.01, behaviour="raise" if t in failing else "ok") for t in IDS}
    return TaskScriptedModel(scripts={**base, **scripts})


async def test_a_rerun_runs_only_the_failed_tasks_and_keeps_the_rest(
    checkpoint_location: str,
) -> None:
    plan = plan_of(*(task(t) for t in IDS))
    thread = f"rerun-{uuid.uuid4().hex[:8]}"
    async with open_checkpointer(checkpoint_location) as saver:
        graph = compile_orchestrator(checkpointer=saver)
        first = await arun(
            "x",
            settings=settings(_model(FAILING), max_concurrency=4),
            plan=plan,
            graph=graph,
            config=_config(thread),
        )
        assert first.status == "partial"
        assert {t for t, s in statuses(first.results).items() if s != "ok"} == FAILING

        fixed = _model()
        out = await arerun(thread, graph=graph, settings=settings(fixed, max_concurrency=4))
        assert out.status == "ok" and out.error is None
        assert [r.task_id for r in out.results] == IDS
        assert all(r.status == "ok" for r in out.results)
        # Only the two failed tasks called the model again; the 18 ok results are the
        # first run's own objects' values, unchanged.
        assert set(fixed.recorder.calls) == FAILING
        before = by_id(first.results)
        for r in out.results:
            if r.task_id not in FAILING:
                assert r == before[r.task_id]
        assert len(fixed.recorder.synthesizer_calls) == 1
        assert out.answer and out.answer != first.answer
        assert out.metrics.counts["ok"] == 20

        # The history keeps both attempts: the first run's failures are still in it.
        attempts = [
            statuses(state.values.get("results", []))
            async for state in graph.aget_state_history(_config(thread))
            if len(state.values.get("results", [])) == len(IDS)
        ]
        assert any(s["t4"] == "failed" for s in attempts)
        assert any(s["t4"] == "ok" for s in attempts)

        # A rerun of a run with nothing left to rerun changes nothing.
        again = await arerun(thread, graph=graph, settings=settings(_model(), max_concurrency=4))
        assert again.answer == out.answer


async def test_rerun_only_some_statuses_and_the_dependents_of_what_runs_again(
    tmp_path: Path,
) -> None:
    # `slow` times out, `bad` fails; `after_slow` is skipped because of `slow`.
    plan = plan_of(
        task("ok1"),
        task("slow", timeout_s=0.3),
        task("bad"),
        task("after_slow", "slow"),
        task("after_bad", "bad"),
    )
    scripts = {
        "ok1": TaskScript(latency=0.01),
        "slow": TaskScript(behaviour="hang"),
        "bad": TaskScript(behaviour="raise"),
        "after_slow": TaskScript(latency=0.01),
        "after_bad": TaskScript(latency=0.01),
    }
    async with open_checkpointer(tmp_path / "run.sqlite") as saver:
        graph = compile_orchestrator(checkpointer=saver)
        first = await arun(
            "x",
            settings=settings(TaskScriptedModel(scripts=scripts)),
            plan=plan,
            graph=graph,
            config=_config("some"),
        )
        assert statuses(first.results) == {
            "ok1": "ok",
            "slow": "timed_out",
            "bad": "failed",
            "after_slow": "skipped",
            "after_bad": "skipped",
        }
        fixed = TaskScriptedModel(scripts={**scripts, "slow": TaskScript(latency=0.01)})
        out = await arerun("some", graph=graph, only=["timed_out"], settings=settings(fixed))
        assert set(fixed.recorder.calls) == {"slow", "after_slow"}
        assert statuses(out.results) == {
            "ok1": "ok",
            "slow": "ok",
            "bad": "failed",
            "after_slow": "ok",
            "after_bad": "skipped",
        }
        assert out.status == "partial"
        with pytest.raises(ValueError, match="`only` takes statuses among"):
            await arerun("some", graph=graph, only=["ok"])
        with pytest.raises(KeyError, match="no checkpointed run"):
            await arerun("nobody", graph=graph)
        async with thread_lease(saver, "some"):
            with pytest.raises(ThreadBusy):
                await arerun("some", graph=graph, settings=settings(fixed))


async def test_a_run_stopped_by_fail_fast_reruns_its_failure_and_what_the_stop_ended(
    tmp_path: Path,
) -> None:
    plan = plan_of(*(task(t) for t in IDS[:6]))
    scripts = {t: TaskScript(latency=0.01) for t in IDS[:6]}
    scripts["t3"] = TaskScript(latency=0.05, behaviour="raise")
    async with open_checkpointer(tmp_path / "run.sqlite") as saver:
        graph = compile_orchestrator(checkpointer=saver)
        with pytest.raises(TaskFailedError) as stopped:
            await arun(
                "x",
                settings=settings(
                    TaskScriptedModel(scripts=scripts), policy="fail_fast", max_concurrency=2
                ),
                plan=plan,
                graph=graph,
                config=_config("ff"),
            )
        ended_ok = {r.task_id for r in stopped.value.results if r.status == "ok"}
        assert "t3" not in ended_ok
        fixed = TaskScriptedModel(scripts={t: TaskScript(latency=0.01) for t in IDS[:6]})
        # `failed` only: the task that failed; the tasks the stop ended stay cancelled.
        out = await arerun(
            "ff", graph=graph, only=["failed"], settings=settings(fixed, max_concurrency=2)
        )
        assert set(fixed.recorder.calls) == {"t3"}
        assert {t for t, s in statuses(out.results).items() if s == "ok"} == ended_ok | {"t3"}
        assert all(s in ("ok", "cancelled") for s in statuses(out.results).values())
        # Then the rest: every task ends ok, and none that was ok ran again.
        rest = TaskScriptedModel(scripts={t: TaskScript(latency=0.01) for t in IDS[:6]})
        out = await arerun("ff", graph=graph, settings=settings(rest, max_concurrency=2))
        assert all(r.status == "ok" for r in out.results)
        assert set(rest.recorder.calls) == set(IDS[:6]) - ended_ok - {"t3"}


def test_rerun_selection_keeps_ok_results_and_reruns_dependents() -> None:
    plan = Plan(
        tasks=[task("c", "b"), task("a"), task("b", "a"), task("d")],  # listed out of order
        rationale="t",
    )
    results = {
        "a": SubagentResult(task_id="a", status="failed", attempts=1),
        "b": SubagentResult(task_id="b", status="skipped", attempts=0),
        "c": SubagentResult(task_id="c", status="skipped", attempts=0),
        "d": SubagentResult(task_id="d", status="ok", attempts=1),
    }
    kept, again = rerun_selection(plan, results, ["failed"])
    assert again == ["c", "a", "b"] and [r.task_id for r in kept] == ["d"]
    kept, again = rerun_selection(plan, {"d": results["d"]}, ["cancelled"])
    assert again == ["c", "a", "b"]  # no result: cancelled
    kept, again = rerun_selection(plan, {"d": results["d"]}, ["failed"])
    # Nothing failed: the tasks without a result stay so, as `cancelled`.
    assert again == [] and [r.status for r in kept] == ["cancelled"] * 3 + ["ok"]


# --- the command line ---------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return fanfold(*args, timeout=120)


def test_fanfold_rerun_runs_the_failed_tasks_again_with_a_fixed_model(
    checkpoint_location: str, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    thread = f"cli-{uuid.uuid4().hex[:8]}"
    where = ["--checkpoint", checkpoint_location]
    request = "alpha, beta, gamma, delta"
    first = _cli(
        "run", request, "--model", f"demo:latency=0,fail=t2+t4,log={log}",
        *where, "--thread-id", thread, "--json",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["status"] == "partial"
    assert {r["task_id"]: r["status"] for r in doc["results"]} == {
        "t1": "ok", "t2": "failed", "t3": "ok", "t4": "failed",
        "compare": "skipped", "report": "skipped",
    }  # fmt: skip
    lines = len(log.read_text().splitlines())

    rerun = _cli(
        "rerun", thread, *where, "--model", f"demo:latency=0,log={log}", "--json",
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    out = json.loads(rerun.stdout)
    assert out["status"] == "ok" and all(r["status"] == "ok" for r in out["results"])
    again = Counter(json.loads(x)["who"] for x in log.read_text().splitlines()[lines:])
    assert set(again) == {"t2", "t4", "compare", "report", "synthesizer"}
    assert again["planner"] == 0
    kept = {r["task_id"]: r for r in doc["results"] if r["status"] == "ok"}
    assert all(r == kept[r["task_id"]] for r in out["results"] if r["task_id"] in kept)

    bad = _cli("rerun", thread, *where, "--only", "ok,failed", "--json")
    assert bad.returncode == EXIT_BAD_INPUT
    assert "--only takes statuses among failed, timed_out, cancelled, skipped" in bad.stderr
    missing = _cli("rerun", "no-such-thread", *where, "--json")
    assert missing.returncode == EXIT_BAD_INPUT and "no run with thread id" in missing.stderr


async def test_a_run_waiting_on_plan_approval_has_nothing_to_rerun(tmp_path: Path) -> None:
    location = str(tmp_path / "run.sqlite")
    approve = RunSettings(model="demo:latency=0", approve_plan=True)
    async with open_checkpointer(location) as saver:
        graph = compile_orchestrator(checkpointer=saver)
        paused = await graph.ainvoke(
            {"request": "alpha, beta", "settings": approve.to_json()},
            _config("waiting"),
            context=approve,
        )
        assert "__interrupt__" in paused
        with pytest.raises(NothingToRerun, match="it waits on plan approval: resume it"):
            await arerun("waiting", graph=graph)
    out = _cli("rerun", "waiting", "--checkpoint", location, "--json")
    assert out.returncode == EXIT_BAD_INPUT
    assert "it waits on plan approval: resume it" in out.stderr
