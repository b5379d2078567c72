"""The model seam (`load_chat_model`) and the offline demo model."""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI

from fanfold.nodes.demo_model import DEFAULT_DEMO_LATENCY_S, DEMO_LABEL, DemoChatModel, demo_plan
from fanfold.nodes.domain import ErrorInfo, Plan, SubagentResult, validate_plan
from fanfold.nodes.kinds import BUILTIN_KINDS
from fanfold.nodes.models import load_chat_model
from fanfold.nodes.prompts import synthesis_prompt
from fanfold.tools import calculator, default_registry

# --- load_chat_model -------------------------------------------------------------------


def test_demo_spec() -> None:
    model = load_chat_model("demo")
    assert isinstance(model, DemoChatModel)
    assert model.latency == DEFAULT_DEMO_LATENCY_S


def test_demo_spec_reads_latency() -> None:
    model = load_chat_model("demo:latency=0.25")
    assert isinstance(model, DemoChatModel)
    assert model.latency == 0.25


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("demo:speed=2", "`speed`"),
        ("demo:latency=0.1,colour=red", "`colour`"),
        ("demo:latency=slow", "`slow`"),
        ("demo:latency=", "latency"),
        ("demo:latency=-1", "`-1`"),
        ("demo:cpu=lots", "demo cpu `lots`"),
        ("demo:cpu=", "demo cpu"),
        ("demo:cpu=-0.5", "demo cpu `-0.5`"),
    ],
)
def test_bad_demo_options_name_the_option(spec: str, named: str) -> None:
    with pytest.raises(ValueError) as info:
        load_chat_model(spec)
    assert named in str(info.value)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_demo_latency_must_be_finite(value: str) -> None:
    # With `inf` every async call would hang (sync: OverflowError); with NaN sync
    # calls would raise ValueError.
    with pytest.raises(ValueError, match="latency"):
        load_chat_model(f"demo:latency={value}")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_demo_cpu_must_be_finite(value: str) -> None:
    with pytest.raises(ValueError, match=f"demo cpu `{value}` is not a finite number"):
        load_chat_model(f"demo:cpu={value}")


def test_unknown_demo_option_lists_cpu() -> None:
    with pytest.raises(ValueError, match="known: latency, cpu, log, fail, hang"):
        load_chat_model("demo:speed=2")


def test_demo_cpu_burns_cpu_in_each_call() -> None:
    model = load_chat_model("demo:latency=0,cpu=0.05")
    assert isinstance(model, DemoChatModel)
    assert (model.cpu, model.latency) == (0.05, 0.0)
    prompt = [HumanMessage("Task t1 (general): count the words")]
    for call in (model.invoke, lambda m: asyncio.run(model.ainvoke(m))):
        before = time.process_time()
        call(prompt)
        assert time.process_time() - before >= 0.05


def test_openai_spec_with_base_url() -> None:
    model = load_chat_model("openai:gpt-x@http://127.0.0.1:9/v1")
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "gpt-x"
    assert model.openai_api_base == "http://127.0.0.1:9/v1"
    assert model.stream_usage is True
    assert isinstance(model.request_timeout, int | float) and 0 < model.request_timeout <= 120
    assert 0 <= model.max_retries <= 3
    # A local server needs no real key, but the client must not look for one.
    assert model.openai_api_key is not None


def test_openai_spec_honours_openai_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8/v1")
    model = load_chat_model("openai:x")
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "x"
    assert model.openai_api_base == "http://127.0.0.1:8/v1"


def test_base_url_in_the_spec_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8/v1")
    model = load_chat_model("openai:x@http://127.0.0.1:9/v1")
    assert isinstance(model, ChatOpenAI)
    assert model.openai_api_base == "http://127.0.0.1:9/v1"


def test_openai_spec_with_a_key_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    model = load_chat_model("openai:gpt-x")
    assert isinstance(model, ChatOpenAI)
    assert model.openai_api_key is not None
    assert model.openai_api_key.get_secret_value() == "sk-test"


def test_openai_spec_without_key_or_base_url() -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        load_chat_model("openai:gpt-x")


@pytest.mark.parametrize("spec", ["anthropic:claude", "gpt-4o", "", "openai:"])
def test_unknown_or_incomplete_spec(spec: str) -> None:
    with pytest.raises(ValueError, match="spec"):
        load_chat_model(spec)


def test_non_string_spec_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="`int`"):
        load_chat_model(3)  # type: ignore[arg-type]


def test_a_chat_model_passes_through() -> None:
    model = DemoChatModel(latency=0)
    assert load_chat_model(model) is model


def test_same_spec_same_instance() -> None:
    a = load_chat_model("openai:gpt-x@http://127.0.0.1:9/v1")
    assert load_chat_model("openai:gpt-x@http://127.0.0.1:9/v1") is a
    assert load_chat_model(" openai:gpt-x@http://127.0.0.1:9/v1 ") is a
    assert load_chat_model("openai:gpt-y@http://127.0.0.1:9/v1") is not a
    assert load_chat_model("demo") is load_chat_model("demo")


# --- the demo model --------------------------------------------------------------------


def _fast() -> DemoChatModel:
    return DemoChatModel(latency=0)


def test_demo_plan_is_a_valid_plan_with_dependencies() -> None:
    data = demo_plan("price of apples, cost of 3 * 4 pears and weather in Paris")
    plan = validate_plan(
        Plan.model_validate(data),
        kinds=BUILTIN_KINDS,
        tools=default_registry().names(),
        max_tasks=50,
    )
    parts = ["t1", "t2", "t3"]
    assert [t.id for t in plan.tasks] == [*parts, "compare", "report"]
    assert plan.task("compare").depends_on == parts
    assert plan.task("report").depends_on == ["compare"]
    assert plan.task("t2").kind == "analyst" and plan.task("t2").tools == ["calculator"]
    assert plan.task("t1").tools == ["text_stats"]
    assert plan.generations() == [parts, ["compare"], ["report"]]


def test_demo_plan_of_a_single_part_has_one_task() -> None:
    plan = Plan.model_validate(demo_plan("what is 2 + 2?"))
    assert [t.id for t in plan.tasks] == ["t1"]
    assert plan.tasks[0].depends_on == []


@pytest.mark.timeout(10)  # linear: milliseconds; the backtracking pattern took minutes
@pytest.mark.parametrize(
    ("text", "arithmetic"),
    [
        ("1" * 200_000, False),
        ("1" * 100_000 + " + " + "2" * 100_000, True),
        (("1" * 999 + "+") * 200, True),
        ("1" * 200_000 + "+", False),
        ("1." * 100_000, False),
        ("1" + " " * 200_000 + "x", False),
    ],
    ids=["digits", "two-numbers", "many-operators", "trailing-operator", "dots", "spaces"],
)
def test_demo_reads_arithmetic_in_linear_time(text: str, arithmetic: bool) -> None:
    # 200 KB of digits: each digit used to start a scan to the end of the run.
    [task] = demo_plan(text)["tasks"]
    assert (task["kind"] == "analyst") is arithmetic
    calculator = {"type": "function", "function": {"name": "calculator", "parameters": {}}}
    calls = _fast()._tool_calls(text, text, [calculator])
    assert len(calls) == int(arithmetic)


async def test_demo_structured_output_returns_a_plan() -> None:
    plan = await _fast().with_structured_output(Plan).ainvoke("compare cats and dogs")
    assert isinstance(plan, Plan)
    assert plan == Plan.model_validate(demo_plan("compare cats and dogs"))


def _task_messages() -> list[SystemMessage | HumanMessage]:
    return [SystemMessage("be useful"), HumanMessage("Task t1 (analyst): estimate 3 * 4")]


async def test_demo_calls_the_calculator_then_answers_from_it() -> None:
    bound = _fast().bind_tools([calculator])
    messages = _task_messages()
    first = await bound.ainvoke(messages)
    assert isinstance(first, AIMessage)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [
        ("calculator", {"expression": "3 * 4"})
    ]
    assert first.usage_metadata is not None and first.usage_metadata["total_tokens"] > 0

    call = first.tool_calls[0]
    result = await calculator.ainvoke(call["args"])
    tool_message = ToolMessage(result, tool_call_id=call["id"] or "", name="calculator")
    second = await bound.ainvoke([*messages, first, tool_message])
    assert isinstance(second, AIMessage)
    assert not second.tool_calls
    assert second.text.startswith(DEMO_LABEL)
    assert second.text.endswith("calculator -> 12")
    usage = second.usage_metadata
    assert usage is not None
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0


async def test_demo_without_tools_answers_directly() -> None:
    reply = await _fast().ainvoke(_task_messages())
    assert not reply.tool_calls
    assert reply.text.startswith(DEMO_LABEL)


async def test_demo_synthesizes_from_results() -> None:
    results = [
        SubagentResult(task_id="t1", status="ok", output="twelve"),
        SubagentResult(
            task_id="t2", status="failed", error=ErrorInfo(type="TaskError", message="x")
        ),
    ]
    reply = await _fast().ainvoke([HumanMessage(synthesis_prompt("do it", results))])
    assert reply.text.startswith(f"{DEMO_LABEL} Answer to: do it")
    assert "1 of 2 tasks ended ok" in reply.text


async def test_demo_latency_is_honoured() -> None:
    model = DemoChatModel(latency=0.1)
    started = time.monotonic()
    await model.ainvoke("hello")
    # At least the latency (with a hair for clock resolution); no upper bound.
    assert time.monotonic() - started >= 0.1 - 0.005
