"""Every node alone: called with a state dict and a runtime holding the run settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.errors import NodeError, NodeTimeoutError
from langgraph.runtime import Runtime
from langgraph.types import Command, Overwrite, Send

from fanfold.nodes.act import act, after_act, bind_tools, task_tools
from fanfold.nodes.brief import brief
from fanfold.nodes.context import RunSettings
from fanfold.nodes.dispatch import (
    DONE,
    FAN_OUT,
    REDUCER,
    SUBAGENT,
    Dispatch,
    dispatch_path_map,
)
from fanfold.nodes.domain import ErrorInfo, Plan, SubagentResult, Task, Usage
from fanfold.nodes.errors import PlanError, TaskFailedError
from fanfold.nodes.kinds import BUILTIN_KINDS
from fanfold.nodes.ledger import Ledger
from fanfold.nodes.planner import planner
from fanfold.nodes.reducer import reducer
from fanfold.nodes.report import report
from fanfold.nodes.resolve import resolve_task
from fanfold.nodes.run_tools import run_tools
from fanfold.nodes.scope import scope_of
from fanfold.nodes.subagent_error import on_subagent_error
from fanfold.nodes.synthesize import synthesize
from fanfold.tools import calculator
from tests.fakes import REPLY_USAGE, TaskScript, TaskScriptedModel, node_runtime

Event = dict[str, Any]
USAGE = REPLY_USAGE


def _planner(*replies: dict[str, Any] | AIMessage) -> TaskScriptedModel:
    """A model whose planner calls get these replies, in order, and nothing more."""
    return TaskScriptedModel(scripts={}, planner_replies=list(replies))


def _rt(events: list[Event] | None = None, **settings: Any) -> Runtime[RunSettings]:
    sink: list[Event] = [] if events is None else events
    return node_runtime(RunSettings(**settings), writer=sink.append)


dispatch = Dispatch(eager=False).route


def _never() -> TaskScriptedModel:
    """A model with no script: a planner or subagent call fails the test (ScriptError)."""
    return TaskScriptedModel(scripts={})


def _t(tid: str, *deps: str, **kw: Any) -> dict[str, Any]:
    return {"id": tid, "description": f"do {tid}", "depends_on": list(deps), **kw}


VALID = {"tasks": [_t("a"), _t("b"), _t("c", "a", "b")], "rationale": "two then one"}
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _ok(tid: str, output: str = "", start: float = 0, end: float = 1) -> SubagentResult:
    return SubagentResult(
        task_id=tid,
        status="ok",
        output=output or f"out {tid}",
        started_at=T0 + timedelta(seconds=start),
        ended_at=T0 + timedelta(seconds=end),
        duration_s=end - start,
        usage=Usage(input_tokens=1, output_tokens=1, total_tokens=2),
    )


def _failed(tid: str) -> SubagentResult:
    return SubagentResult(
        task_id=tid,
        status="failed",
        error=ErrorInfo(type="TaskError", message="boom", exception="RuntimeError"),
    )


# --- planner ---------------------------------------------------------------------------


async def test_planner_validates_a_given_plan_without_a_model() -> None:
    events: list[Event] = []
    model = _never()
    given = Plan.model_validate(VALID)
    out = await planner({"request": "x", "given_plan": given}, _rt(events, model=model))
    assert out["plan"] is given
    assert out["usage"].value == Usage() and out["rounds"] == 0
    assert isinstance(out["started_at"], datetime)
    assert model.recorder.planner_calls == []
    assert events == [{"fanfold": "plan_ready", "tasks": 3, "generations": 2}]


async def test_planner_accepts_a_given_plan_as_data() -> None:
    out = await planner({"request": "x", "given_plan": VALID}, _rt(model=_never()))
    assert out["plan"] == Plan.model_validate(VALID)


async def test_planner_rejects_an_invalid_given_plan() -> None:
    cyclic = {"tasks": [_t("a", "b"), _t("b", "a")]}
    with pytest.raises(PlanError, match="cycle"):
        await planner({"request": "x", "given_plan": cyclic}, _rt(model=_never()))
    unknown_tool = Plan(tasks=[Task(id="a", description="x", tools=["shell"])])
    with pytest.raises(PlanError) as info:
        await planner({"request": "x", "given_plan": unknown_tool}, _rt(model=_never()))
    assert "shell" in str(info.value)


async def test_planner_asks_the_model_once_when_the_plan_is_valid() -> None:
    events: list[Event] = []
    model = _planner(VALID)
    out = await planner({"request": "split this"}, _rt(events, model=model, max_tasks=7))
    assert out["plan"] == Plan.model_validate(VALID)
    assert out["usage"].value == Usage(**USAGE)
    [(messages, tools)] = model.recorder.planner_calls
    assert tools == ["Plan"]
    system, user = messages
    assert isinstance(system, SystemMessage) and isinstance(user, HumanMessage)
    assert user.content == "split this"
    for name in [*BUILTIN_KINDS, "calculator", "text_stats", "current_time", "At most 7 tasks"]:
        assert name in system.text
    assert events == [{"fanfold": "plan_ready", "tasks": 3, "generations": 2}]


async def test_planner_prefers_the_planner_model() -> None:
    planner_model = _planner(VALID)
    out = await planner({"request": "x"}, _rt(model=_never(), planner_model=planner_model))
    assert len(out["plan"].tasks) == 3
    assert len(planner_model.recorder.planner_calls) == 1


async def test_planner_repairs_a_plan_that_breaks_a_run_rule() -> None:
    wizard = {"tasks": [_t("a", kind="wizard")]}
    model = _planner(wizard, VALID)
    out = await planner({"request": "x"}, _rt(model=model))
    assert out["plan"] == Plan.model_validate(VALID)
    assert out["usage"].value.total_tokens == 2 * USAGE["total_tokens"]
    (first, _), (second, tools) = model.recorder.planner_calls
    assert tools == ["Plan"]
    # The repair keeps the system and user messages and adds one that names the problem.
    assert second[:2] == first
    repair = second[2]
    assert isinstance(repair, HumanMessage)
    assert "rejected" in repair.text and "`wizard`" in repair.text and "`a`" in repair.text
    assert "Your previous plan" in repair.text and '"wizard"' in repair.text


async def test_planner_repairs_a_plan_that_is_not_a_dag() -> None:
    cyclic = {"tasks": [_t("a", "b"), _t("b", "a")]}
    model = _planner(cyclic, VALID)
    out = await planner({"request": "x"}, _rt(model=model))
    assert len(out["plan"].tasks) == 3
    repair = model.recorder.planner_calls[1].messages[2]
    assert "dependency cycle" in repair.text
    assert "a -> b" in repair.text or "b -> a" in repair.text


async def test_planner_gives_up_after_one_repair() -> None:
    bad = {"tasks": [_t("a"), _t("b", tools=["shell"])]}
    model = _planner(bad, bad)
    with pytest.raises(PlanError) as info:
        await planner({"request": "x"}, _rt(model=model))
    assert len(model.recorder.planner_calls) == 2
    [problem] = info.value.problems
    assert "`b`" in problem and "shell" in problem
    assert info.value.raw is not None and json.loads(info.value.raw) == bad


async def test_planner_fails_when_the_model_writes_no_plan() -> None:
    model = _planner(AIMessage("I'd rather chat."), AIMessage("Still no."))
    with pytest.raises(PlanError, match="no plan") as info:
        await planner({"request": "x"}, _rt(model=model))
    assert info.value.raw == "Still no."
    assert "no plan" in model.recorder.planner_calls[1].messages[2].text


# --- dispatch --------------------------------------------------------------------------

DISPATCH_PLAN = Plan.model_validate(
    {
        "tasks": [
            _t("t1"),
            _t("t2", "t1"),
            _t("t3", timeout_s=5),
            _t("t4", "t1", "t3"),
        ]
    }
)


def test_ready_tasks() -> None:
    plan = DISPATCH_PLAN
    assert [t.id for t in Ledger(plan, []).take_ready()] == ["t1", "t3"]
    assert [t.id for t in Ledger(plan, [_ok("t1")]).take_ready()] == ["t2", "t3"]
    assert [t.id for t in Ledger(plan, [_ok("t1"), _ok("t3")]).take_ready()] == ["t2", "t4"]
    # A failed dependency never makes a task ready.
    assert [t.id for t in Ledger(plan, [_failed("t1"), _ok("t3")]).take_ready()] == []


async def test_dispatch_sends_ready_tasks_with_their_inputs_and_timeouts() -> None:
    state = {"plan": DISPATCH_PLAN, "results": [_ok("t1", "one"), _ok("t3", "three")]}
    sends = await dispatch(state, {}, _rt(task_timeout_s=30))
    assert isinstance(sends, list) and all(isinstance(s, Send) for s in sends)
    assert [s.node for s in sends] == [SUBAGENT, SUBAGENT]
    t2, t4 = sends
    assert t2.arg["task"] == DISPATCH_PLAN.task("t2")
    assert t2.arg["dependency_outputs"] == {"t1": "one"}
    assert t4.arg["dependency_outputs"] == {"t1": "one", "t3": "three"}
    assert t2.timeout is not None and t2.timeout.run_timeout == 30


async def test_dispatch_uses_the_task_timeout_over_the_run_timeout() -> None:
    sends = await dispatch({"plan": DISPATCH_PLAN, "results": []}, {}, _rt(task_timeout_s=30))
    assert isinstance(sends, list)
    t1, t3 = sends
    assert t1.arg["task"].id == "t1" and t1.arg["dependency_outputs"] == {}
    assert t1.timeout is not None and t1.timeout.run_timeout == 30
    assert t3.timeout is not None and t3.timeout.run_timeout == 5


async def test_dispatch_without_any_timeout() -> None:
    [t1, t3] = await dispatch({"plan": DISPATCH_PLAN}, {}, _rt(task_timeout_s=None))
    assert t1.timeout is None
    assert t3.timeout is not None and t3.timeout.run_timeout == 5


async def test_dispatch_goes_to_done_when_nothing_is_ready() -> None:
    everything = [_ok(t.id) for t in DISPATCH_PLAN.tasks]
    assert await dispatch({"plan": DISPATCH_PLAN, "results": everything}, {}, _rt()) == DONE
    blocked = [_failed("t1"), _ok("t3")]
    assert await dispatch({"plan": DISPATCH_PLAN, "results": blocked}, {}, _rt()) == DONE


def test_dispatch_path_map_sends_done_to_its_target() -> None:
    assert dispatch_path_map("synthesize") == {FAN_OUT: SUBAGENT, DONE: "synthesize"}


# --- reducer ---------------------------------------------------------------------------


async def test_reducer_orders_by_plan_and_skips_dependents_of_failures() -> None:
    plan = Plan.model_validate(
        {"tasks": [_t("t1"), _t("t2", "t1"), _t("t3", "t2"), _t("t4"), _t("t5", "t4")]}
    )
    events: list[Event] = []
    state = {
        "plan": plan,
        "results": [_ok("t5", start=1, end=3), _failed("t1"), _ok("t4", start=0, end=2)],
        "rounds": 1,
        "usage": Usage(input_tokens=5, output_tokens=5, total_tokens=10),
        "started_at": T0,
    }
    out = await reducer(state, _rt(events))
    assert isinstance(out["results"], Overwrite)
    results = out["results"].value
    assert [(r.task_id, r.status) for r in results] == [
        ("t1", "failed"),
        ("t2", "skipped"),
        ("t3", "skipped"),
        ("t4", "ok"),
        ("t5", "ok"),
    ]
    t2, t3 = results[1], results[2]
    assert t2.error is not None and "`t1` failed" in t2.error.message
    assert t3.error is not None and "`t2` skipped" in t3.error.message
    assert t2.attempts == 0
    finished = [(e["fanfold"], e["task_id"], e["status"]) for e in events]
    assert finished == [("task_finished", "t2", "skipped"), ("task_finished", "t3", "skipped")]
    assert out["rounds"] == 2
    assert out["status"] == "partial"
    metrics = out["metrics"]
    assert metrics.tasks == 5 and metrics.rounds == 2
    assert metrics.counts == {"ok": 2, "failed": 1, "timed_out": 0, "cancelled": 0, "skipped": 2}
    assert metrics.peak_concurrency == 2
    assert metrics.task_time_s == 4
    assert metrics.tokens.total_tokens == 2 + 2 + 10
    assert metrics.wall_time_s > 0


async def test_reducer_status_ok_when_every_task_is_ok() -> None:
    plan = Plan.model_validate(VALID)
    out = await reducer({"plan": plan, "results": [_ok("c"), _ok("a"), _ok("b")]}, _rt())
    assert [r.task_id for r in out["results"].value] == ["a", "b", "c"]
    assert out["status"] == "ok"
    assert out["rounds"] == 1
    assert out["metrics"].counts["ok"] == 3


async def test_reducer_leaves_status_and_metrics_until_the_plan_is_done() -> None:
    plan = Plan.model_validate(VALID)
    out = await reducer({"plan": plan, "results": [_ok("a")], "rounds": 0}, _rt())
    # Between windows: nothing to add, no O(N) rewrite in plan order, no metrics.
    assert out == {"rounds": 1}


async def test_reducer_appends_skipped_results_between_windows() -> None:
    plan = Plan.model_validate(
        {
            "tasks": [
                {"id": "a", "description": "a"},
                {"id": "b", "description": "b", "depends_on": ["a"]},
                {"id": "c", "description": "c"},
            ]
        }
    )
    out = await reducer({"plan": plan, "results": [_failed("a")], "rounds": 0}, _rt())
    # Appended (not an Overwrite): the subagents' results stay as they were written.
    assert [(r.task_id, r.status) for r in out["results"]] == [("b", "skipped")]
    assert "metrics" not in out


# --- synthesize ------------------------------------------------------------------------


async def test_synthesize_calls_the_model_once_with_every_result() -> None:
    model, never = TaskScriptedModel(scripts={}), _never()
    results = [_ok("a", "alpha out"), _failed("b"), _ok("c", "gamma out")]
    state = {
        "request": "the request",
        "plan": Plan.model_validate(VALID),
        "results": results,
        "usage": Usage(input_tokens=1, output_tokens=1, total_tokens=2),
        "rounds": 2,
        "started_at": T0,
    }
    out = await synthesize(state, _rt(model=never, planner_model=model))
    [(messages, tools)] = model.recorder.synthesizer_calls
    assert never.recorder.synthesizer_calls == []
    assert tools == []
    prompt = messages[-1].text
    assert "the request" in prompt
    for line in ("[a ok] alpha out", "[b failed] TaskError: boom", "[c ok] gamma out"):
        assert line in prompt
    assert out["answer"] == "answer: a=ok, b=failed, c=ok"
    assert out["usage"] == Usage(**USAGE)
    metrics = out["metrics"]
    assert metrics.rounds == 2 and metrics.tasks == 3
    # results + planner + this call
    assert metrics.tokens.total_tokens == 2 + 2 + 2 + USAGE["total_tokens"]
    assert metrics.counts["failed"] == 1


# --- brief -----------------------------------------------------------------------------


async def test_brief_writes_system_and_task_messages() -> None:
    events: list[Event] = []
    task = Task(id="t2", description="compare the two", kind="analyst", depends_on=["t1"])
    out = await brief({"task": task, "dependency_outputs": {"t1": "alpha"}}, _rt(events))
    system, user = out["messages"]
    assert isinstance(system, SystemMessage) and isinstance(user, HumanMessage)
    assert system.content == BUILTIN_KINDS["analyst"].system_prompt
    assert user.text.startswith("Task t2 (analyst): compare the two")
    assert "[t1] alpha" in user.text
    assert out["task"] is task
    assert out["usage"] == Usage() and out["steps"] == 0 and out["tool_calls"] == 0
    assert out["error"] is None
    [event] = events
    assert event["fanfold"] == "task_started"
    assert event["task_id"] == "t2" and event["kind"] == "analyst"
    assert datetime.fromisoformat(event["at"]) == out["started_at"]


async def test_brief_accepts_a_task_as_data_and_an_unknown_kind() -> None:
    out = await brief(
        {"task": {"id": "t1", "description": "x", "kind": "mystery"}},
        _rt(),
    )
    assert out["task"] == Task(id="t1", description="x", kind="mystery")
    assert out["messages"][0].content == BUILTIN_KINDS["general"].system_prompt
    assert "Inputs from" not in out["messages"][1].text


@pytest.mark.parametrize(
    ("round_", "awaits", "waits"), [(1, [], True), (2, [], False), (1, ["t0"], False)]
)
async def test_brief_jitters_only_the_first_burst(
    round_: int, awaits: list[str], waits: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr("fanfold.nodes.brief.asyncio.sleep", sleep)
    task = Task(id="t1", description="x")
    state = {"task": task, "dependency_outputs": {}, "round": round_, "awaits": awaits}
    await brief(state, _rt(start_jitter_s=5))  # type: ignore[arg-type]
    assert len(delays) == (1 if waits else 0)
    assert all(0 <= d <= 5 for d in delays)


# --- act and after_act -----------------------------------------------------------------


async def _briefed(task: Task, runtime: Runtime[RunSettings]) -> dict[str, Any]:
    return dict(await brief({"task": task, "dependency_outputs": {}}, runtime))


def _spec(task: Task, **settings: Any) -> dict[str, Any]:
    """A subagent state as brief leaves it: the task and its resolved spec."""
    return {"task": task, "spec": resolve_task(task, RunSettings(**settings))}


async def test_act_returns_the_reply_and_counts_tool_calls_and_usage() -> None:
    model = TaskScriptedModel(scripts={"t1": TaskScript(latency=0, expression="6 * 7")})
    task = Task(id="t1", description="multiply", tools=["calculator"])
    rt = _rt(model=model)
    state = await _briefed(task, rt)
    out = await act(state, rt)
    [reply] = out["messages"]
    assert isinstance(reply, AIMessage)
    assert [c["name"] for c in reply.tool_calls] == ["calculator"]
    assert out["steps"] == 1 and out["tool_calls"] == 1
    assert out["usage"].total_tokens == 15
    assert model.recorder.calls == {"t1": 1}
    assert after_act({**state, **out, "messages": state["messages"] + out["messages"]}) == (
        "run_tools"
    )


async def test_act_binds_no_tools_for_a_task_without_any() -> None:
    # The script would call the calculator if it were bound; a writer gets no tools.
    model = TaskScriptedModel(scripts={"t1": TaskScript(latency=0, expression="6 * 7")})
    rt = _rt(model=model)
    state = await _briefed(Task(id="t1", description="write", kind="writer"), rt)
    out = await act({**state, "steps": 2, "tool_calls": 3}, rt)
    [reply] = out["messages"]
    assert reply.tool_calls == [] and reply.text == "output of t1:"
    assert out["steps"] == 3 and out["tool_calls"] == 3


async def test_act_turns_a_model_exception_into_an_error() -> None:
    model = TaskScriptedModel(scripts={"t1": TaskScript(latency=0, behaviour="raise")})
    rt = _rt(model=model)
    state = await _briefed(Task(id="t1", description="x"), rt)
    out = await act(state, rt)
    assert out["error"] == ErrorInfo(
        type="ModelError", message="scripted failure for t1", exception="RuntimeError"
    )
    assert out["steps"] == 1
    assert "messages" not in out
    assert after_act({**state, **out}) == "report"


async def test_act_stops_at_max_steps_without_calling_the_model() -> None:
    model = TaskScriptedModel(scripts={})
    rt = _rt(model=model, max_steps=3)
    state = await _briefed(Task(id="t1", description="x"), rt)
    out = await act({**state, "steps": 3}, rt)
    assert out["error"] is not None
    assert out["error"].type == "MaxStepsExceeded"
    assert "max_steps=3" in out["error"].message
    assert model.recorder.calls == {}


def test_after_act_routes() -> None:
    call = {"name": "calculator", "args": {"expression": "1"}, "id": "c1"}
    asks = AIMessage("", tool_calls=[call])
    assert after_act({"messages": [asks], "error": None}) == "run_tools"
    assert after_act({"messages": [AIMessage("done")], "error": None}) == "report"
    err = ErrorInfo(type="TaskError", message="y")
    assert after_act({"messages": [asks], "error": err}) == "report"


async def test_task_tools_follow_the_task_then_its_kind() -> None:
    rt = _rt()
    settings, scope = RunSettings(), scope_of(rt)

    async def names(task: Task) -> list[str]:
        state = {**_spec(task), "depth": 1}
        return [t.name for t in await task_tools(state, settings, scope)]  # type: ignore[arg-type]

    assert await names(Task(id="a", description="x", tools=["text_stats", "calculator"])) == [
        "text_stats",
        "calculator",
    ]
    assert await names(Task(id="a", description="x", kind="writer")) == []
    assert await names(Task(id="a", description="x", kind="general")) == [
        "calculator",
        "current_time",
        "text_stats",
    ]
    assert await names(Task(id="a", description="x", kind="writer", tools=["calculator"])) == [
        "calculator"
    ]


# --- run_tools -------------------------------------------------------------------------


@tool
async def double(x: int) -> str:
    """Double a whole number."""
    return str(2 * x)


@tool
async def flaky(x: int) -> str:
    """Always fail."""
    raise RuntimeError(f"disk on fire at {x}")


async def test_run_tools_runs_good_calls_and_reports_bad_ones() -> None:
    task = Task(id="t1", description="x", tools=["calculator", "double", "flaky"])
    calls = [
        ("calculator", {"expression": "6 * 7"}),
        ("double", {"x": 21}),
        ("shell", {"cmd": "rm -rf /"}),
        ("double", {"x": "many"}),
        ("calculator", {}),
        ("flaky", {"x": 1}),
        ("calculator", {"expression": "1 / 0"}),
        ("text_stats", {"text": "not allowed for this task"}),
    ]
    last = AIMessage(
        "", tool_calls=[{"name": n, "args": a, "id": f"c{i}"} for i, (n, a) in enumerate(calls)]
    )
    state = {**_spec(task, tools=[double, flaky]), "messages": [HumanMessage("go"), last]}
    out = await run_tools(state, _rt(tools=[double, flaky]))
    replies = out["messages"]
    assert [m.tool_call_id for m in replies] == [f"c{i}" for i in range(len(calls))]
    assert [m.name for m in replies] == [n for n, _ in calls]
    good, doubled, unknown, bad_type, missing, raised, zero, not_allowed = replies

    assert (good.content, good.status) == ("42", "success")
    assert (doubled.content, doubled.status) == ("42", "success")

    assert unknown.status == "error"
    assert "unknown tool `shell`" in unknown.text
    assert "['calculator', 'double', 'flaky']" in unknown.text

    assert bad_type.status == "error"
    assert "bad arguments for `double`" in bad_type.text and "x:" in bad_type.text

    assert missing.status == "error"
    assert "bad arguments for `calculator`" in missing.text and "expression" in missing.text

    assert raised.status == "error"
    assert raised.text == "Error: `flaky` failed: RuntimeError: disk on fire at 1"
    assert zero.status == "error" and "ValueError: division by zero" in zero.text

    # The tool exists in the run, but this task may not call it.
    assert not_allowed.status == "error" and "unknown tool `text_stats`" in not_allowed.text


async def test_run_tools_with_the_kind_default_tools() -> None:
    call = {"name": "calculator", "args": {"expression": "2 ** 5"}, "id": "c1"}
    state = {
        **_spec(Task(id="t1", description="x")),
        "messages": [AIMessage("", tool_calls=[call])],
    }
    [reply] = (await run_tools(state, _rt()))["messages"]
    assert reply.content == "32" and reply.status == "success"
    assert calculator.name == reply.name


# --- report ----------------------------------------------------------------------------


def _subagent_state(**kw: Any) -> dict[str, Any]:
    return {
        "task": Task(id="t1", description="x"),
        "messages": [HumanMessage("go"), AIMessage("the output")],
        "started_at": datetime.now(UTC) - timedelta(seconds=1),
        "usage": Usage(input_tokens=4, output_tokens=2, total_tokens=6),
        "tool_calls": 2,
        "error": None,
        **kw,
    }


async def test_report_builds_an_ok_result() -> None:
    events: list[Event] = []
    state = _subagent_state()
    out = await report(state, _rt(events))
    [result] = out["results"]
    assert result.task_id == "t1" and result.status == "ok"
    assert result.output == "the output" and result.error is None
    assert result.usage.total_tokens == 6 and result.tool_calls == 2
    assert result.started_at == state["started_at"]
    assert result.ended_at is not None and result.ended_at >= result.started_at
    assert result.duration_s >= 1
    [event] = events
    assert (event["fanfold"], event["task_id"], event["status"]) == ("task_finished", "t1", "ok")
    assert event["total_tokens"] == 6
    assert SubagentResult.model_validate(event["result"]) == result


async def test_report_builds_a_failed_result() -> None:
    err = ErrorInfo(type="MaxStepsExceeded", message="too many")
    out = await report(_subagent_state(error=err), _rt())
    [result] = out["results"]
    assert result.status == "failed" and result.error == err
    assert result.output == ""  # the last message is not the task's output


async def test_report_raises_under_fail_fast() -> None:
    events: list[Event] = []
    err = ErrorInfo(type="ModelError", message="boom", exception="RuntimeError")
    with pytest.raises(TaskFailedError) as info:
        await report(_subagent_state(error=err), _rt(events, policy="fail_fast"))
    assert info.value.result.task_id == "t1" and info.value.result.status == "failed"
    assert info.value.results == [info.value.result]
    assert "ModelError: boom" in str(info.value)
    assert [e["status"] for e in events] == ["failed"]


async def test_report_does_not_raise_for_ok_under_fail_fast() -> None:
    out = await report(_subagent_state(), _rt(policy="fail_fast"))
    assert out["results"][0].status == "ok"


# --- on_subagent_error -----------------------------------------------------------------


def _timeout(elapsed: float = 2.5) -> NodeTimeoutError:
    return NodeTimeoutError(SUBAGENT, elapsed, kind="run", run_timeout=2.0)


async def test_on_subagent_error_timeout_becomes_timed_out() -> None:
    events: list[Event] = []
    state = {"task": Task(id="t1", description="x"), "dependency_outputs": {}}
    out = await on_subagent_error(state, NodeError(SUBAGENT, _timeout(2.5)), _rt(events))
    # The handler is a node of its own: it must route to the reducer explicitly.
    assert isinstance(out, Command) and out.goto == REDUCER
    [result] = out.update["results"]
    assert result.task_id == "t1" and result.status == "timed_out"
    assert result.duration_s == 2.5
    assert result.started_at is not None and result.ended_at is not None
    assert result.ended_at - result.started_at == timedelta(seconds=2.5)
    assert result.error is not None and result.error.type == "TaskTimeout"
    assert "2s" in result.error.message and "2.500" in result.error.message
    assert [(e["task_id"], e["status"]) for e in events] == [("t1", "timed_out")]


async def test_on_subagent_error_other_exception_becomes_failed() -> None:
    state = {"task": {"id": "t9", "description": "x"}, "dependency_outputs": {}}
    out = await on_subagent_error(state, NodeError(SUBAGENT, KeyError("gone")), _rt())
    assert out.goto == REDUCER
    [result] = out.update["results"]
    assert result.task_id == "t9" and result.status == "failed"
    assert result.error == ErrorInfo(type="TaskError", message="'gone'", exception="KeyError")


async def test_on_subagent_error_under_fail_fast_raises() -> None:
    events: list[Event] = []
    state = {"task": Task(id="t1", description="x"), "dependency_outputs": {}}
    original = RuntimeError("boom")
    with pytest.raises(TaskFailedError) as info:
        await on_subagent_error(
            state, NodeError(SUBAGENT, original), _rt(events, policy="fail_fast")
        )
    assert info.value.__cause__ is original
    assert info.value.result.status == "failed"
    assert info.value.result.error == ErrorInfo(
        type="TaskError", message="boom", exception="RuntimeError"
    )
    assert [e["status"] for e in events] == ["failed"]


async def test_on_subagent_error_raises_a_new_task_failed_error() -> None:
    events: list[Event] = []
    state = {"task": Task(id="t1", description="x"), "dependency_outputs": {}}
    failed = SubagentResult(
        task_id="t1",
        status="failed",
        error=ErrorInfo(type="TaskError", message="boom", exception="RuntimeError"),
    )
    original = TaskFailedError(failed)
    with pytest.raises(TaskFailedError) as info:
        await on_subagent_error(
            state, NodeError(SUBAGENT, original), _rt(events, policy="fail_fast")
        )
    raised = info.value
    assert raised is not original
    assert raised.__cause__ is original
    assert raised.result == failed and raised.results == [failed]
    assert events == []  # report already announced it


# --- binding tools ---------------------------------------------------------------------


def test_bind_tools_binds_once_per_run_model_and_tool_set() -> None:
    model = TaskScriptedModel(scripts={})
    other = TaskScriptedModel(scripts={})
    scope = scope_of(_rt())

    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    first = bind_tools(model, [calculator], scope)
    assert bind_tools(model, [calculator], scope) is first  # the same binding, not re-converted
    assert bind_tools(other, [calculator], scope) is not first  # per model
    both = bind_tools(model, [calculator, echo], scope)
    assert both is not first
    assert [t["function"]["name"] for t in both.kwargs["tools"]] == ["calculator", "echo"]
    assert bind_tools(model, [], scope) is model
    # Per run: another run binds afresh, and nothing of this run's cache is global.
    assert bind_tools(model, [calculator], scope_of(_rt())) is not first
