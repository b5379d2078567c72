"""Fanfold over real HTTP: a real `ChatOpenAI` against our scripted server on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import SecretStr

from fanfold.graphs.api import arun, execute_tasks_parallel, run
from fanfold.graphs.orchestrator import compile_orchestrator
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import SubagentResult, Task, Usage
from fanfold.nodes.errors import TaskFailedError
from tests.openai_server import (
    PLANNER,
    SYNTHESIZER,
    ScriptedOpenAI,
    ScriptedToolCall,
    TaskScript,
    serving,
)

pytestmark = pytest.mark.http

ALL_TOOLS = {"calculator", "current_time", "text_stats"}
STATS_TEXT = "Parallel agents fold results back."
STATS_RESULT = (
    "words=5 characters=34 sentences=1 "
    "top words: agents (1), back (1), fold (1), parallel (1), results (1)"
)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedOpenAI]:
    async with serving(latency_s=0.05) as srv:
        yield srv


def calc(expression: str) -> ScriptedToolCall:
    return ScriptedToolCall("calculator", {"expression": expression})


def tool_line(name: str, args: str, result: str) -> str:
    return f"{name}({args}) = {result}"


def as_usage(srv: ScriptedOpenAI, key: str) -> Usage:
    t = srv.tokens_for(key)
    return Usage(input_tokens=t.input, output_tokens=t.output, total_tokens=t.total)


def by_id(results: list[SubagentResult]) -> dict[str, SubagentResult]:
    return {r.task_id: r for r in results}


def assert_usage_matches_server(results: list[SubagentResult], srv: ScriptedOpenAI) -> None:
    for r in results:
        assert r.usage == as_usage(srv, r.task_id), r.task_id
        assert r.usage.total_tokens > 0, r.task_id


SIX_TASKS: dict[str, Any] = {
    "tasks": [
        {
            "id": "t1",
            "description": "Compute the answer to everything.",
            "kind": "researcher",
            "depends_on": [],
            "tools": ["calculator"],
        },
        {
            "id": "t2",
            "description": "Compute a kibibyte and an eighth of a thousand.",
            "kind": "researcher",
            "depends_on": [],
            "tools": ["calculator"],
        },
        {
            "id": "t3",
            "description": "Count the words of the slogan.",
            "kind": "analyst",
            "depends_on": [],
            "tools": ["text_stats"],
        },
        {
            "id": "t4",
            "description": "Name the project.",
            "kind": "general",
            "depends_on": [],
            "tools": None,
        },
        {
            "id": "t5",
            "description": "Add the numbers of t1 and t2.",
            "kind": "analyst",
            "depends_on": ["t1", "t2"],
            "tools": ["calculator"],
        },
        {
            "id": "t6",
            "description": "Write the report.",
            "kind": "writer",
            "depends_on": ["t3", "t4", "t5"],
        },
    ],
    "rationale": "four independent look-ups, one sum, one report",
}


def script_six(srv: ScriptedOpenAI) -> None:
    srv.plan = SIX_TASKS
    srv.tasks = {
        "t1": TaskScript("t1: the answer", [calc("6*7")]),
        "t2": TaskScript("t2: two numbers", [calc("2**10"), calc("1000/8")]),
        "t3": TaskScript(
            "t3: slogan counted", [ScriptedToolCall("text_stats", {"text": STATS_TEXT})]
        ),
        "t4": TaskScript("t4: Fanfold"),
        "t5": TaskScript("t5: the sum", [calc("42+1024")]),
        "t6": TaskScript("t6: the report"),
    }


async def test_full_run_over_http(server: ScriptedOpenAI) -> None:
    server.latency_s = 0.1  # long enough that three requests surely overlap
    script_six(server)
    events: list[dict[str, Any]] = []
    spec = server.spec()
    assert spec == f"openai:test-model@{server.base_url}"

    out = await arun(
        "Report on the numbers and the slogan.",
        settings=RunSettings(model=spec, max_concurrency=3),
        on_event=events.append,
    )

    assert server.errors == []
    ids = [t["id"] for t in SIX_TASKS["tasks"]]
    assert out.status == "ok"
    assert out.plan is not None and [t.id for t in out.plan.tasks] == ids
    assert [r.task_id for r in out.results] == ids
    assert [r.status for r in out.results] == ["ok"] * 6
    res = by_id(out.results)

    # Every request was ChatOpenAI's, to our base URL, with the defaulted key.
    assert {c.model for c in server.calls} == {"test-model"}
    assert {c.authorization for c in server.calls} == {"Bearer not-needed"}
    assert not any(c.stream for c in server.calls)
    assert [c.status for c in server.calls] == [200] * len(server.calls)

    # The planner was forced to call the Plan tool, and nothing else was offered it.
    (plan_call,) = server.calls_for(PLANNER)
    assert plan_call.tools == ["Plan"]
    assert plan_call.tool_choice == {"type": "function", "function": {"name": "Plan"}}

    # Each task saw its own description and kind, and exactly its allowed tools.
    for t in SIX_TASKS["tasks"]:
        assert server.descriptions[t["id"]] == t["description"]
        assert server.kinds[t["id"]] == t["kind"]
    assert server.tools_offered == {
        "t1": {"calculator"},
        "t2": {"calculator"},
        "t3": {"text_stats"},
        "t4": ALL_TOOLS,  # no allow-list: the general kind's default, every tool
        "t5": {"calculator"},
        "t6": set(),  # the writer kind has no tools
    }

    # Tool calls: counted per task, run, and their results sent back to the model.
    assert {r.task_id: r.tool_calls for r in out.results} == {
        "t1": 1,
        "t2": 2,
        "t3": 1,
        "t4": 0,
        "t5": 1,
        "t6": 0,
    }
    assert server.tool_results["t1"] == [tool_line("calculator", '{"expression": "6*7"}', "42")]
    assert server.tool_results["t2"] == [
        tool_line("calculator", '{"expression": "2**10"}', "1024"),
        tool_line("calculator", '{"expression": "1000/8"}', "125"),
    ]
    assert server.tool_results["t3"] == [
        tool_line("text_stats", f'{{"text": "{STATS_TEXT}"}}', STATS_RESULT)
    ]
    assert server.tool_results["t5"] == [
        tool_line("calculator", '{"expression": "42+1024"}', "1066")
    ]
    assert res["t1"].output == "t1: the answer | tools: " + server.tool_results["t1"][0]
    assert res["t4"].output == "t4: Fanfold"
    # One model call per turn: a tool turn plus a final turn, or just a final turn.
    assert {tid: len(server.calls_for(tid)) for tid in ids} == {
        "t1": 2,
        "t2": 2,
        "t3": 2,
        "t4": 1,
        "t5": 2,
        "t6": 1,
    }

    # Dependents got exactly their dependencies' outputs, and used them.
    assert server.inputs_seen["t5"] == {"t1": res["t1"].output, "t2": res["t2"].output}
    assert server.inputs_seen["t6"] == {
        "t3": res["t3"].output,
        "t4": res["t4"].output,
        "t5": res["t5"].output,
    }
    for tid in ("t1", "t2", "t3", "t4"):
        assert server.inputs_seen[tid] == {}
    assert f"t1=«{res['t1'].output}»" in res["t5"].output
    assert f"t2=«{res['t2'].output}»" in res["t5"].output
    for dep in ("t3", "t4", "t5"):
        assert f"{dep}=«{res[dep].output}»" in res["t6"].output

    # A dependent's first request came after its dependencies' last replies.
    def first_start(tid: str) -> float:
        return min(c.started for c in server.calls_for(tid))

    def last_end(tid: str) -> float:
        return max(c.ended for c in server.calls_for(tid))

    assert first_start("t5") >= max(last_end("t1"), last_end("t2"))
    assert first_start("t6") >= max(last_end(d) for d in ("t3", "t4", "t5"))

    # Tokens: each result's usage is what the server reported for that task, and
    # the run's total is everything the server reported.
    assert_usage_matches_server(out.results, server)
    grand = server.total_tokens()
    assert out.metrics.tokens == Usage(
        input_tokens=grand.input, output_tokens=grand.output, total_tokens=grand.total
    )
    assert out.metrics.tokens == Usage.total(r.usage for r in out.results) + as_usage(
        server, PLANNER
    ) + as_usage(server, SYNTHESIZER)
    assert as_usage(server, PLANNER).total_tokens > 0
    assert as_usage(server, SYNTHESIZER).total_tokens > 0

    # Concurrency: at most 3 subagents at once, and 3 did run at once (four
    # independent tasks are ready together). The planner and the synthesizer run
    # alone, before and after every subagent request.
    assert server.max_in_flight == 3
    assert out.metrics.peak_concurrency == 3
    task_calls = [c for c in server.calls if c.key in ids]
    assert plan_call.ended <= min(c.started for c in task_calls)
    (synth_call,) = server.calls_for(SYNTHESIZER)
    assert synth_call.started >= max(c.ended for c in task_calls)
    assert len(server.calls) == 1 + 10 + 1
    assert out.metrics.counts["ok"] == 6 and out.metrics.tasks == 6
    # No checkpointer: the four independent tasks share one window (LangGraph starts
    # the fourth when a slot frees), their two dependents the next.
    assert out.metrics.rounds == 2

    # The synthesizer saw every result, in plan order.
    assert out.answer == (
        "Answer built from 6 results: t1 (ok), t2 (ok), t3 (ok), t4 (ok), t5 (ok), t6 (ok)."
    )

    # Progress events: one plan, one start and one finish per task.
    names = [e["fanfold"] for e in events]
    assert names.count("plan_ready") == 1
    (ready,) = [e for e in events if e["fanfold"] == "plan_ready"]
    assert (ready["tasks"], ready["generations"]) == (6, 3)
    started = sorted(e["task_id"] for e in events if e["fanfold"] == "task_started")
    finished = [e for e in events if e["fanfold"] == "task_finished"]
    assert started == ids
    assert sorted(e["task_id"] for e in finished) == ids
    for e in finished:
        assert e["total_tokens"] == res[e["task_id"]].usage.total_tokens


async def test_execute_tasks_parallel_with_plain_strings(server: ScriptedOpenAI) -> None:
    server.tasks = {
        "t1": TaskScript("twelve squared", [calc("12*12")]),
        "t2": TaskScript("hello back"),
        "t3": TaskScript("nothing to compute"),
    }
    asks = ["Multiply 12 by 12.", "Say hello.", "Do nothing in particular."]

    results = await execute_tasks_parallel(asks, model=server.spec(), max_concurrency=2)

    assert server.errors == []
    assert [r.task_id for r in results] == ["t1", "t2", "t3"]
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert [r.output for r in results] == [
        "twelve squared | tools: " + tool_line("calculator", '{"expression": "12*12"}', "144"),
        "hello back",
        "nothing to compute",
    ]
    assert [r.tool_calls for r in results] == [1, 0, 0]
    assert server.descriptions == {"t1": asks[0], "t2": asks[1], "t3": asks[2]}
    assert server.kinds == {"t1": "general", "t2": "general", "t3": "general"}
    assert server.tools_offered == {"t1": ALL_TOOLS, "t2": ALL_TOOLS, "t3": ALL_TOOLS}
    assert_usage_matches_server(results, server)
    # No planner and no synthesizer: only the tasks' own requests.
    assert sorted(str(c.key) for c in server.calls) == ["t1", "t1", "t2", "t3"]
    assert server.max_in_flight == 2


async def test_http_400_fails_only_that_task_under_settle(server: ScriptedOpenAI) -> None:
    server.plan = {
        "tasks": [
            {"id": "t1", "description": "Fine.", "kind": "general", "tools": []},
            {"id": "t2", "description": "Rejected.", "kind": "general", "tools": []},
            {"id": "t3", "description": "Also fine.", "kind": "general", "tools": []},
            {"id": "t4", "description": "Needs t2.", "kind": "writer", "depends_on": ["t2"]},
        ],
        "rationale": "one of them is refused",
    }
    server.tasks = {
        "t1": TaskScript("t1 ok"),
        "t2": TaskScript("never", fail_status=400, fail_message="t2 is not allowed here"),
        "t3": TaskScript("t3 ok"),
        "t4": TaskScript("never"),
    }

    out = await arun("Do the four things.", settings=RunSettings(model=server.spec()))

    assert server.errors == []
    assert out.status == "partial"
    assert [(r.task_id, r.status) for r in out.results] == [
        ("t1", "ok"),
        ("t2", "failed"),
        ("t3", "ok"),
        ("t4", "skipped"),
    ]
    res = by_id(out.results)
    assert (res["t1"].output, res["t3"].output) == ("t1 ok", "t3 ok")
    err = res["t2"].error
    assert err is not None
    # openai raises BadRequestError; langchain-openai re-raises it as its subclass
    # OpenAIInvalidRequestError. Either way the message names the HTTP status.
    assert err.type == "ModelError"
    assert err.exception in {"openai.BadRequestError", "langchain_openai.OpenAIInvalidRequestError"}
    assert err.message == "Error code: 400 - t2 is not allowed here"
    assert res["t2"].output == ""
    assert res["t2"].usage == Usage()
    assert res["t4"].error is not None and res["t4"].error.type == "DependencyFailed"
    # A 400 is not retried, and the dependent never reached the model.
    assert [c.status for c in server.calls_for("t2")] == [400]
    assert server.calls_for("t4") == []
    assert_usage_matches_server([res["t1"], res["t3"]], server)
    grand = server.total_tokens()
    assert out.metrics.tokens.total_tokens == grand.total
    assert out.metrics.counts == {
        "ok": 2,
        "failed": 1,
        "timed_out": 0,
        "cancelled": 0,
        "skipped": 1,
    }
    assert out.answer == (
        "Answer built from 4 results: t1 (ok), t2 (failed), t3 (ok), t4 (skipped)."
    )


async def test_http_400_stops_the_run_under_fail_fast(server: ScriptedOpenAI) -> None:
    server.tasks = {
        "t1": TaskScript("never", fail_status=400, fail_message="refused at once"),
    }
    with pytest.raises(TaskFailedError) as caught:
        await execute_tasks_parallel(
            [
                Task(id="t1", description="Refused."),
                Task(id="t2", description="After.", depends_on=["t1"]),
            ],
            model=server.spec(),
            policy="fail_fast",
        )
    assert caught.value.result.task_id == "t1"
    assert caught.value.result.status == "failed"
    assert caught.value.result.error is not None
    assert "refused at once" in caught.value.result.error.message
    assert [c.key for c in server.calls] == ["t1"]
    assert server.errors == []


async def test_transient_503_is_retried_and_counted_once(server: ScriptedOpenAI) -> None:
    server.tasks = {
        "t1": TaskScript(
            "t1 after a retry",
            fail_status=503,
            fail_message="overloaded, try again",
            fail_times=1,
            fail_headers={"retry-after-ms": "20"},
        ),
        "t2": TaskScript("t2 at once"),
    }

    results = await execute_tasks_parallel(["Flaky.", "Steady."], model=server.spec())

    assert server.errors == []
    assert [(r.task_id, r.status, r.output) for r in results] == [
        ("t1", "ok", "t1 after a retry"),
        ("t2", "ok", "t2 at once"),
    ]
    assert [c.status for c in server.calls_for("t1")] == [503, 200]
    # Fanfold's own retry layer retried the call (the client's retries are off):
    # two attempts, and only the successful reply's usage.
    assert results[0].attempts == 2
    (ok_call,) = [c for c in server.calls_for("t1") if c.status == 200]
    assert ok_call.tokens is not None
    assert results[0].usage.total_tokens == ok_call.tokens.total
    assert_usage_matches_server(results, server)


async def test_unknown_task_id_fails_loudly(server: ScriptedOpenAI) -> None:
    server.tasks = {"t1": TaskScript("t1 ok")}

    results = await execute_tasks_parallel(["Known.", "Not scripted."], model=server.spec())

    assert [(r.task_id, r.status) for r in results] == [("t1", "ok"), ("t2", "failed")]
    err = results[1].error
    assert err is not None
    # openai's InternalServerError, or langchain-openai's subclass of it.
    assert err.type == "ModelError"
    assert err.exception in {"openai.InternalServerError", "langchain_openai.OpenAIAPIError"}
    assert err.message.startswith("Error code: 500 - unknown task id `t2`")
    assert len(server.errors) == 1 and "unknown task id `t2`" in server.errors[0]
    # `x-should-retry: false` kept the client from retrying the mistake.
    assert [c.status for c in server.calls_for("t2")] == [500]


async def test_streaming_model_reports_usage_and_tool_calls(server: ScriptedOpenAI) -> None:
    model = ChatOpenAI(
        model="test-model",
        base_url=server.base_url,
        api_key=SecretStr("streaming-key"),
        streaming=True,
        stream_usage=True,
        max_retries=0,
    )
    server.tasks = {
        "t1": TaskScript("streamed sum", [calc("40 * 0.25 / 8"), calc("sqrt(2) ** 2")]),
        "t2": TaskScript("streamed text " + "long " * 20),
    }
    try:
        results = await execute_tasks_parallel(["Compute.", "Talk."], model=model)
    finally:
        await model.root_async_client.close()

    assert server.errors == []
    assert all(c.stream and c.include_usage for c in server.calls)
    assert {c.authorization for c in server.calls} == {"Bearer streaming-key"}
    assert [r.status for r in results] == ["ok", "ok"]
    assert results[0].tool_calls == 2
    assert server.tool_results["t1"] == [
        tool_line("calculator", '{"expression": "40 * 0.25 / 8"}', "1.25"),
        tool_line("calculator", '{"expression": "sqrt(2) ** 2"}', "2"),
    ]
    assert results[0].output == "streamed sum | tools: " + "; ".join(server.tool_results["t1"])
    assert results[1].output == "streamed text " + "long " * 20
    assert_usage_matches_server(results, server)


async def test_models_endpoint(server: ScriptedOpenAI) -> None:
    client = AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    try:
        page = await client.models.list()
    finally:
        await client.close()
    assert [m.id for m in page.data] == ["test-model"]
    assert server.calls == [] and server.errors == []


async def test_planner_repair_round_over_http(server: ScriptedOpenAI) -> None:
    server.plan = {
        "tasks": [{"id": "t1", "description": "Search the web.", "tools": ["web_search"]}],
        "rationale": "first try",
    }
    server.repaired_plan = {
        "tasks": [{"id": "t1", "description": "Compute instead.", "tools": ["calculator"]}],
        "rationale": "repaired",
    }
    server.tasks = {"t1": TaskScript("t1 computed", [calc("1+1")])}

    out = await arun("Find it out.", settings=RunSettings(model=server.spec()))

    assert server.errors == []
    # The unknown tool went back to the model, which answered with a valid plan.
    assert [c.status for c in server.calls_for(PLANNER)] == [200, 200]
    (rejection,) = server.rejections
    assert "unknown tool(s) ['web_search']" in rejection
    assert out.plan is not None and out.plan.rationale == "repaired"
    assert [(r.task_id, r.status) for r in out.results] == [("t1", "ok")]
    assert out.results[0].output == "t1 computed | tools: " + tool_line(
        "calculator", '{"expression": "1+1"}', "2"
    )
    assert server.descriptions == {"t1": "Compute instead."}
    # Both planner calls count, as do the subagent's and the synthesizer's.
    grand = server.total_tokens()
    assert out.metrics.tokens == Usage(
        input_tokens=grand.input, output_tokens=grand.output, total_tokens=grand.total
    )
    planner_calls = server.calls_for(PLANNER)
    assert all(c.tokens is not None and c.tokens.total > 0 for c in planner_calls)


@pytest.mark.alone  # a quick call within a 0.5 s timeout
async def test_task_timeout_cuts_a_slow_http_call_short(server: ScriptedOpenAI) -> None:
    server.tasks = {
        "t1": TaskScript("too late", latency_s=10.0),
        "t2": TaskScript("t2 in time"),
    }
    started = time.monotonic()

    results = await execute_tasks_parallel(
        ["Slow.", "Quick."], model=server.spec(), task_timeout_s=0.5
    )

    elapsed = time.monotonic() - started
    assert [(r.task_id, r.status) for r in results] == [("t1", "timed_out"), ("t2", "ok")]
    err = results[0].error
    assert err is not None and err.type == "TaskTimeout"
    assert results[0].usage == Usage() and results[0].output == ""
    assert results[1].output == "t2 in time"
    assert_usage_matches_server(results[1:], server)
    # The run did not wait for the server's slow answer.
    assert elapsed < 5.0
    assert server.errors == []


async def test_message_streaming_still_counts_every_token(server: ScriptedOpenAI) -> None:
    # Streaming the graph's `messages` (as LangGraph Studio does) makes ChatOpenAI
    # stream over HTTP; the spec's `stream_usage=True` must keep the usage coming.
    server.plan = {
        "tasks": [
            {"id": "t1", "description": "Compute.", "tools": ["calculator"]},
            {"id": "t2", "description": "Report.", "kind": "writer", "depends_on": ["t1"]},
        ],
        "rationale": "two steps",
    }
    server.tasks = {
        "t1": TaskScript("t1 streamed", [calc("3*3")]),
        "t2": TaskScript("t2 streamed"),
    }
    settings = RunSettings(model=server.spec(), max_concurrency=2)
    graph = compile_orchestrator()
    values: dict[str, Any] = {}
    streamed: list[str] = []
    stream: AsyncIterator[Any] = graph.astream(
        {"request": "Stream it."},
        settings.as_config(),
        context=settings,
        stream_mode=["messages", "values"],
        subgraphs=True,
    )
    async for namespace, mode, chunk in stream:
        if mode == "values" and not namespace:
            values = dict(chunk)
        elif mode == "messages":
            message, _meta = chunk
            if isinstance(message, AIMessageChunk) and message.text:
                streamed.append(message.text)

    assert server.errors == []
    assert server.calls and all(c.stream and c.include_usage for c in server.calls)
    results = values["results"]
    assert [(r.task_id, r.status) for r in results] == [("t1", "ok"), ("t2", "ok")]
    assert results[0].output == "t1 streamed | tools: " + tool_line(
        "calculator", '{"expression": "3*3"}', "9"
    )
    assert f"t1=«{results[0].output}»" in results[1].output
    assert results[0].tool_calls == 1
    assert_usage_matches_server(results, server)
    grand = server.total_tokens()
    assert values["metrics"].tokens == Usage(
        input_tokens=grand.input, output_tokens=grand.output, total_tokens=grand.total
    )
    # The answer really came in pieces.
    assert values["answer"] == "Answer built from 2 results: t1 (ok), t2 (ok)."
    assert len(streamed) > 3


def test_sync_run_twice_in_one_process_gets_fresh_clients() -> None:
    # Each `run` has its own event loop: a client pooled on the first loop must not
    # be reused on the second ("Event loop is closed"), nor left open after it.
    srv = ScriptedOpenAI(latency_s=0.0).start()
    try:
        srv.plan = {
            "tasks": [
                {"id": "t1", "description": "one", "kind": "general", "tools": []},
                {"id": "t2", "description": "two", "kind": "general", "tools": []},
            ],
            "rationale": "two",
        }
        srv.tasks = {"t1": TaskScript("first"), "t2": TaskScript("second")}
        for _ in range(3):
            out = run("x", settings=RunSettings(model=srv.spec(), max_concurrency=2))
            assert [(r.task_id, r.status) for r in out.results] == [("t1", "ok"), ("t2", "ok")]
        assert srv.errors == []
    finally:
        srv.stop()
