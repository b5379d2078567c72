"""One run per thread: a run, resume or rerun holds its thread's lease; a second fails at once.

Real processes on SQLite (an `flock` beside the database) and PostgreSQL (an advisory
lock): a live run keeps a resume out; after the run is SIGKILLed its lease is gone;
two resumes started together run the remaining tasks once, in one process. The
demo model logs every call with its pid, so who ran what is counted, not guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fanfold import RunSettings, ThreadBusy, aresume, arun
from fanfold.graphs.checkpoint import open_checkpointer
from fanfold.graphs.cli import EXIT_BUSY
from fanfold.graphs.lease import lease_file, thread_lease
from fanfold.graphs.orchestrator import compile_orchestrator
from tests.test_durable import _calls, _cli, _env, _kill_group, _saved_at

ROOT = Path(__file__).resolve().parent.parent
REQUEST = ", ".join(f"item {i}" for i in range(1, 13))
"""12 parallel tasks, then `compare` and `report`."""
TASKS = {*(f"t{i}" for i in range(1, 13)), "compare", "report"}


def _popen(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _cli(*args),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def _one_process_runs_the_thread(location: str, tmp: Path) -> None:
    log = tmp / "calls.jsonl"
    thread = f"lease-{uuid.uuid4().hex[:8]}"
    where = ["--checkpoint", location]
    first = _popen(
        "run", REQUEST, "--model", f"demo:latency=0.8,log={log}", "--max-concurrency", "2",
        *where, "--thread-id", thread, "--json",
    )  # fmt: skip
    procs = [first]
    try:
        deadline = time.monotonic() + 60
        while sum(1 for c in _calls(log) if c["who"] in TASKS) < 6:
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.02)

        # While it runs, a resume of its thread fails at once, calling no model.
        busy = subprocess.run(
            _cli("resume", thread, *where, "--json"),
            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert busy.returncode == EXIT_BUSY, busy.stderr
        doc = json.loads(busy.stdout)
        assert doc["error"]["type"] == "ThreadBusy"
        assert f"thread `{thread}` is being run by" in doc["error"]["message"]
        if not location.startswith("postgres"):
            assert f"process {first.pid} " in doc["error"]["message"]
        assert "wait for that run to end" in busy.stderr

        # Killed, the run lets go of its lease; two resumes started together: one runs
        # (the remaining tasks take the winner ~10 s, far longer than a start-up skew).
        os.killpg(first.pid, signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        # Finished is what the checkpoint holds (a task may have made its last call and
        # died before its result was saved: that one runs again).
        saved, _ = asyncio.run(_saved_at(location, thread))
        resumes = [_popen("resume", thread, *where, "--json") for _ in range(2)]
        procs += resumes
        outs = [p.communicate(timeout=120) for p in resumes]
        codes = sorted(p.returncode for p in resumes)
        assert codes == [0, EXIT_BUSY], outs
        winner = next(p for p in resumes if p.returncode == 0)
        loser = next(p for p in resumes if p.returncode == EXIT_BUSY)
        result = json.loads(outs[resumes.index(winner)][0])
        assert result["status"] == "ok"
        assert {r["task_id"] for r in result["results"]} == TASKS
        assert all(r["status"] == "ok" for r in result["results"])
        by_pid = Counter(c["pid"] for c in _calls(log))
        assert by_pid[loser.pid] == 0, "the refused resume called a model"
        assert by_pid[winner.pid] > 0
        # No task ran twice after the kill: each left task ran once, in the winner.
        after = Counter(c["who"] for c in _calls(log) if c["pid"] == winner.pid)
        assert after["planner"] == 0 and after["synthesizer"] == 1
        assert all(after[t] <= 2 for t in TASKS), after
        assert not [t for t in saved if after[t]], (saved, after)
        assert {t for t in TASKS if after[t]} == TASKS - saved
    finally:
        for proc in procs:
            _kill_group(proc)


@pytest.mark.alone  # a run outlasts the start-up of two resumes
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_one_process_runs_a_sqlite_thread(tmp_path: Path) -> None:
    location = str(tmp_path / "run.sqlite")
    _one_process_runs_the_thread(location, tmp_path)
    # The lease file is removed as its holder lets go; the folder stays, empty.
    assert not list(lease_file(location, "x").parent.glob("*.lock"))


@pytest.mark.alone  # a run outlasts the start-up of two resumes
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_one_process_runs_a_postgres_thread(postgres_url: str, tmp_path: Path) -> None:
    _one_process_runs_the_thread(postgres_url, tmp_path)


# --- in one process ------------------------------------------------------------------------


async def test_a_second_run_or_resume_of_a_thread_in_one_process_is_refused(
    checkpoint_location: str,
) -> None:
    location = checkpoint_location
    thread = f"one-{uuid.uuid4().hex[:8]}"
    config: Any = {"configurable": {"thread_id": thread}}
    settings = RunSettings(model="demo:latency=0.3", max_concurrency=2)
    async with open_checkpointer(location) as saver:
        graph = compile_orchestrator(checkpointer=saver)
        running = asyncio.create_task(arun(REQUEST, settings=settings, graph=graph, config=config))
        try:
            async with asyncio.timeout(30):
                while not (await graph.aget_state(config)).values.get("plan"):
                    assert not running.done(), running
                    await asyncio.sleep(0.02)
            with pytest.raises(ThreadBusy, match=f"thread `{thread}` is being run by"):
                await aresume(thread, graph=graph)
            with pytest.raises(ThreadBusy):
                await arun(REQUEST, settings=settings, graph=graph, config=config)
            # Another saver on the same store (another connection) is refused as well.
            async with open_checkpointer(location) as other:
                with pytest.raises(ThreadBusy):
                    async with thread_lease(other, thread):
                        pass
            # Another thread of the same store is free.
            async with thread_lease(saver, thread + "-other"):
                pass
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        # Cancelled, the run let go: the resume takes the thread and finishes it.
        out = await aresume(thread, graph=graph)
        assert out.status == "ok" and {r.task_id for r in out.results} == TASKS


async def test_a_pooled_postgres_saver_holds_leases_on_sessions_of_their_own(
    postgres_url: str,
) -> None:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    thread = f"pool-{uuid.uuid4().hex[:8]}"
    async with (
        AsyncConnectionPool(
            postgres_url, min_size=1, max_size=1, kwargs=kwargs, open=False
        ) as pool,
        open_checkpointer(postgres_url) as other,
    ):
        saver = AsyncPostgresSaver(pool)
        await saver.setup()
        async with thread_lease(saver, thread):
            with pytest.raises(ThreadBusy, match="PostgreSQL session"):
                async with thread_lease(other, thread):
                    pass
            # A pool of one connection: the run's own lease does not take it away from
            # the checkpoint writes.
            graph = compile_orchestrator(checkpointer=saver)
            out = await arun(
                "alpha",
                settings=RunSettings(model="demo:latency=0", start_jitter_s=0),
                graph=graph,
                config={"configurable": {"thread_id": thread + "-run"}},
            )
            assert out.status == "ok"
        async with thread_lease(other, thread):  # released with the pooled connection
            pass


async def test_a_lease_let_go_can_be_taken_again_at_once(checkpoint_location: str) -> None:
    # A resume right after a run must find the thread free: a closed Postgres session
    # releases its locks only as its backend exits, so the lease unlocks first.
    location = checkpoint_location
    thread = f"again-{uuid.uuid4().hex[:8]}"
    async with open_checkpointer(location) as saver, open_checkpointer(location) as other:
        for i in range(40):
            async with thread_lease(saver if i % 2 else other, thread):
                pass
