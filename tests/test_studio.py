"""The real `langgraph dev` server, as LangGraph Studio talks to it, over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.llmock_server import run_llmock

ROOT = Path(__file__).resolve().parent.parent
LANGGRAPH = Path(sys.executable).parent / "langgraph"
STARTUP_S = 90.0
STOP_S = 15.0
REQUEST = "Compare tea, coffee and cocoa; estimate 3 * 120 cups"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and everything it started (its own process group)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_S)


def _wait_until_up(proc: subprocess.Popen[bytes], client: httpx.Client, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if client.get("/ok", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"langgraph dev was not up after {STARTUP_S:.0f}s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Start `langgraph dev` from the repo root once for this module; stop it after."""
    port = _free_port()
    log = tmp_path_factory.mktemp("langgraph-dev") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env |= {
        "LANGSMITH_TRACING": "false",
        "LANGGRAPH_NO_VERSION_CHECK": "true",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    }
    cmd = [str(LANGGRAPH), "dev", "--no-browser", "--no-reload"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            _wait_until_up(proc, client, log)
            yield client
    finally:
        _stop(proc)


def _graph_ids() -> set[str]:
    return set(json.loads((ROOT / "langgraph.json").read_text())["graphs"])


def _assistants(client: httpx.Client) -> dict[str, str]:
    resp = client.post("/assistants/search", json={"limit": 100})
    resp.raise_for_status()
    return {a["graph_id"]: a["assistant_id"] for a in resp.json()}


def _run(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    thread = client.post("/threads", json={})
    thread.raise_for_status()
    resp = client.post(f"/threads/{thread.json()['thread_id']}/runs/wait", json=body)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    assert "__error__" not in out, out
    return out


def _check_run(out: dict[str, Any]) -> None:
    planned = [t["id"] for t in out["plan"]["tasks"]]
    assert planned, out
    assert [r["task_id"] for r in out["results"]] == planned
    assert {r["status"] for r in out["results"]} == {"ok"}
    assert out["status"] == "ok"
    assert out["metrics"]["tasks"] == len(planned)
    assert out["answer"].startswith("[demo model]")


def test_every_graph_in_langgraph_json_is_served(server: httpx.Client) -> None:
    graphs = _graph_ids()
    assert graphs >= {"orchestrator", "subagent"}
    assert graphs <= set(_assistants(server))


def test_orchestrator_graph_shows_the_labelled_fan_out_edges(server: httpx.Client) -> None:
    assistant = _assistants(server)["orchestrator"]
    resp = server.get(f"/assistants/{assistant}/graph")
    resp.raise_for_status()
    drawn = resp.json()
    assert {"planner", "approve", "subagent", "reducer", "synthesize"} <= {
        n["id"] for n in drawn["nodes"]
    }
    edges = {(e["source"], e["target"]): e for e in drawn["edges"]}
    assert ("planner", "approve") in edges
    assert edges[("approve", "__end__")].get("data") == "rejected"
    for source in ("approve", "reducer"):
        edge = edges[(source, "subagent")]
        assert edge.get("conditional") is True, edge
        assert edge.get("data") == "fan-out", edge
        assert edges[(source, "synthesize")].get("data") == "done"
    assert edges[("subagent", "reducer")].get("conditional") is not True


def test_subagent_graph_is_the_react_loop(server: httpx.Client) -> None:
    assistant = _assistants(server)["subagent"]
    resp = server.get(f"/assistants/{assistant}/graph")
    resp.raise_for_status()
    edges = {(e["source"], e["target"]) for e in resp.json()["edges"]}
    assert {
        ("brief", "act"),
        ("act", "run_tools"),
        ("run_tools", "act"),
        ("act", "report"),
    } <= edges


def test_a_run_with_context_and_config_completes_every_task(server: httpx.Client) -> None:
    out = _run(
        server,
        {
            "assistant_id": "orchestrator",
            "input": {"request": REQUEST},
            "config": {"max_concurrency": 2},
            "context": {"model": "demo:latency=0.01"},
        },
    )
    _check_run(out)
    assert len(out["results"]) == 6
    # Four tasks were ready at once: the run config's top-level limit held them to 2.
    assert out["metrics"]["peak_concurrency"] == 2


def test_a_run_without_context_uses_the_demo_model(server: httpx.Client) -> None:
    out = _run(server, {"assistant_id": "orchestrator", "input": {"request": "alpha and beta"}})
    _check_run(out)
    assert [t["id"] for t in out["plan"]["tasks"]] == ["t1", "t2", "compare", "report"]


def test_xray_shows_the_subagent_inside_the_orchestrator(server: httpx.Client) -> None:
    assistant = _assistants(server)["orchestrator"]
    resp = server.get(f"/assistants/{assistant}/graph", params={"xray": "true"})
    resp.raise_for_status()
    ids = {n["id"] for n in resp.json()["nodes"]}
    assert {"subagent:brief", "subagent:act", "subagent:run_tools", "subagent:report"} <= ids


def _thread(client: httpx.Client) -> str:
    resp = client.post("/threads", json={})
    resp.raise_for_status()
    return str(resp.json()["thread_id"])


def _wait(client: httpx.Client, thread_id: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(f"/threads/{thread_id}/runs/wait", json=body)
    resp.raise_for_status()
    out: dict[str, Any] = resp.json()
    assert "__error__" not in out, out
    return out


def _paused_plan(client: httpx.Client, thread_id: str) -> dict[str, Any]:
    state = client.get(f"/threads/{thread_id}/state")
    state.raise_for_status()
    interrupts = [i for task in state.json()["tasks"] for i in task.get("interrupts", [])]
    assert len(interrupts) == 1, state.json()
    value: dict[str, Any] = interrupts[0]["value"]
    return value


APPROVAL = {"model": "demo:latency=0.01", "approve_plan": True}


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        ("accept", ["t1", "t2", "compare", "report"]),
        ({"action": "edit", "tasks": [{"id": "solo", "description": "estimate 6 * 7"}]}, ["solo"]),
        ({"action": "reject", "reason": "too broad"}, []),
    ],
)
def test_plan_approval_through_the_server(
    server: httpx.Client, decision: Any, expected: list[str]
) -> None:
    thread_id = _thread(server)
    body = {"assistant_id": "orchestrator", "input": {"request": "tea and coffee"}}
    paused = _wait(server, thread_id, body | {"context": APPROVAL})
    assert "results" not in paused or paused["results"] == []
    asked = _paused_plan(server, thread_id)
    assert [t["id"] for t in asked["plan"]["tasks"]] == ["t1", "t2", "compare", "report"]
    resumed = {"assistant_id": "orchestrator", "command": {"resume": decision}, "context": APPROVAL}
    out = _wait(server, thread_id, resumed)
    assert [r["task_id"] for r in out.get("results", [])] == expected
    assert out["status"] == ("rejected" if not expected else "ok")


def test_a_second_run_on_a_thread_plans_its_own_request(server: httpx.Client) -> None:
    thread_id = _thread(server)
    first = _wait(
        server, thread_id, {"assistant_id": "orchestrator", "input": {"request": "tea and coffee"}}
    )
    second = _wait(
        server,
        thread_id,
        {"assistant_id": "orchestrator", "input": {"request": "alpha, beta and gamma"}},
    )
    assert [t["description"] for t in first["plan"]["tasks"][:2]] == ["tea", "coffee"]
    assert [t["description"] for t in second["plan"]["tasks"][:3]] == ["alpha", "beta", "gamma"]
    assert [r["task_id"] for r in second["results"]] == [t["id"] for t in second["plan"]["tasks"]]
    assert "alpha" in second["answer"] and "tea" not in second["answer"]


EIGHT = "alpha, beta, gamma, delta, epsilon, zeta, eta, theta"
"""The demo model plans eight parallel tasks (then a comparison and a report)."""


def test_max_concurrency_in_the_context_alone_bounds_subagents(server: httpx.Client) -> None:
    # What Studio's context form sets. Each task makes two 0.3 s model calls; eight at
    # once under a limit of 2 take four rounds (~2.4 s). Were the limit only on model
    # calls, all eight would start at once and their 1 s timeouts would run while they
    # waited for a call slot (as they did before the run's setting bounded subagents).
    context = {"model": "demo:latency=0.3", "max_concurrency": 2, "task_timeout_s": 1.0}
    out = _run(
        server,
        {"assistant_id": "orchestrator", "input": {"request": EIGHT}, "context": context},
    )
    assert len(out["results"]) == 10
    assert {r["status"] for r in out["results"]} == {"ok"}, out["results"]
    assert out["metrics"]["peak_concurrency"] == 2


def test_max_concurrency_under_configurable_is_not_ignored(server: httpx.Client) -> None:
    # LangGraph itself ignores it there (the server refuses configurable with a
    # context, so this run has none: the demo model, every default).
    out = _run(
        server,
        {
            "assistant_id": "orchestrator",
            "input": {"request": EIGHT},
            "config": {"configurable": {"max_concurrency": 3}},
        },
    )
    assert {r["status"] for r in out["results"]} == {"ok"}
    assert out["metrics"]["peak_concurrency"] == 3


def test_a_bad_setting_in_the_context_is_named(server: httpx.Client) -> None:
    thread = server.post("/threads", json={}).json()["thread_id"]
    body = {
        "assistant_id": "orchestrator",
        "input": {"request": "tea"},
        "context": {"max_concurrency": 0},
    }
    out = server.post(f"/threads/{thread}/runs/wait", json=body).json()
    error = out.get("__error__") or {}
    assert "max_concurrency" in error.get("message", ""), out
    assert "integer >= 1" in error["message"]


def test_a_model_that_answers_in_prose_shows_its_reply_in_the_error(
    server: httpx.Client,
) -> None:
    prose = "I would rather not make a plan today; ask me about tea instead."
    with run_llmock(reply=prose, tool_mode="off") as llm:
        thread = server.post("/threads", json={}).json()["thread_id"]
        body = {
            "assistant_id": "orchestrator",
            "input": {"request": "tea and coffee"},
            "context": {"model": f"openai:mock@{llm.base_url}", "max_retries": 0},
        }
        out = server.post(f"/threads/{thread}/runs/wait", json=body).json()
    error = out.get("__error__") or {}
    assert error.get("error") == "PlanError", out
    assert prose in error["message"]  # not "An internal error occurred"


async def test_tokens_by_task_from_a_server_run_through_langgraph_sdk(
    server: httpx.Client,
) -> None:
    """The README recipe: a `langgraph dev` run's model text, by Fanfold task id."""
    from collections import defaultdict

    from langgraph_sdk import get_client

    pieces: dict[str | None, str] = defaultdict(str)
    async with get_client(url=str(server.base_url)) as client:
        thread = await client.threads.create()
        async for part in client.runs.stream(
            thread["thread_id"],
            "orchestrator",
            input={"request": "tea and coffee"},
            context={"model": "demo:latency=0.1", "start_jitter_s": 0},
            stream_mode="messages-tuple",
            stream_subgraphs=True,
        ):
            if part.event.startswith("messages"):
                chunk, metadata = part.data
                text = chunk.get("content")
                if isinstance(text, str) and text and chunk.get("type") == "AIMessageChunk":
                    pieces[metadata.get("fanfold_task_id")] += text
        state = await client.threads.get_state(thread["thread_id"])
    results = {r["task_id"]: r["output"] for r in state["values"]["results"]}
    assert set(results) == {"t1", "t2", "compare", "report"}
    assert {t: pieces[t] for t in results} == results  # each task's reply, whole, by id
    assert pieces[None] == state["values"]["answer"]


async def test_steering_a_server_run_through_the_store(server: httpx.Client) -> None:
    """The README recipe: cancel, add and stop a run on `langgraph dev` by writing
    commands to the server's store (as `langgraph_sdk` or Studio can)."""
    from langgraph_sdk import get_client

    plan = {
        "tasks": [
            {"id": f"t{i}", "description": f"part {i}", "tools": ["text_stats"]} for i in range(4)
        ]
    }
    context = {"model": "demo:latency=0.8", "max_concurrency": 2, "start_jitter_s": 0}
    async with get_client(url=str(server.base_url)) as client:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        ns = ["fanfold", "steer", tid]
        run = await client.runs.create(
            tid, "orchestrator", input={"request": "x", "given_plan": plan}, context=context
        )
        await client.store.put_item(
            ns, "0001", {"action": "cancel", "task_id": "t3", "reason": "not needed"}
        )
        extra = {
            "id": "extra",
            "description": "more",
            "depends_on": ["t0"],
            "tools": ["text_stats"],
        }
        await client.store.put_item(ns, "0002", {"action": "add", "tasks": [extra]})
        await client.store.put_item(ns, "0003", {"action": "cancel", "task_id": "nope"})
        await client.runs.join(tid, run["run_id"])
        state = await client.threads.get_state(tid)
        answers = await client.store.search_items([*ns, "done"], limit=10)
    results = {r["task_id"]: r for r in state["values"]["results"]}
    assert results["t3"]["status"] == "cancelled"
    assert results["t3"]["error"]["type"] == "Cancelled"
    assert results["t3"]["error"]["message"] == "not needed"
    assert results["extra"]["status"] == "ok"  # added mid-run, ran in this run
    assert [t["id"] for t in state["values"]["plan"]["tasks"]][-1] == "extra"
    by_key = {i["key"]: i["value"] for i in answers["items"]}
    assert by_key["0001"] == {"ok": True} and by_key["0002"] == {"ok": True}
    assert by_key["0003"]["ok"] is False and "no task `nope`" in by_key["0003"]["error"]


async def test_stopping_a_server_run_through_the_store(server: httpx.Client) -> None:
    from langgraph_sdk import get_client

    plan = {"tasks": [{"id": f"t{i}", "description": f"part {i}"} for i in range(6)]}
    context = {"model": "demo:latency=0.6", "max_concurrency": 1, "start_jitter_s": 0}
    async with get_client(url=str(server.base_url)) as client:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        run = await client.runs.create(
            tid, "orchestrator", input={"request": "x", "given_plan": plan}, context=context
        )
        await asyncio.sleep(1.0)
        await client.store.put_item(
            ["fanfold", "steer", tid], "1", {"action": "stop", "reason": "enough"}
        )
        await client.runs.join(tid, run["run_id"])
        state = await client.threads.get_state(tid)
    values = state["values"]
    statuses = [r["status"] for r in values["results"]]
    assert statuses[0] == "ok" and statuses[-1] == "cancelled"
    assert values["status"] == "partial" and values["answer"].startswith("[demo model]")
    stopped = [r for r in values["results"] if r["status"] == "cancelled"]
    assert all("enough" in r["error"]["message"] for r in stopped)
