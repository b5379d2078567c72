"""Fanfold spread over Temporal workers: where subagents run, and workers that die or stop.

A real dev server and `fanfold worker` processes (tests/temporal_cluster.py): 30
subagents over three workers, an agents worker SIGKILLed, the workflow's worker
SIGKILLed and replaced, a worker stopped with SIGTERM, a worker's activity cap.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fanfold.graphs import temporal
from fanfold.graphs.api import RunOutput
from fanfold.nodes.context import RunSettings
from tests.temporal_cluster import (  # noqa: F401 - the fixtures: imported to be found
    Workers,
    calls,
    cli,
    peak,
    run,
    start_server,
    stop_server,
    temporal_server_fixture,
    wide,
    workers_fixture,
)

pytestmark = pytest.mark.temporal


def test_the_cli_spreads_thirty_subagents_over_three_workers(
    workers: Workers, tmp_path: Path
) -> None:
    pids = {p.pid for p in (workers.start(), workers.start(), workers.start())}
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(wide(30).model_dump_json())
    log = tmp_path / "calls.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fanfold.graphs.cli",
            "run",
            "--plan",
            str(plan_file),
            "--model",
            f"demo:latency=0.5,log={log}",
            "--max-concurrency",
            "6",
            "--no-live",
            "--temporal",
            workers.address,
            "--task-queue",
            workers.queue,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = RunOutput.model_validate_json(done.stdout)
    assert out.status == "ok"
    assert [r.task_id for r in out.results] == [t.id for t in wide(30).tasks]  # once, in order
    assert all(r.status == "ok" and r.output for r in out.results)
    ran_on = collections.Counter(r.worker for r in out.results)
    assert len(ran_on) >= 2, ran_on
    assert {int(w.rsplit(":", 1)[1]) for w in ran_on} <= pids
    assert peak(out.results) <= 6 and out.metrics.peak_concurrency <= 6
    per_task = collections.Counter(c["who"] for c in calls(log) if c["who"].startswith("t"))
    assert set(per_task) == {t.id for t in wide(30).tasks}
    assert len(set(per_task.values())) == 1  # every task made as many calls: none ran twice
    # The progress lines: each task's start and finish, from the workflow's stream.
    assert done.stderr.count("finish t") == 30, done.stderr[-2000:]
    assert done.stderr.count("start  t") == 30, done.stderr[-2000:]


@pytest.mark.alone  # compares two wall times
async def test_a_killed_agents_worker_loses_no_task(workers: Workers, tmp_path: Path) -> None:
    workers.start("orchestrator")
    agents = [workers.start("agents") for _ in range(3)]
    quiet, quiet_s = await run(workers, wide(30), model="demo:latency=1", max_concurrency=6)
    assert quiet.status == "ok"

    log = tmp_path / "calls.jsonl"
    settings = {"model": f"demo:latency=1,log={log}", "max_concurrency": 6}
    task = asyncio.ensure_future(run(workers, wide(30), **settings))
    victim = agents[0]
    deadline = time.monotonic() + 30
    while not any(c["pid"] == victim.pid and c["who"].startswith("t") for c in calls(log)):
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    out, loud_s = await task

    assert out.status == "ok", [r.error for r in out.results if r.status != "ok"]
    assert [r.task_id for r in out.results] == [t.id for t in wide(30).tasks]
    assert all(r.status == "ok" for r in out.results)
    assert f":{victim.pid}" not in {r.worker[r.worker.rindex(":") :] for r in out.results}
    rerun = [c["who"] for c in calls(log) if c["pid"] == victim.pid and c["who"].startswith("t")]
    assert rerun  # it had work in flight, which ran again elsewhere
    print(f"\nundisturbed {quiet_s:.1f}s, one agents worker killed {loud_s:.1f}s")
    assert loud_s < 2 * quiet_s


async def test_a_killed_workflow_worker_reruns_no_finished_subagent(
    workers: Workers, tmp_path: Path
) -> None:
    first = workers.start("orchestrator")
    for _ in range(2):
        workers.start("agents")
    log = tmp_path / "calls.jsonl"
    settings = {"model": f"demo:latency=0.5,log={log}", "max_concurrency": 6}
    task = asyncio.ensure_future(run(workers, wide(30), **settings))
    deadline = time.monotonic() + 30
    while sum(1 for c in calls(log) if c["who"].startswith("t")) < 24:  # ~12 tasks done
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    workers.start("orchestrator")
    out, _ = await task

    assert out.status == "ok"
    assert [r.task_id for r in out.results] == [t.id for t in wide(30).tasks]
    per_task = collections.Counter(c["who"] for c in calls(log) if c["who"].startswith("t"))
    assert set(per_task.values()) == {2}, per_task  # a tool call, then the answer: once each


async def test_max_activities_caps_what_one_worker_runs(workers: Workers) -> None:
    workers.start("orchestrator")
    workers.start("agents", "--max-activities", "2")
    out, _ = await run(workers, wide(6), model="demo:latency=0.3", max_concurrency=6)
    assert out.status == "ok"
    assert peak(out.results) <= 2  # the run's limit is 6: the worker's cap held


async def test_a_stopped_worker_ends_promptly_and_its_work_runs_elsewhere(
    workers: Workers, tmp_path: Path
) -> None:
    workers.start("orchestrator")
    first = workers.start("agents")
    log = tmp_path / "calls.jsonl"
    settings = {"model": f"demo:latency=2,log={log}", "max_concurrency": 4}
    task = asyncio.ensure_future(run(workers, wide(4), **settings))
    deadline = time.monotonic() + 30
    while not any(c["pid"] == first.pid for c in calls(log)):
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.05)
    stopped_at = time.monotonic()
    first.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(first.wait, 30)
    assert code == 0 and time.monotonic() - stopped_at < 15
    workers.start("agents")
    out, _ = await task
    assert out.status == "ok" and [r.task_id for r in out.results] == [t.id for t in wide(4).tasks]
    assert all(r.worker != f"{r.worker.split(':')[0]}:{first.pid}" for r in out.results)


async def test_a_planner_whose_worker_dies_runs_again_elsewhere(workers: Workers) -> None:
    workers.start("orchestrator")
    doomed = workers.start("agents")
    client = await temporal.connect(workers.address)
    handle = await temporal.start_run(
        client,
        "tea, coffee",
        settings=RunSettings(model="demo:latency=3"),  # the planner's call takes 3 s
        task_queue=workers.queue,
    )
    deadline = time.monotonic() + 30
    while True:  # until the planner's activity runs on the doomed worker
        pending = (await handle.describe()).raw_description.pending_activities
        if any(a.activity_type.name.endswith("planner") and a.last_started_time.seconds
               for a in pending):  # fmt: skip
            break
        assert time.monotonic() < deadline, "the planner never started"
        await asyncio.sleep(0.1)
    os.kill(doomed.pid, signal.SIGKILL)
    workers.start("agents")
    started = time.monotonic()
    out = await asyncio.wait_for(temporal.result_of(handle), timeout=90)
    # A heartbeat timeout (3 s) and the calls again; it used to wait for the 1 h backstop.
    assert out.status == "ok" and out.results
    assert time.monotonic() - started < 60


async def test_the_client_waits_out_a_server_outage(tmp_path: Path) -> None:
    # A server of this test's own: it is SIGKILLed mid-run and started again on the same
    # port and database. The run goes on there; the client used to fail at once.
    db = tmp_path / "outage.db"
    server, address = start_server(db)
    pool = Workers(address, "outage", tmp_path)
    try:
        pool.start()
        log = tmp_path / "calls.jsonl"
        settings = {"model": f"demo:latency=0.5,log={log}", "max_concurrency": 6}
        task = asyncio.ensure_future(run(pool, wide(30), **settings))
        deadline = time.monotonic() + 30
        while len(calls(log)) < 10:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)
        stop_server(server, kill=True)
        await asyncio.sleep(10)  # longer than the SDK's own retries (~8 s)
        server, _ = start_server(db, port=int(address.rsplit(":", 1)[1]))
        out, _ = await asyncio.wait_for(task, timeout=120)
        assert out.status == "ok"
        assert [r.task_id for r in out.results] == [t.id for t in wide(30).tasks]
    finally:
        pool.stop()
        stop_server(server)
