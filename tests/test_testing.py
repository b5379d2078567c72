"""`fanfold.testing`, the fake model shipped to users: each scripted capability, called directly.

Scripted errors on a task's first calls, tool calls over several turns, a task that
loops on tools, planner replies in order, the planner and synthesizer calls it
records, and that it fails loudly (`ScriptError`) whenever it is asked anything
off-script.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from fanfold import RunSettings, arun
from fanfold.nodes.domain import Plan
from fanfold.testing import REPLY_USAGE, ScriptError, TaskScript, TaskScriptedModel
from fanfold.tools import calculator, text_stats
from tests.helpers import rate_limited


def _task(tid: str) -> HumanMessage:
    return HumanMessage(f"Task {tid} (general): do {tid}")


async def _turn(model: TaskScriptedModel, messages: list[BaseMessage]) -> AIMessage:
    """One model call with the calculator and text_stats bound; the reply is appended."""
    reply = await model.bind_tools([calculator, text_stats]).ainvoke(messages)
    assert isinstance(reply, AIMessage)
    messages.append(reply)
    return reply


def _answer_tools(messages: list[BaseMessage], reply: AIMessage, *results: str) -> None:
    for call, result in zip(reply.tool_calls, results, strict=True):
        messages.append(ToolMessage(result, tool_call_id=call["id"]))


async def test_scripted_errors_are_raised_by_the_first_calls_then_the_script_answers() -> None:
    errors: list[BaseException] = [TimeoutError("first"), ConnectionResetError("second")]
    model = TaskScriptedModel(
        scripts={"a": TaskScript(latency=0, errors=errors), "b": TaskScript(latency=0)}
    )
    for expected in errors:
        with pytest.raises(type(expected)) as caught:
            await model.ainvoke([_task("a")])
        assert caught.value is expected
    assert (await model.ainvoke([_task("b")])).content == "output of b:"  # b has none
    assert (await model.ainvoke([_task("a")])).content == "output of a:"
    assert (await model.ainvoke([_task("a")])).content == "output of a:"
    rec = model.recorder
    assert rec.raised == {"a": 2}
    assert rec.calls == {"a": 2, "b": 1}  # a raised error is not a call the script answered
    assert model.scripts["a"].errors == errors  # the script itself is not used up


async def test_tool_calls_come_in_turns_then_the_answer_quotes_the_results() -> None:
    turns: list[list[tuple[str, dict[str, Any]]]] = [
        [("calculator", {"expression": "6 * 7"})],
        [("text_stats", {"text": "a b"}), ("calculator", {"expression": "1 + 1"})],
    ]
    model = TaskScriptedModel(scripts={"a": TaskScript(latency=0, turns=turns)})
    messages: list[BaseMessage] = [_task("a")]
    first = await _turn(model, messages)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == turns[0]
    _answer_tools(messages, first, "42")
    second = await _turn(model, messages)
    assert [(c["name"], c["args"]) for c in second.tool_calls] == turns[1]
    ids = [c["id"] for c in [*first.tool_calls, *second.tool_calls]]
    assert len(set(ids)) == 3  # every call its own id
    _answer_tools(messages, second, "words=2", "2")
    answer = await _turn(model, messages)
    assert answer.tool_calls == [] and answer.content == "output of a: 42 words=2 2"
    assert [m.text for m in model.recorder.tool_results["a"]] == ["42", "words=2", "2"]
    assert model.recorder.calls == {"a": 3}
    # A conversation with more tool-calling turns than the script has is off-script.
    extra = AIMessage("", tool_calls=[{"name": "calculator", "args": {}, "id": "x"}])
    past = [*messages[:-1], extra, ToolMessage("0", tool_call_id="x")]
    with pytest.raises(ScriptError, match="went past its script"):
        await _turn(model, past)


async def test_a_looping_task_asks_for_its_tool_on_every_turn() -> None:
    model = TaskScriptedModel(
        scripts={
            "loop": TaskScript(latency=0, behaviour="loop", expression="1 + 1"),
            "nothing": TaskScript(latency=0, behaviour="loop"),
        }
    )
    messages: list[BaseMessage] = [_task("loop")]
    for _ in range(4):
        reply = await _turn(model, messages)
        assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
            ("calculator", {"expression": "1 + 1"})
        ]
        _answer_tools(messages, reply, "2")
    assert model.recorder.calls["loop"] == 4
    with pytest.raises(ScriptError, match="no tool to call"):
        await _turn(model, [_task("nothing")])


def test_turns_and_a_one_turn_shorthand_do_not_mix() -> None:
    with pytest.raises(ValueError, match="not both"):
        TaskScript(turns=[[("calculator", {"expression": "1"})]], expression="2")


async def test_the_planner_gets_its_replies_in_order_then_the_plan() -> None:
    first = {"tasks": [{"id": "a", "description": "x", "depends_on": ["a"]}]}
    prose = AIMessage("no plan from me")
    final = {"tasks": [{"id": "b", "description": "y"}]}
    model = TaskScriptedModel(scripts={}, planner_replies=[first, prose], plan=final)
    planner = model.bind_tools([Plan])
    replies = [await planner.ainvoke([HumanMessage(f"plan {i}")]) for i in range(3)]
    assert [r.tool_calls[0]["args"] if r.tool_calls else r.content for r in replies] == [
        first,
        "no plan from me",
        final,
    ]
    assert all(r.usage_metadata == REPLY_USAGE for r in replies)
    assert prose.usage_metadata is None  # the scripted message itself is not changed
    assert [(c.messages[0].text, c.tools) for c in model.recorder.planner_calls] == [
        (f"plan {i}", ["Plan"]) for i in range(3)
    ]
    # Without a `plan`, a call past the replies is off-script.
    once = TaskScriptedModel(scripts={}, planner_replies=[final]).bind_tools([Plan])
    await once.ainvoke([HumanMessage("plan")])
    with pytest.raises(ScriptError, match="none is scripted"):
        await once.ainvoke([HumanMessage("plan again")])


async def test_a_run_records_its_planner_and_synthesizer_calls() -> None:
    plan = {"tasks": [{"id": "a", "description": "x"}, {"id": "b", "description": "y"}]}
    model = TaskScriptedModel(
        scripts={
            "a": TaskScript(),
            "b": TaskScript(errors=[rate_limited(**{"retry-after-ms": "1"})]),
        },
        planner_replies=[{"tasks": [{"id": "a", "description": "x", "kind": "wizard"}]}],
        plan=plan,
    )
    out = await arun("do it", settings=RunSettings(model=model, start_jitter_s=0))
    assert [(r.task_id, r.status, r.attempts) for r in out.results] == [
        ("a", "ok", 1),
        ("b", "ok", 2),
    ]
    rec = model.recorder
    (first, _), (repair, tools) = rec.planner_calls  # the repair round after `wizard`
    assert tools == ["Plan"] and "wizard" in repair[-1].text and repair[:2] == first
    [(_, tools)] = rec.synthesizer_calls
    assert tools == [] and out.answer == "answer: a=ok, b=ok"
    assert rec.raised == {"b": 1} and rec.calls == {"a": 1, "b": 1}


async def test_anything_off_script_fails_loudly() -> None:
    model = TaskScriptedModel(scripts={"a": TaskScript(latency=0)})
    with pytest.raises(ScriptError, match="no script for this conversation"):
        await model.ainvoke([_task("unknown")])
    with pytest.raises(ScriptError, match="none is scripted"):
        await model.bind_tools([Plan]).ainvoke([HumanMessage("plan")])
    with pytest.raises(ScriptError, match="async only"):
        model.invoke([_task("a")])
