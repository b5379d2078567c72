"""Fault tolerance over real HTTP: ChatOpenAI against a faulty server on 127.0.0.1.

The server (`tests.openai_server`) injects faults chosen by a seeded RNG per
request and records each one the moment it decides it, so a request the client
gave up on still counts; the run's metrics must count exactly what was injected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from fanfold.graphs.api import arun
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import Plan, SubagentResult, Task, Usage
from fanfold.nodes.faults import BACKOFF_BASE_S
from tests.openai_server import (
    SYNTHESIZER,
    Call,
    ScriptedOpenAI,
    ScriptedToolCall,
    SeededFaults,
    TaskScript,
    TokenBucket,
    serving,
)

pytestmark = pytest.mark.http

KIND_OF_FAULT = {
    "429": "rate_limited",
    "500": "server_error",
    "slow": "timeout",  # the client's request timeout fires first
    "drop": "connection",  # "Server disconnected without sending a response"
    "cut": "connection",  # a body shorter than its Content-Length
    "malformed": "malformed",  # a 200 whose JSON does not parse
}
"""How the client sees each injected fault (checked one by one in the test below)."""


@pytest.fixture
async def server() -> AsyncIterator[ScriptedOpenAI]:
    async with serving(latency_s=0.02) as srv:
        yield srv


def by_id(results: list[SubagentResult]) -> dict[str, SubagentResult]:
    return {r.task_id: r for r in results}


def delivered_usage(srv: ScriptedOpenAI, key: str) -> Usage:
    t = srv.tokens_for(key)  # only replies that were sent whole carry tokens
    return Usage(input_tokens=t.input, output_tokens=t.output, total_tokens=t.total)


def answered(srv: ScriptedOpenAI, key: str) -> list[Call]:
    return [c for c in srv.calls_for(key) if c.fault is None and c.status == 200]


def wide_plan(n: int, *, tool_every: int = 0) -> tuple[Plan, dict[str, TaskScript]]:
    tasks, scripts = [], {}
    for i in range(n):
        tid = f"t{i:03d}"
        with_tool = bool(tool_every) and i % tool_every == 0
        tasks.append(
            Task(id=tid, description=f"item {i}", tools=["calculator"] if with_tool else [])
        )
        calls = [ScriptedToolCall("calculator", {"expression": f"{i} * 3"})] if with_tool else []
        scripts[tid] = TaskScript(f"answer of {tid}", calls)
    return Plan(tasks=tasks, rationale="wide"), scripts


# --- each fault, one at a time -------------------------------------------------------------


@pytest.mark.parametrize("mode", list(KIND_OF_FAULT))
async def test_each_injected_fault_is_retried_as_its_kind(
    server: ScriptedOpenAI, mode: str
) -> None:
    server.slow_s = 3.0
    # A Retry-After longer than the first backoff could be (0.25 s): it must be obeyed.
    server.fault_headers = {"retry-after": "0.6"}
    server.tasks = {"t1": TaskScript("t1 after one fault")}
    server.faults = lambda key, index: mode if (key, index) == ("t1", 0) else None
    plan = Plan(tasks=[Task(id="t1", description="flaky", tools=[])])
    out = await arun(
        "x",
        settings=RunSettings(model=server.spec(), request_timeout_s=1.0, start_jitter_s=0),
        plan=plan,
    )

    assert server.errors == []
    (r,) = out.results
    assert (r.status, r.output, r.attempts) == ("ok", "t1 after one fault", 2)
    assert out.metrics.faults == {KIND_OF_FAULT[mode]: 1}
    assert out.metrics.retries == 1
    assert [i.mode for i in server.injected] == [mode]
    first, retry = server.calls_for("t1")
    assert (first.fault, retry.fault) == (mode, None)
    assert r.usage == delivered_usage(server, "t1")
    # The retry waited: the server's Retry-After, else at least half the first backoff.
    gap = retry.started - first.started
    assert gap >= (0.6 if mode == "429" else BACKOFF_BASE_S / 2)


# --- about 20% faults across 50 subagents ------------------------------------------------

N_TASKS = 50
SEED = 20  # 16 faults in 77 requests, every mode at least once, at most 3 in a row


async def test_fifty_subagents_through_twenty_percent_faults(server: ScriptedOpenAI) -> None:
    server.slow_s = 6.0  # far past the request timeout; `stop()` cuts it short
    plan, server.tasks = wide_plan(N_TASKS, tool_every=5)
    modes = tuple(KIND_OF_FAULT)
    server.faults = SeededFaults(rate=0.2, seed=SEED, modes=modes)
    finished: Counter[str] = Counter()

    def on_event(event: dict[str, Any]) -> None:
        if event["fanfold"] == "task_finished":
            finished[event["task_id"]] += 1

    out = await arun(
        "Answer every item.",
        settings=RunSettings(
            model=server.spec(),
            max_concurrency=10,
            max_retries=6,
            # Short, but with room for a loaded machine: a normal reply that took this
            # long would be a timeout the server did not inject.
            request_timeout_s=2.0,
            max_tasks=N_TASKS,
        ),
        plan=plan,
        on_event=on_event,
    )

    assert server.errors == []
    ids = [t.id for t in plan.tasks]
    injected = list(server.injected)
    per_key = Counter(i.key for i in injected)
    requests = len(server.calls)
    print(
        f"\n{requests} requests, {len(injected)} faults injected "
        f"({len(injected) / requests:.0%}): {dict(Counter(i.mode for i in injected))}"
    )
    # The seed gives a real mix: every fault mode, about a fifth of all requests.
    assert set(Counter(i.mode for i in injected)) == set(modes)
    assert 0.12 <= len(injected) / requests <= 0.3

    # Exactly one result per task, in plan order, every one ok, with its own answer.
    assert [r.task_id for r in out.results] == ids
    assert finished == Counter({tid: 1 for tid in ids})
    assert out.status == "ok"
    res = by_id(out.results)
    for i, tid in enumerate(ids):
        r = res[tid]
        assert r.status == "ok", (tid, r.error)
        expected = f"answer of {tid}"
        if i % 5 == 0:
            expected += f' | tools: calculator({{"expression": "{i} * 3"}}) = {i * 3}'
            assert r.tool_calls == 1
        assert r.output == expected
        # Nothing lost or duplicated: one answered request per model turn.
        assert len(answered(server, tid)) == (2 if i % 5 == 0 else 1), tid
        # `attempts` is true: one, plus one per fault this task's requests met.
        assert r.attempts == 1 + per_key[tid], tid
        # Tokens: only what the server delivered whole.
        assert r.usage == delivered_usage(server, tid), tid

    # The run counts exactly the faults the server injected, each as its kind.
    expected_faults = dict(Counter(KIND_OF_FAULT[i.mode] for i in injected))
    assert out.metrics.faults == expected_faults, injected
    assert out.metrics.retries == len(injected)
    assert out.metrics.counts["ok"] == N_TASKS
    grand = server.total_tokens()
    assert out.metrics.tokens.total_tokens == grand.total
    # No retry of a 429 came sooner than its Retry-After (0.05 s).
    for inj in injected:
        if inj.mode != "429":
            continue
        calls = server.calls_for(inj.key)
        mine = next(c for c in calls if c.seq == inj.seq)
        after = min((c for c in calls if c.seq > inj.seq), key=lambda c: c.seq)
        assert after.started - mine.started >= 0.05
    assert out.answer.startswith(f"Answer built from {N_TASKS} results: t000 (ok)")
    assert len(answered(server, SYNTHESIZER)) == 1
    # Never more than max_concurrency subagents at once; on the server, requests the
    # client abandoned (slow replies) may still hold a thread for a while.
    assert out.metrics.peak_concurrency <= 10
    abandoned = sum(1 for i in injected if i.mode == "slow")
    assert server.max_in_flight <= 10 + abandoned


# --- admission control -----------------------------------------------------------------

RATE = 40.0
"""Requests per second the server admits (token bucket, burst RATE / 2)."""


async def test_admission_keeps_a_burst_of_100_under_the_server_rate(
    server: ScriptedOpenAI,
) -> None:
    server.rate_limit = bucket = TokenBucket(RATE, burst=RATE / 2)
    plan, server.tasks = wide_plan(100)
    out = await arun(
        "x",
        settings=RunSettings(
            model=server.spec(), max_concurrency=50, requests_per_second=RATE, max_tasks=100
        ),
        plan=plan,
    )

    assert server.errors == []
    print(f"\nadmission at {RATE:g} rps: {out.metrics.wall_time_s:.2f}s, {server.throttled} 429s")
    assert out.status == "ok"
    assert [r.status for r in out.results] == ["ok"] * 100
    assert [r.output for r in out.results] == [f"answer of {t.id}" for t in plan.tasks]
    # The shared limit kept the whole burst inside the server's rate: no 429 at all.
    assert server.throttled == 0
    assert out.metrics.faults == {} and out.metrics.retries == 0
    assert all(r.attempts == 1 for r in out.results)
    assert bucket.rate == RATE
    assert len(answered(server, SYNTHESIZER)) == 1


# --- errors that are not transient -------------------------------------------------------


async def test_non_transient_http_errors_are_never_retried(server: ScriptedOpenAI) -> None:
    codes = {"bad400": 400, "bad401": 401, "bad403": 403, "bad422": 422}
    server.tasks = {tid: TaskScript("never", fail_status=code) for tid, code in codes.items()}
    server.tasks["fine"] = TaskScript("fine")
    plan = Plan(tasks=[Task(id=tid, description=tid, tools=[]) for tid in [*codes, "fine"]])
    out = await arun("x", settings=RunSettings(model=server.spec(), max_retries=6), plan=plan)

    assert server.errors == []
    res = by_id(out.results)
    for tid, code in codes.items():
        assert res[tid].status == "failed" and res[tid].attempts == 1
        assert res[tid].error is not None
        assert res[tid].error.message.startswith(f"Error code: {code}")
        assert [c.status for c in server.calls_for(tid)] == [code]  # one request
    assert res["fine"].status == "ok"
    assert out.metrics.retries == 0 and out.metrics.faults == {}


# --- streamed replies --------------------------------------------------------------------


async def test_a_malformed_or_cut_stream_is_retried(server: ScriptedOpenAI) -> None:
    long_answer = "a streamed answer long enough to need several chunks of sixteen characters"
    server.tasks = {
        "malformed": TaskScript(long_answer),
        "cut": TaskScript(long_answer),
        "clean": TaskScript(long_answer),
    }
    server.faults = lambda key, index: (
        {"malformed": "malformed", "cut": "cut"}.get(key) if index == 0 else None
    )
    model = ChatOpenAI(
        model="test-model",
        base_url=server.base_url,
        api_key=SecretStr("k"),
        streaming=True,
        stream_usage=True,
        max_retries=0,
    )
    plan = Plan(tasks=[Task(id=tid, description=tid, tools=[]) for tid in server.tasks])
    try:
        out = await arun("x", settings=RunSettings(model=model, start_jitter_s=0), plan=plan)
    finally:
        await model.root_async_client.close()

    assert server.errors == []
    assert all(c.stream for c in server.calls)
    res = by_id(out.results)
    assert res["clean"].output == long_answer and res["clean"].attempts == 1
    # A chunk that is not JSON: the client raises, the call is retried.
    assert res["malformed"].output == long_answer
    assert res["malformed"].attempts == 2
    # A stream cut off before its end (no finish_reason, no usage, no [DONE]) is not
    # an answer: it must be retried, not passed on as the task's output.
    assert res["cut"].output == long_answer, "a cut stream was taken as the answer"
    assert res["cut"].attempts == 2
    assert res["cut"].usage == delivered_usage(server, "cut")
    assert out.metrics.retries == 2
    assert out.metrics.faults.get("malformed", 0) >= 1
    assert sum(out.metrics.faults.values()) == 2
