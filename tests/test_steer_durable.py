"""A cancel and an added task survive a crash: a checkpointed run with a store, steered
through its handle, SIGKILLed before it acted on them, then resumed in another process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fanfold import RunSettings, aresume
from fanfold.graphs.checkpoint import open_checkpointer
from fanfold.graphs.orchestrator import compile_orchestrator

pytestmark = pytest.mark.timeout(120)

RUN = textwrap.dedent(
    """
    import asyncio, sys
    from langgraph.store.sqlite import AsyncSqliteStore
    from fanfold import Plan, RunSettings, Task, start
    from fanfold.graphs.checkpoint import open_checkpointer
    from fanfold.graphs.orchestrator import compile_orchestrator

    async def main(db, store_db):
        plan = Plan(tasks=[Task(id=f"t{i}", description=f"part {i}", tools=["text_stats"])
                           for i in range(4)])
        settings = RunSettings(model="demo:latency=0.6", max_concurrency=1, start_jitter_s=0)
        async with open_checkpointer(db) as saver, \\
                AsyncSqliteStore.from_conn_string(store_db) as store:
            await store.setup()
            graph = compile_orchestrator(checkpointer=saver, store=store)
            config = {"configurable": {"thread_id": "crash-1"}}
            handle = await start("x", settings=settings, plan=plan, graph=graph, config=config)
            async for event in handle.events():
                if event["fanfold"] == "task_started" and event["task_id"] == "t0":
                    await handle.cancel_task("t3", "survives a crash")
                    extra = {"id": "extra", "description": "more", "depends_on": ["t0"],
                             "tools": ["text_stats"]}
                    await handle.add_tasks([extra])
                    print("SENT", flush=True)
            await handle.result()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_cancel_and_an_added_task_survive_a_crash(tmp_path: Path) -> None:
    from langgraph.store.sqlite import AsyncSqliteStore

    db, store_db = tmp_path / "runs.sqlite", tmp_path / "store.sqlite"
    script = tmp_path / "run.py"
    script.write_text(RUN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    errors = tmp_path / "stderr.txt"
    with (
        errors.open("w") as err,
        subprocess.Popen(  # noqa: ASYNC220 - a process to read one line from and SIGKILL
            [sys.executable, str(script), str(db), str(store_db)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the commands are written (and applied in memory)
            assert line.strip() == "SENT", errors.read_text()
        finally:
            os.kill(proc.pid, signal.SIGKILL)  # the process this test started: before t3 ran
            proc.wait(10)
    async with (
        open_checkpointer(db) as saver,
        AsyncSqliteStore.from_conn_string(str(store_db)) as store,
    ):
        graph = compile_orchestrator(checkpointer=saver, store=store)
        snapshot = await graph.aget_state({"configurable": {"thread_id": "crash-1"}})
        saved = {r.task_id for r in snapshot.values.get("results", [])}
        assert "t3" not in saved and "extra" not in saved  # nothing acted on them yet
        started = time.monotonic()
        out = await aresume(
            "crash-1",
            graph=graph,
            settings=RunSettings(model="demo:latency=0.3", max_concurrency=1, start_jitter_s=0),
        )
    assert time.monotonic() - started < 60
    by = {r.task_id: r for r in out.results}
    assert by["t3"].status == "cancelled"
    assert by["t3"].error is not None and by["t3"].error.message == "survives a crash"
    assert by["extra"].status == "ok"
    assert [t.id for t in out.plan.tasks] == ["t0", "t1", "t2", "t3", "extra"]  # type: ignore[union-attr]
    assert {by[t].status for t in ("t0", "t1", "t2")} == {"ok"}
    assert json.dumps(out.model_dump(mode="json"))  # a whole, valid output
