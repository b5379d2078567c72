"""A process's first failure costs the event loop no more than a later one (target 7).

`bench/stall.py` measures it (the longest loop step around a process's first failure
against a later one's). These tests pin down what such a stall would be made of, in
a fresh interpreter after a run with no failure: the first failures of every kind
import no module and read no source file (`linecache`: what formatting a traceback
does) while the loop waits. A fresh interpreter, because this test process has long
since imported everything and failed many times.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r'''
import asyncio, json, linecache, sys

from langchain_core.tools import tool

from fanfold import RunSettings, Task, execute_tasks_parallel
from fanfold.nodes.errors import TaskFailedError
from fanfold.testing import TaskScript, TaskScriptedModel


@tool
async def lookup(x: int) -> str:
    """Look x up (none below 0)."""
    if x < 0:
        raise ValueError(f"no entry {x}")
    return f"v{x}"


@tool
def lookup_sync(x: int) -> str:
    """Look x up, blocking (none below 0)."""
    if x < 0:
        raise ValueError(f"no entry {x}")
    return f"v{x}"


TOOLS = [lookup, lookup_sync]
TIMEOUT_S = 0.3
READS = []
for name in ("getline", "getlines", "updatecache", "checkcache"):
    real = getattr(linecache, name)

    def counted(*args, _real=real, _name=name, **kwargs):
        READS.append((_name, args[:1]))
        return _real(*args, **kwargs)

    setattr(linecache, name, counted)


def tasks(scripts, timeouts=()):
    return [
        Task(id=i, description=f"do {i}", tools=["lookup", "lookup_sync"],
             timeout_s=TIMEOUT_S if i in timeouts else None)
        for i in scripts
    ]


async def run(scripts, timeouts=(), policy="settle"):
    model = TaskScriptedModel(scripts=scripts)
    settings = RunSettings(start_jitter_s=0, retry_budget_s=5)
    results = await execute_tasks_parallel(
        tasks(scripts, timeouts), model=model, tools=TOOLS, max_concurrency=8,
        policy=policy, settings=settings,
    )
    return results, model.recorder


async def main():
    # Everything but a failure: both tools, a timeout that does not fire, the results.
    warm = {
        "w1": TaskScript(latency=0, call=("lookup", {"x": 1})),
        "w2": TaskScript(latency=0, call=("lookup_sync", {"x": 1})),
        "w3": TaskScript(latency=0),
    }
    assert {r.status for r in (await run(warm, timeouts={"w3"}))[0]} == {"ok"}
    modules, reads = set(sys.modules), len(READS)
    failing = {
        "tool": TaskScript(latency=0, call=("lookup", {"x": -1})),
        "sync_tool": TaskScript(latency=0, call=("lookup_sync", {"x": -1})),
        "unknown_tool": TaskScript(latency=0, call=("nope", {})),
        "model": TaskScript(latency=0, behaviour="raise"),
        "transient": TaskScript(latency=0, errors=[ConnectionError("reset")]),
        "hang": TaskScript(latency=0, behaviour="hang"),
        "ok": TaskScript(latency=0),
    }
    done, recorder = await run(failing, timeouts={"hang"})
    results = {r.task_id: r for r in done}
    try:
        await run({"a": TaskScript(latency=0, behaviour="raise")}, policy="fail_fast")
        stopped = None
    except TaskFailedError as exc:
        stopped = exc.result.status
    print(json.dumps({
        "statuses": {i: r.status for i, r in results.items()},
        "tool_errors": {i: r.tool_errors for i, r in results.items()},
        "raised": recorder.raised,
        "fail_fast": stopped,
        "new_modules": sorted(set(sys.modules) - modules),
        "source_reads": READS[reads:][:10],
    }))


asyncio.run(main())
'''


def _first_failures() -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_the_first_failures_import_nothing_and_read_no_source() -> None:
    out = _first_failures()
    # Every kind of failure happened, and the run went on past each.
    assert out["statuses"] == {
        "tool": "ok",
        "sync_tool": "ok",
        "unknown_tool": "ok",
        "model": "failed",
        "transient": "ok",
        "hang": "timed_out",
        "ok": "ok",
    }
    assert out["tool_errors"] == {
        "tool": 1,
        "sync_tool": 1,
        "unknown_tool": 1,
        "model": 0,
        "transient": 0,
        "hang": 0,
        "ok": 0,
    }
    assert out["raised"] == {"transient": 1}  # retried once, then ok
    assert out["fail_fast"] == "failed"
    # Importing on the loop at a first failure stalled it 0.2-0.5 s once (the OpenAI
    # SDK, CHANGELOG); reading source files is what formatting a traceback costs.
    assert out["new_modules"] == [], "imported at a first failure"
    assert out["source_reads"] == [], "source files read (a traceback formatted)"
