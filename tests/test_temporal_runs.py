"""A run's semantics on Temporal: policies, budgets, approval, types, failures, bad input.

The same dev server and worker processes as tests/test_temporal.py, a server of this
module's own.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fanfold.graphs import temporal
from fanfold.graphs.api import RunOutput
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import Plan, SubagentResult, Task
from fanfold.nodes.errors import QuorumUnreachable, TaskFailedError
from tests.llmock_server import free_port
from tests.temporal_cluster import (  # noqa: F401 - the fixtures: imported to be found
    HOST,
    Workers,
    calls,
    cli,
    run,
    temporal_server_fixture,
    wide,
    workers_fixture,
)

pytestmark = pytest.mark.temporal


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
    assert met.status == "ok"  # a quorum met is a run that succeeded, as in process
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


def test_bad_temporal_input_names_the_flag(tmp_path: Path) -> None:
    nobody = f"{HOST}:{free_port()}"
    down = cli("worker", "--temporal", nobody)
    assert (
        down.returncode == 3 and f"--temporal {nobody}: no Temporal server answers" in down.stderr
    )
    zero = cli("worker", "--temporal", nobody, "--max-activities", "0")
    assert zero.returncode == 2 and "--max-activities: must be an integer >= 1" in zero.stderr
    role = cli("worker", "--temporal", nobody, "--role", "boss")
    assert role.returncode == 2 and "--role" in role.stderr
    saved = cli("run", "x", "--temporal", nobody, "--checkpoint", str(tmp_path / "x.sqlite"))
    assert saved.returncode == 2 and "--checkpoint is not supported with --temporal" in saved.stderr
    doc = cli("run", "x", "--model", "demo", "--temporal", nobody, "--json")
    assert doc.returncode == 3 and json.loads(doc.stdout)["status"] == "failed"


async def test_a_worker_needs_fanfolds_data_converter(temporal_server: str) -> None:
    from temporalio.client import Client

    plain = await Client.connect(temporal_server)
    with pytest.raises(ValueError, match="no Fanfold data converter"):
        temporal.make_worker(plain)
    with pytest.raises(ValueError, match="`--role` must be one of all, orchestrator, agents"):
        temporal.make_worker(await temporal.connect(temporal_server), role="boss")


def test_a_run_that_fails_on_a_worker_says_why(workers: Workers) -> None:
    workers.start()
    nowhere = f"http://{HOST}:{free_port()}/v1"
    done = cli(
        "run", "a, b", "--model", f"openai:m@{nowhere}", "--retry-budget", "1",
        "--temporal", workers.address, "--task-queue", workers.queue, "--json",
    )  # fmt: skip
    # The planner's activity could not reach its model: the workflow fails the run (it
    # would otherwise retry its task forever) and the CLI says so, as in-process.
    assert done.returncode == 3, done.stderr
    assert "the run failed on Temporal: OpenAIConnectionError" in done.stderr
    assert json.loads(done.stdout)["status"] == "failed"


def test_settings_that_cannot_reach_the_workers_are_refused(tmp_path: Path) -> None:
    from langchain_core.tools import tool

    from fanfold.nodes.demo_model import DemoChatModel

    @tool
    def shout(text: str) -> str:
        """Shout the text."""
        return text.upper()

    temporal.portable(RunSettings(model="demo", tools=["fanfold.tools.builtins:calculator"]))
    with pytest.raises(ValueError, match="`model` is a chat model object") as objects:
        temporal.portable(RunSettings(model=DemoChatModel(), tools=[shout]))
    assert "`tools` holds tool objects" in str(objects.value)
    servers = tmp_path / "servers.json"
    servers.write_text(json.dumps({"mcpServers": {"x": {"command": "true"}}}))
    refused = cli("run", "x", "--model", "demo", "--mcp", str(servers), "--temporal", "127.0.0.1:1")
    assert refused.returncode == 2 and "`mcp_servers` (--mcp) is not carried" in refused.stderr


async def test_results_over_the_payload_limit_end_the_run_saying_so(workers: Workers) -> None:
    # Workers that take 20 KB for Temporal's limit: the synthesizer's input (the plan and
    # every result) is over it. It used to be a workflow task retried forever: a hang.
    workers.start(env={"FANFOLD_TEMPORAL_PAYLOAD_LIMIT": "20000"})
    plan = wide(30, timeout_s=60)
    plan = plan.model_copy(
        update={"tasks": [t.model_copy(update={"description": "x " * 300}) for t in plan.tasks]}
    )
    started = time.monotonic()
    with pytest.raises(temporal.RunFailed) as failed:
        await run(workers, plan, model="demo:latency=0", max_concurrency=10)
    assert failed.value.kind == "PayloadTooLarge" and "synthesize" in str(failed.value)
    assert time.monotonic() - started < 60
    out = failed.value.output
    assert out.status == "failed" and len(out.results) == 30
    assert all(r.status == "ok" for r in out.results)  # what the run had, kept
    assert all("[cut:" in r.output for r in out.results)  # cut to fit the workflow's result


def test_a_plan_over_the_payload_limit_is_refused_before_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(temporal, "PAYLOAD_LIMIT", 1000)

    async def start() -> None:
        await temporal.start_run(None, "x", plan=wide(30))  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="over the 1000 a Temporal payload may"):
        asyncio.run(start())


async def test_an_event_handler_that_raises_ends_the_watch(workers: Workers) -> None:
    workers.start()

    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("the handler broke")

    with pytest.raises(RuntimeError, match="the handler broke"):
        await temporal.arun_on_temporal(
            "x",
            address=workers.address,
            plan=wide(4),
            settings=RunSettings(model="demo:latency=0.3"),
            task_queue=workers.queue,
            on_event=broken,
        )


async def test_the_wall_time_budget_does_not_count_the_wait_for_approval(
    workers: Workers,
) -> None:
    workers.start()

    async def slow_yes(plan: Plan) -> str:
        await asyncio.sleep(3)  # longer than the run's whole budget
        return "accept"

    out = await temporal.arun_on_temporal(
        "tea, coffee",
        address=workers.address,
        settings=RunSettings(model="demo:latency=0", approve_plan=True, max_wall_time_s=2),
        task_queue=workers.queue,
        on_approval=slow_yes,
    )
    assert out.status == "ok", [r.error for r in out.results]  # as in process


def test_ctrl_c_ends_the_cli_at_once_and_names_the_workflow_that_goes_on(
    workers: Workers, tmp_path: Path
) -> None:
    workers.start()
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(wide(30).model_dump_json())
    log = tmp_path / "calls.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanfold.graphs.cli", "run", "--plan", str(plan_file),
         "--model", f"demo:latency=0.5,log={log}", "--max-concurrency", "3", "--no-live",
         "--temporal", workers.address, "--task-queue", workers.queue],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while len(calls(log)) < 6:  # mid-run: events polled, results awaited
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert time.monotonic() - interrupted < 10  # it used to retry a cancelled poll for 2 min
    assert "interrupted; the run goes on on Temporal as workflow fanfold-" in err
