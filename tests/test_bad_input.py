"""Bad input from the model: broken plans, misused tools, endless tool calls.

Fakes sit only at the model boundary: the task-keyed fake of `tests.fakes`. Its
`planner_replies` answer the planner's `with_structured_output(Plan, include_raw=True)`
call the way a provider does: a `Plan` tool call whose arguments are the fuzzed value
(arguments that are not a JSON object, or not JSON at all, arrive as an invalid tool
call, as LangChain's parsers report them). A real ChatOpenAI does not get that far
with arguments that are JSON but not an object: it raises while building the
message, which the HTTP test below covers.
"""

from __future__ import annotations

import asyncio
import graphlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.runtime import Runtime

from fanfold import RunSettings, Task, execute_tasks_parallel
from fanfold.nodes.domain import Plan
from fanfold.nodes.errors import PlanError
from fanfold.nodes.kinds import BUILTIN_KINDS
from fanfold.nodes.models import aclose_models
from fanfold.nodes.planner import planner
from fanfold.tools import default_registry
from tests.fakes import TaskScript, TaskScriptedModel, node_runtime
from tests.openai_server import ScriptedOpenAI

KINDS = sorted(BUILTIN_KINDS)
TOOLS = sorted(default_registry().names())
MAX_TASKS = 50


# --- the planner's replies -----------------------------------------------------------------


def plan_reply(args: Any, *, name: str = "Plan") -> AIMessage:
    """A tool call as a provider returns it: an object in `tool_calls`, else invalid."""
    if isinstance(args, dict):
        return AIMessage("", tool_calls=[{"name": name, "args": args, "id": "call_1"}])
    raw = args if isinstance(args, str) else json.dumps(args)
    return AIMessage(
        "",
        invalid_tool_calls=[
            {"name": name, "args": raw, "id": "call_1", "error": "not a JSON object"}
        ],
    )


def _runtime(**kw: Any) -> Runtime[RunSettings]:
    return node_runtime(RunSettings(**kw))


async def _plan(replies: list[AIMessage]) -> tuple[Plan | PlanError, list[list[BaseMessage]]]:
    """Run the planner node on the scripted replies: a plan, or the PlanError it raised.

    Also returns the messages of each planner call. A call past the replies fails loudly.
    """
    model = TaskScriptedModel(scripts={}, planner_replies=list(replies))
    calls = model.recorder.planner_calls
    try:
        out = await planner({"request": "split this"}, _runtime(model=model, max_tasks=MAX_TASKS))
    except PlanError as exc:
        return exc, [c.messages for c in calls]
    return out["plan"], [c.messages for c in calls]


def assert_runnable(plan: Plan) -> None:
    """Check, without Fanfold's own validation, that a plan can run."""
    ids = [t.id for t in plan.tasks]
    assert 1 <= len(ids) <= MAX_TASKS
    assert len(set(ids)) == len(ids)
    assert all(1 <= len(i) <= 64 for i in ids)
    for t in plan.tasks:
        assert t.description
        assert t.kind in BUILTIN_KINDS
        assert set(t.tools or []) <= set(TOOLS)
        assert t.id not in t.depends_on and set(t.depends_on) <= set(ids)
        assert t.timeout_s is None or t.timeout_s > 0
    order = list(
        graphlib.TopologicalSorter({t.id: t.depends_on for t in plan.tasks}).static_order()
    )
    assert sorted(order) == sorted(ids)  # static_order raises CycleError on a cycle


# --- strategies ------------------------------------------------------------------------------

ODD_IDS = [
    "",
    " ",
    "t 1",
    "\u200b",  # zero-width space
    "t\u0301",  # combining accent
    "\u202eevil",  # right-to-left override
    "\x00",
    "ﬁ",  # a ligature that NFKC turns into "fi"
    "fi",
    "𝔱1",
    "🙂",
    "Ω" * 64,
    "Ω" * 65,
    "x" * 200,
    "t1\nt2",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
ids = (
    st.sampled_from(ODD_IDS) | st.sampled_from(["t1", "t2", "t3", "a", "b"]) | st.text(max_size=70)
)


@st.composite
def plan_like(draw: st.DrawFn) -> Any:
    """Plan-shaped data: random dependency graphs (cycles, self and unknown dependencies),
    odd unicode ids, unknown kinds and tools, and wrong types in any field."""
    task_ids = draw(st.lists(ids, max_size=8))
    refs = st.sampled_from([*task_ids, "ghost"])
    tasks: list[Any] = []
    for tid in task_ids:
        task: dict[str, Any] = {
            "id": tid,
            "description": draw(st.sampled_from(["do it", ""]) | st.text(max_size=8)),
            "kind": draw(st.sampled_from([*KINDS, "wizard", ""])),
            "depends_on": draw(st.lists(refs, max_size=3)),
            "tools": draw(st.none() | st.lists(st.sampled_from([*TOOLS, "shell"]), max_size=3)),
            "timeout_s": draw(st.none() | st.floats() | st.integers(-3, 3)),
        }
        for key in draw(st.lists(st.sampled_from(sorted(task)), max_size=2, unique=True)):
            if draw(st.booleans()):
                del task[key]  # a missing field
            else:
                task[key] = draw(json_values)  # a wrong type, usually
        tasks.append(task if draw(st.integers(0, 9)) else draw(json_values))
    plan: dict[str, Any] = {"tasks": tasks, "rationale": draw(st.text(max_size=10))}
    if not draw(st.integers(0, 14)):
        plan["tasks"] = draw(json_values)
    return plan


@st.composite
def valid_plans(draw: st.DrawFn) -> dict[str, Any]:
    """Plans that must be accepted: a DAG by construction, known kinds and tools."""
    n = draw(st.integers(1, 8))
    tasks = []
    for i in range(n):
        earlier = [f"v{j}" for j in range(i)]
        tasks.append(
            {
                "id": f"v{i}",
                "description": f"step {i}",
                "kind": draw(st.sampled_from(KINDS)),
                "depends_on": draw(st.lists(st.sampled_from(earlier), unique=True))
                if earlier
                else [],
                "tools": draw(st.none() | st.lists(st.sampled_from(TOOLS), unique=True)),
            }
        )
    return {"tasks": tasks, "rationale": "valid"}


def _t(tid: str, *deps: str, **kw: Any) -> dict[str, Any]:
    return {"id": tid, "description": f"do {tid}", "depends_on": list(deps), **kw}


GOOD = {"tasks": [_t("a"), _t("b"), _t("c", "a", "b")]}


def _flat(n: int, prefix: str = "t") -> dict[str, Any]:
    return {"tasks": [{"id": f"{prefix}{i}", "description": "x"} for i in range(n)]}


replies = st.one_of(
    plan_like().map(plan_reply),
    json_values.map(plan_reply),
    valid_plans().map(plan_reply),
    st.integers(MAX_TASKS + 1, 2_000).map(lambda n: plan_reply(_flat(n))),  # 10,000: below
    st.just(plan_reply({"tasks": []})),
    st.text(max_size=30).map(AIMessage),  # prose, no tool call
    plan_like().map(lambda p: plan_reply(json.dumps(p)[: max(1, len(json.dumps(p)) // 2)])),
    valid_plans().map(lambda p: plan_reply(p, name="NotPlan")),
)


# --- the planner under fuzzed output -------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=replies, second=replies)
@example(first=plan_reply(_flat(10_000)), second=plan_reply(_flat(10_000)))
@example(first=plan_reply(_flat(10_000)), second=plan_reply(GOOD))
def test_fuzzed_planner_output_gives_a_valid_plan_or_plan_error(
    first: AIMessage, second: AIMessage
) -> None:
    outcome, calls = asyncio.run(_plan([first, second]))
    assert 1 <= len(calls) <= 2
    event(f"{type(outcome).__name__} after {len(calls)} call(s)")
    if isinstance(outcome, PlanError):
        assert len(calls) == 2, "gave up without the repair round"
        assert outcome.problems and all(isinstance(p, str) and p for p in outcome.problems)
    else:
        assert_runnable(outcome)
        answered = (first, second)[len(calls) - 1]
        assert outcome == Plan.model_validate(answered.tool_calls[0]["args"])
    if len(calls) == 2:
        # The repair keeps the request and adds one message naming the problems.
        assert calls[1][:2] == calls[0]
        assert "Your plan was rejected" in calls[1][2].text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad=plan_like() | json_values, good=valid_plans())
def test_a_valid_plan_after_an_invalid_one_is_accepted(bad: Any, good: dict[str, Any]) -> None:
    outcome, calls = asyncio.run(_plan([plan_reply(bad), plan_reply(good)]))
    assert not isinstance(outcome, PlanError), outcome
    assert_runnable(outcome)
    if len(calls) == 1:  # the random one happened to be valid
        assert outcome == Plan.model_validate(bad)
    else:
        assert outcome == Plan.model_validate(good)


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"tasks": [_t("a", "b"), _t("b", "c"), _t("c", "a")]}, "dependency cycle"),
        ({"tasks": [_t("a", "a")]}, "`a` depends on itself"),
        ({"tasks": [_t("a", "ghost")]}, "unknown task(s) ['ghost']"),
        ({"tasks": [_t("a"), _t("a")]}, "duplicate task ids"),
        (_flat(10_000), "10000 tasks exceed max_tasks=50"),
        ({"tasks": []}, "the plan has no tasks"),
        ({"tasks": [_t("")]}, "at least 1 character"),
        ({"tasks": [_t("Ω" * 65)]}, "at most 64 characters"),
        ({"tasks": [_t("a", kind="wizard")]}, "unknown agent kind `wizard`"),
        ({"tasks": [_t("a", tools=["shell"])]}, "unknown tool(s) ['shell']"),
        ({"tasks": "all of them"}, "valid list"),
        ({"tasks": [{"id": 7, "description": ["x"]}]}, "valid string"),
        ({"tasks": [_t("a", timeout_s=-1)]}, "greater than 0"),
        ([1, 2, 3], "no plan"),
        ('{"tasks": [{"id": "a", "descr', "no plan"),
    ],
)
async def test_each_kind_of_broken_plan_is_named_then_repaired(bad: Any, needle: str) -> None:
    outcome, calls = await _plan([plan_reply(bad), plan_reply(bad)])
    assert isinstance(outcome, PlanError)
    assert needle in str(outcome)
    assert len(calls) == 2 and needle in calls[1][2].text
    repaired, calls = await _plan([plan_reply(bad), plan_reply(GOOD)])
    assert repaired == Plan.model_validate(GOOD) and len(calls) == 2


async def test_odd_unicode_ids_that_fit_the_rules_are_kept_as_written() -> None:
    odd = ["t 1", "\u200b", "t\u0301", "\u202eevil", "ﬁ", "fi", "𝔱1", "🙂", "Ω" * 64]
    tasks = [_t(i) for i in odd] + [_t("end", *odd)]
    outcome, calls = await _plan([plan_reply({"tasks": tasks})])
    assert isinstance(outcome, Plan) and len(calls) == 1
    assert [t.id for t in outcome.tasks] == [*odd, "end"]
    assert outcome.generations() == [odd, ["end"]]


async def test_prose_instead_of_a_plan_then_nothing_is_a_plan_error() -> None:
    prose = "Sure! Here is my plan: do everything, {first} the hard part."
    outcome, _ = await _plan([AIMessage(prose), AIMessage(prose)])
    assert isinstance(outcome, PlanError)
    assert outcome.problems == [
        "the model returned no plan (neither a tool call nor JSON in its text)"
    ]
    assert outcome.raw == prose  # what the model said, for the user to see
    assert "do everything" in str(outcome)


@pytest.mark.parametrize(
    "text",
    [
        'Here you go:\n```json\n{"tasks": [{"id": "a", "description": "x"}]}\n```\nGood luck.',
        '```\n[{"id": "a", "description": "x"}]\n```',
        'I would split it as {"tasks": [{"id": "a", "description": "x"}], "rationale": "r"} ok?',
        'Step [1] first. Plan: [{"id": "a", "description": "x"}] - done.',
    ],
    ids=["fenced-json", "fenced-list", "in-prose", "list-after-a-bracket"],
)
async def test_a_json_plan_in_the_text_of_a_reply_is_accepted(text: str) -> None:
    outcome, calls = await _plan([AIMessage(text)])
    assert isinstance(outcome, Plan), outcome
    assert [t.id for t in outcome.tasks] == ["a"] and len(calls) == 1


async def test_a_json_plan_in_text_that_breaks_the_rules_gets_the_repair_round() -> None:
    cyclic = '{"tasks": [{"id": "a", "description": "x", "depends_on": ["a"]}]}'
    outcome, calls = await _plan([AIMessage(cyclic), AIMessage(f"fixed: {json.dumps(GOOD)}")])
    assert isinstance(outcome, Plan) and len(calls) == 2
    # The text plan did not validate: the repair round says why.
    assert "depends on itself" in calls[1][2].text


@pytest.mark.http
@pytest.mark.parametrize("arguments", [[1, 2, 3], "a plan", 42])
async def test_plan_arguments_that_are_not_an_object_over_http_get_the_repair_round(
    arguments: Any,
) -> None:
    """A real ChatOpenAI, told by the server that the `Plan` arguments are `[1, 2, 3]`.

    langchain-openai cannot build a message from such a tool call: it raises
    pydantic's ValidationError from `ainvoke`, before any output parser runs. That is
    still the planner model's mistake, so it must get the repair round.
    """
    server = ScriptedOpenAI(latency_s=0).start()
    server.plan = arguments  # type: ignore[assignment]  # deliberately not an object
    server.repaired_plan = GOOD
    try:
        out = await planner({"request": "split this"}, _runtime(model=server.spec()))
        assert out["plan"] == Plan.model_validate(GOOD)
        assert len(server.rejections) == 1
    finally:
        await aclose_models()
        server.stop()
    assert server.errors == []


# --- tools misused, through a whole run ------------------------------------------------------


def _calc(**args: Any) -> tuple[str, dict[str, Any]]:
    return ("calculator", args)


async def test_bad_tool_arguments_and_unknown_tools_go_back_to_the_model() -> None:
    good = _calc(expression="6 * 7")
    turns = {
        "missing": [[_calc(expr="6 * 7")], [good]],
        "wrong_type": [[_calc(expression=["6", "*", "7"])], [good]],
        "unknown": [[("shell", {"cmd": "rm -rf /"})], [good]],
        "not_allowed": [[("text_stats", {"text": "hi"})], [good]],
        "all_at_once": [[("web_search", {}), _calc(), good]],
    }
    model = TaskScriptedModel(scripts={t: TaskScript(latency=0, turns=v) for t, v in turns.items()})
    tasks = [
        Task(id=tid, description="compute 6 * 7", kind="analyst", tools=["calculator"])
        for tid in turns
    ]
    results = await execute_tasks_parallel(tasks, model=model, max_concurrency=5)
    assert [r.task_id for r in results] == list(turns)
    assert all(r.status == "ok" for r in results), [(r.task_id, r.error) for r in results]
    by_id = {r.task_id: r for r in results}

    rec = model.recorder

    def errors(task_id: str) -> list[str]:
        # The tool replies in the conversation of the task's last model call.
        return [m.text for m in rec.tool_results[task_id] if m.status == "error"]

    for tid in ("missing", "wrong_type", "unknown", "not_allowed"):
        # One bad call, its error shown to the model, then a good call and an answer.
        assert rec.calls[tid] == 3
        assert len(errors(tid)) == 1
        assert by_id[tid].tool_calls == 2
        assert rec.tool_results[tid][-1].text == "42"
        assert by_id[tid].output.endswith(" 42"), by_id[tid].output
    assert "bad arguments for `calculator`" in errors("missing")[0]
    assert "expression" in errors("missing")[0]
    assert "bad arguments for `calculator`" in errors("wrong_type")[0]
    for tid, name in (("unknown", "shell"), ("not_allowed", "text_stats")):
        assert f"unknown tool `{name}`" in errors(tid)[0]
        assert "['calculator']" in errors(tid)[0]  # the tools it may use
    # Three calls in one turn: two fail, one works, all three answered in call order.
    assert rec.calls["all_at_once"] == 2
    turn = rec.tool_results["all_at_once"]  # the first call had none
    assert [m.status for m in turn] == ["error", "error", "success"]
    assert "unknown tool `web_search`" in turn[0].text
    assert "bad arguments for `calculator`" in turn[1].text and turn[2].text == "42"
    assert by_id["all_at_once"].tool_calls == 3


async def test_a_model_that_never_stops_calling_tools_is_stopped_at_max_steps() -> None:
    model = TaskScriptedModel(
        scripts={
            "fine": TaskScript(latency=0, expression="2 + 2"),
            "forever": TaskScript(latency=0, behaviour="loop", expression="1 + 1"),
        }
    )
    tasks = [
        Task(id=tid, description="add", kind="analyst", tools=["calculator"])
        for tid in ("forever", "fine")
    ]
    results = await execute_tasks_parallel(
        tasks, model=model, max_concurrency=2, settings=RunSettings(max_steps=5)
    )
    forever, fine = results
    assert forever.status == "failed" and forever.error is not None
    assert forever.error.type == "MaxStepsExceeded"
    assert "max_steps=5" in forever.error.message
    assert "still asked for tools" in forever.error.message
    assert model.recorder.calls["forever"] == 5 and forever.tool_calls == 5
    assert forever.usage.total_tokens == 5 * 15
    # Its sibling is unaffected (settle).
    assert fine.status == "ok" and fine.output == "output of fine: 4"
