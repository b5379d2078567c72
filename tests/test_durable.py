"""Durable runs: a killed or cancelled run resumes, and only unfinished subagents run again.

"Finished" is what the checkpoint holds after the interruption: the results in
the saved state plus the pending writes of the interrupted superstep (each
`StateSnapshot.tasks[i].result`), never what the process printed. The demo model
appends one JSON line per model call (`{"who", "pid", "t"}`), so calls are
counted per task and per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fanfold import RunSettings, aresume, arun
from fanfold.graphs.api import has_work_left
from fanfold.graphs.checkpoint import open_checkpointer
from fanfold.graphs.orchestrator import Orchestrator, compile_orchestrator

ROOT = Path(__file__).resolve().parent.parent

PARTS = 30
REQUEST = ", ".join(f"topic number {i}" for i in range(1, PARTS + 1))
PARALLEL_IDS = [f"t{i}" for i in range(1, PARTS + 1)]
ALL_IDS = [*PARALLEL_IDS, "compare", "report"]
CALLS = {**dict.fromkeys(PARALLEL_IDS, 2), "compare": 2, "report": 1}
"""Model calls per task in one uninterrupted run: a demo researcher or analyst calls a
tool, then answers; the writer has no tools. Checked against a real run below."""
CONCURRENCY = 8
KILL_AFTER = 12
"""Kill once this many subagents logged their last call: the first window of 8 is
saved by then, and the second window is finishing."""


# --- helpers ---------------------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fanfold", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}


def _calls(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    # The last line may be half written while a process runs.
    lines = log.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def _count(calls: list[dict[str, Any]], pid: int | None = None) -> Counter[str]:
    return Counter(c["who"] for c in calls if pid is None or c["pid"] == pid)


def _done_tasks(counts: Counter[str]) -> list[str]:
    return [t for t in PARALLEL_IDS if counts[t] >= CALLS[t]]


async def _saved(graph: Orchestrator, thread_id: str) -> tuple[set[str], bool]:
    """Return the task ids whose result the checkpoint holds, and whether work is left."""
    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    finished = {r.task_id for r in snapshot.values.get("results", [])}
    for task in snapshot.tasks:  # pending writes of the interrupted step
        if task.name == "subagent" and isinstance(task.result, dict):
            finished |= {r.task_id for r in task.result.get("results", [])}
    return finished, has_work_left(snapshot)


async def _saved_at(location: str, thread_id: str) -> tuple[set[str], bool]:
    async with open_checkpointer(location) as saver:
        return await _saved(compile_orchestrator(checkpointer=saver), thread_id)


def _outputs(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(r["task_id"], r["status"], r["output"]) for r in doc["results"]]


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)  # reaps it and closes its pipes


def _crash_and_resume(location: str, tmp: Path) -> dict[str, int]:
    """Kill a checkpointed 30-subagent run with SIGKILL, resume it, check the outcome.

    Returns the numbers seen: tasks saved at the kill, tasks that had logged their last
    call but were not saved, and tasks run again by the resume.
    """
    log = tmp / "calls.jsonl"
    thread_id = f"crash-{uuid.uuid4().hex[:8]}"
    common = ["--max-concurrency", str(CONCURRENCY), "--json"]
    # The uninterrupted run of the same request, at the same time (no checkpoint).
    reference = subprocess.Popen(
        _cli("run", REQUEST, "--model", "demo:latency=0.5", *common),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    crashed_err = (tmp / "crashed.err").open("w", encoding="utf-8")
    crashed = subprocess.Popen(
        _cli(
            "run",
            REQUEST,
            "--model",
            f"demo:latency=0.5,log={log}",
            "--checkpoint",
            location,
            "--thread-id",
            thread_id,
            *common,
        ),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=crashed_err,
        start_new_session=True,
    )
    crashed_err.close()  # the child has its own copy
    try:
        deadline = time.monotonic() + 90
        while len(_done_tasks(_count(_calls(log)))) < KILL_AFTER:
            assert crashed.poll() is None, (tmp / "crashed.err").read_text()
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.01)
        os.killpg(crashed.pid, signal.SIGKILL)
        assert crashed.wait(timeout=10) == -signal.SIGKILL
        at_kill = _count(_calls(log), crashed.pid)
        # Killed mid-run: the comparison (which needs all 30) never started.
        assert at_kill["compare"] == 0 and at_kill["planner"] == 1

        finished, work_left = asyncio.run(_saved_at(location, thread_id))
        unfinished = set(ALL_IDS) - finished
        assert work_left
        # The first window of 8 was saved before the kill; the run was not done.
        assert len(finished) >= CONCURRENCY and finished < set(PARALLEL_IDS)

        resumed = subprocess.run(
            _cli("resume", thread_id, "--checkpoint", location, "--json"),
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert resumed.returncode == 0, resumed.stderr
        doc = json.loads(resumed.stdout)
        assert doc["status"] == "ok" and doc["error"] is None
        assert [r["task_id"] for r in doc["results"]] == ALL_IDS
        assert all(r["status"] == "ok" for r in doc["results"])

        calls = _calls(log)
        pids = {c["pid"] for c in calls} - {crashed.pid}
        assert len(pids) == 1, pids
        again = _count(calls, pids.pop())
        assert again["planner"] == 0, "the resume planned again"
        rerun_finished = {t: again[t] for t in finished if again[t]}
        assert not rerun_finished, f"finished tasks ran again: {rerun_finished}"
        # Every unfinished task ran exactly once more, from its first step.
        assert {t: again[t] for t in unfinished} == {t: CALLS[t] for t in unfinished}
        assert again["synthesizer"] == 1
        assert set(again) == unfinished | {"synthesizer"}

        ref_out, ref_err = reference.communicate(timeout=90)
        assert reference.returncode == 0, ref_err
        ref = json.loads(ref_out)
        assert doc["answer"] == ref["answer"]
        assert doc["answer"].startswith("[demo model] Answer to: topic number 1")
        assert _outputs(doc) == _outputs(ref)
        return {
            "saved_at_kill": len(finished),
            "done_but_unsaved": len(set(_done_tasks(at_kill)) - finished),
            "run_again": len(unfinished),
        }
    finally:
        _kill_group(crashed)
        _kill_group(reference)


# --- crash and resume through the CLI ----------------------------------------------------


def test_demo_call_counts_per_task(tmp_path: Path) -> None:
    """The counts the crash tests rely on, from one short real run."""
    log = tmp_path / "calls.jsonl"
    request = "topic number 1, topic number 2, topic number 3"
    out = asyncio.run(
        arun(request, settings=RunSettings(model=f"demo:latency=0,log={log}", start_jitter_s=0))
    )
    assert out.status == "ok"
    counts = _count(_calls(log))
    assert counts == Counter(
        {"planner": 1, "t1": 2, "t2": 2, "t3": 2, "compare": 2, "report": 1, "synthesizer": 1}
    )
    assert {c["pid"] for c in _calls(log)} == {os.getpid()}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkilled_run_resumes_from_sqlite_and_reruns_only_unfinished_tasks(
    tmp_path: Path,
) -> None:
    seen = _crash_and_resume(str(tmp_path / "run.sqlite"), tmp_path)
    assert seen["saved_at_kill"] + seen["run_again"] == len(ALL_IDS)


# --- the same through Python -------------------------------------------------------------


PY_PARTS = 20
PY_REQUEST = ", ".join(f"subject {i}" for i in range(1, PY_PARTS + 1))
PY_IDS = [f"t{i}" for i in range(1, PY_PARTS + 1)]
PY_CALLS = {**dict.fromkeys(PY_IDS, 2), "compare": 2, "report": 1}


async def _reference(request: str) -> Any:
    out = await arun(request, settings=RunSettings(model="demo:latency=0", start_jitter_s=0))
    assert out.status == "ok"
    return out


async def _cancel_when(task: asyncio.Task[Any], ready: Any) -> None:
    """Poll `ready()` until true (60 s at most), then cancel the run and wait for it."""
    async with asyncio.timeout(60):
        while not await ready():
            assert not task.done(), "the run ended before it could be interrupted"
            await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.slow
async def test_cancelled_run_resumes_in_python_with_task_granularity(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    config: Any = {"configurable": {"thread_id": "py-task"}}
    reference = await _reference(PY_REQUEST)
    async with open_checkpointer(tmp_path / "run.sqlite") as saver:
        graph = compile_orchestrator(checkpointer=saver)
        settings = RunSettings(model=f"demo:latency=0.3,log={log}", max_concurrency=CONCURRENCY)
        run = asyncio.create_task(arun(PY_REQUEST, settings=settings, graph=graph, config=config))

        async def some_saved_some_running() -> bool:
            finished, _ = await _saved(graph, "py-task")
            running = [t for t, n in _count(_calls(log)).items() if t in PY_IDS and n == 1]
            return len(finished) >= CONCURRENCY and bool(running)

        await _cancel_when(run, some_saved_some_running)
        finished, work_left = await _saved(graph, "py-task")
        assert CONCURRENCY <= len(finished) < PY_PARTS and work_left
        before = len(_calls(log))

        out = await aresume("py-task", graph=graph)
        assert out.status == "ok"
        assert [r.task_id for r in out.results] == [*PY_IDS, "compare", "report"]
        again = _count(_calls(log)[before:])
        assert again["planner"] == 0
        assert not {t for t in finished if again[t]}, "a finished task ran again"
        unfinished = set(PY_CALLS) - finished
        assert {t: again[t] for t in unfinished} == {t: PY_CALLS[t] for t in unfinished}
        assert out.answer == reference.answer
        assert [(r.task_id, r.output) for r in out.results] == [
            (r.task_id, r.output) for r in reference.results
        ]
        # Resuming a finished run returns its output without a model call.
        before = len(_calls(log))
        again_out = await aresume("py-task", graph=graph)
        assert again_out.answer == out.answer and len(_calls(log)) == before


async def _mid_conversation(graph: Orchestrator, thread_id: str) -> dict[str, int]:
    """Return task id -> model calls saved, for subagents checkpointed mid-conversation."""
    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}}, subgraphs=True)
    out: dict[str, int] = {}
    for task in snapshot.tasks:
        sub = task.state
        if task.result is None and sub is not None and not isinstance(sub, dict):
            steps = sub.values.get("steps") or 0
            if steps:
                out[sub.values["task"].id] = steps
    return out


@pytest.mark.slow
async def test_step_granularity_resumes_a_subagent_mid_conversation(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    config: Any = {"configurable": {"thread_id": "py-step"}}
    reference = await _reference(PY_REQUEST)
    async with open_checkpointer(tmp_path / "run.sqlite") as saver:
        graph = compile_orchestrator(checkpointer=saver, checkpoint_granularity="step")
        settings = RunSettings(model=f"demo:latency=0.4,log={log}", max_concurrency=CONCURRENCY)
        run = asyncio.create_task(arun(PY_REQUEST, settings=settings, graph=graph, config=config))

        async def subagents_between_their_two_calls() -> bool:
            finished, _ = await _saved(graph, "py-step")
            mid = await _mid_conversation(graph, "py-step")
            return len(finished) >= CONCURRENCY and len(mid) >= 4

        # Cancelled while those subagents wait for their second (answering) call.
        await _cancel_when(run, subagents_between_their_two_calls)
        mid = await _mid_conversation(graph, "py-step")
        finished, _ = await _saved(graph, "py-step")
        # Their tool-call step (one model call, then the tool) is in the checkpoint.
        assert 1 in mid.values(), mid
        assert not set(mid) & finished
        before = len(_calls(log))

        out = await aresume("py-step", graph=graph)
        assert out.status == "ok"
        again = _count(_calls(log)[before:])
        assert again["planner"] == 0
        assert not {t for t in finished if again[t]}, "a finished task ran again"
        # The saved steps are not repeated: one saved call, one call left (the answer).
        assert {t: again[t] for t in mid} == {t: PY_CALLS[t] - n for t, n in mid.items()}
        fresh = set(PY_CALLS) - finished - set(mid)
        assert {t: again[t] for t in fresh} == {t: PY_CALLS[t] for t in fresh}
        by_id = {r.task_id: r for r in out.results}
        ref = {r.task_id: r for r in reference.results}
        for t in mid:
            # Its restored conversation is whole: same answer, tool calls and tokens.
            assert by_id[t].output == ref[t].output
            assert by_id[t].tool_calls == 1
            assert by_id[t].usage == ref[t].usage
        assert out.answer == reference.answer


# --- PostgreSQL (the server: tests/postgres.py) ----------------------------------------


async def test_postgres_checkpointer_round_trips_a_run(postgres_url: str) -> None:
    thread_id = f"pg-{uuid.uuid4().hex[:8]}"
    async with open_checkpointer(postgres_url) as saver:
        graph = compile_orchestrator(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": thread_id}}
        settings = RunSettings(model="demo:latency=0", start_jitter_s=0)
        out = await arun("alpha, beta", settings=settings, graph=graph, config=config)
        assert out.status == "ok"
        finished, work_left = await _saved(graph, thread_id)
        assert finished == {"t1", "t2", "compare", "report"} and not work_left
        again = await aresume(thread_id, graph=graph)
        assert again.answer == out.answer and again.results == out.results


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkilled_run_resumes_from_postgres_and_reruns_only_unfinished_tasks(
    postgres_url: str, tmp_path: Path
) -> None:
    seen = _crash_and_resume(postgres_url, tmp_path)
    assert seen["saved_at_kill"] + seen["run_again"] == len(ALL_IDS)
