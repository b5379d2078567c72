"""Resume never reports an unfinished run as done, wherever a crash left the thread.

A crash leaves a thread at one of its checkpoints with some of the next step's task
writes saved (LangGraph saves each task's write as the task finishes, and the step's
checkpoint after). These tests rebuild every such state of a real 3-generation run:
for each checkpoint of its history, a new thread holds that checkpoint and its
ancestors with all, half or none of the checkpoint's pending writes, as if the
process had died right then. Each is resumed, on SQLite and on PostgreSQL, and must
end with the uninterrupted run's answer and results, running again only the tasks
whose results were not saved.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

from fanfold import RunSettings, aresume, arun
from fanfold.graphs.api import has_work_left
from fanfold.graphs.checkpoint import open_checkpointer
from fanfold.graphs.orchestrator import compile_orchestrator

REQUEST = "alpha, beta, gamma"
"""The demo plans t1..t3 in parallel, then `compare`, then `report`: 3 generations."""
TASKS = ["t1", "t2", "t3", "compare", "report"]


def _config(thread_id: str, checkpoint_id: str | None = None) -> Any:
    conf = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


async def _history(saver: BaseCheckpointSaver[Any], thread_id: str) -> list[CheckpointTuple]:
    """Return the thread's top-level checkpoints, oldest first."""
    return [t async for t in saver.alist(_config(thread_id))][::-1]


async def _copy_until(
    saver: BaseCheckpointSaver[Any],
    history: list[CheckpointTuple],
    stop: int,
    keep: str,
) -> tuple[str, set[str]]:
    """Copy checkpoints 0..stop to a new thread, as a crash right after checkpoint `stop`.

    The ancestors keep all their writes (LangGraph rebuilds delta channels from
    them); checkpoint `stop` keeps `all`, `half` or `none` of its pending writes.
    Returns the new thread and the tasks whose results those kept writes hold
    (`synthesizer` for the answer).
    """
    kept: set[str] = set()
    thread_id = f"rollback-{uuid.uuid4().hex[:10]}"
    parent_versions: dict[str, Any] = {}
    parent_id: str | None = None
    for i, tup in enumerate(history[: stop + 1]):
        checkpoint = tup.checkpoint
        versions = checkpoint["channel_versions"]
        new_versions = {k: v for k, v in versions.items() if parent_versions.get(k) != v}
        await saver.aput(_config(thread_id, parent_id), checkpoint, tup.metadata, new_versions)
        by_task: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for task_id, channel, value in tup.pending_writes or []:
            by_task[task_id].append((channel, value))
        tasks = sorted(by_task)
        if i == stop and keep != "all":
            tasks = tasks[: len(tasks) // 2] if keep == "half" else []
        for task_id in tasks:
            await saver.aput_writes(_config(thread_id, checkpoint["id"]), by_task[task_id], task_id)
            if i == stop:
                for channel, value in by_task[task_id]:
                    if channel == "results" and isinstance(value, list):
                        kept |= {r.task_id for r in value}
                    elif channel == "answer" and value:  # the planner writes ""
                        kept.add("synthesizer")
        parent_versions, parent_id = dict(versions), checkpoint["id"]
    return thread_id, kept


def _calls(log: Path, since: int = 0) -> Counter[str]:
    """Count the model calls per task in the demo model's log, from line `since` on."""
    if not log.exists():
        return Counter()
    lines = log.read_text().splitlines()[since:]
    return Counter(json.loads(line)["who"] for line in lines)


def _lines(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


async def _rollbacks(location: str, tmp: Path) -> int:
    """Resume every rolled-back state of one run; return how many were checked."""
    # One log for every run: a saved `Send` carries the model spec it was sent with.
    log = tmp / "calls.jsonl"
    settings = RunSettings(model=f"demo:latency=0,log={log}", start_jitter_s=0, max_concurrency=2)
    async with open_checkpointer(location) as saver:
        graph = compile_orchestrator(checkpointer=saver)
        source = f"source-{uuid.uuid4().hex[:8]}"
        reference = await arun(REQUEST, settings=settings, graph=graph, config=_config(source))
        assert reference.status == "ok"
        assert [r.task_id for r in reference.results] == TASKS
        history = await _history(saver, source)
        # planner, approve, windows of 2 then 1 subagents, compare, report, synthesize:
        # a checkpoint before and after each step.
        assert len(history) >= 10
        checked = 0
        for stop in range(len(history) - 1):  # the last one is the finished run
            for keep in ("all", "half", "none"):
                if keep != "none" and not history[stop].pending_writes:
                    continue
                thread_id, kept = await _copy_until(saver, history, stop, keep)
                state = await graph.aget_state(_config(thread_id))
                assert has_work_left(state), (stop, keep)
                saved = kept | {r.task_id for r in state.values.get("results", [])}
                before = _lines(log)
                out = await aresume(thread_id, graph=graph)
                where = f"rolled back to checkpoint {stop} ({keep} of its writes)"
                assert out.status == "ok", where
                assert out.answer == reference.answer, where
                assert [(r.task_id, r.status, r.output) for r in out.results] == [
                    (r.task_id, r.status, r.output) for r in reference.results
                ], where
                calls = _calls(log, before)
                assert not saved & set(calls), f"{where}: saved tasks ran again: {calls}"
                assert calls["synthesizer"] == int("synthesizer" not in saved), where
                assert set(TASKS) - saved <= set(calls), where
                # Resuming the finished thread changes nothing and calls no model.
                before = _lines(log)
                again = await aresume(thread_id, graph=graph)
                assert again.answer == out.answer and _lines(log) == before, where
                checked += 1
        return checked


@pytest.mark.timeout(240)
async def test_every_rollback_resumes_to_the_same_answer_on_sqlite(tmp_path: Path) -> None:
    assert await _rollbacks(str(tmp_path / "run.sqlite"), tmp_path) >= 15


@pytest.mark.timeout(240)
async def test_every_rollback_resumes_to_the_same_answer_on_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    assert await _rollbacks(postgres_url, tmp_path) >= 15
