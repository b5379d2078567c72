"""planner: turn the request into a validated plan (one repair round)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from pydantic import BaseModel, ValidationError

from fanfold.nodes.calls import call_model
from fanfold.nodes.context import RunSettings, quorum_of, settings_of
from fanfold.nodes.delegation import DELEGATE
from fanfold.nodes.domain import ErrorInfo, Plan, Usage, validate_plan
from fanfold.nodes.errors import BudgetExceeded, PlanError, QuorumUnreachable
from fanfold.nodes.events import now, plan_ready
from fanfold.nodes.metrics import compute_metrics
from fanfold.nodes.prompts import PLAN_REPAIR, PLANNER_SYSTEM
from fanfold.nodes.resolve import planner_model
from fanfold.nodes.scope import RunScope, scope_of
from fanfold.nodes.state import OrchestratorState, OrchestratorUpdate
from fanfold.nodes.usage import usage_of
from fanfold.tools.registry import ToolRegistry

REPAIR_ROUNDS = 1
MAX_JSON_STARTS = 20
"""Where a reply's text holds no fenced block, how many `{` / `[` to try parsing from."""

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


async def planner(state: OrchestratorState, runtime: Runtime[RunSettings]) -> OrchestratorUpdate:
    """Write the plan: validate a given one, or ask the planner model for one."""
    settings = settings_of(runtime.context)
    scope = scope_of(runtime)
    started = now()
    # Dynamic tools are known before the plan is checked (starting MCP servers takes
    # time: a wall-time budget bounds it).
    try:
        await scope.race(scope.registry.arefresh(stats=scope.tool_stats))
    except BudgetExceeded:
        return stopped_before_planning(started=started, settings=settings, scope=scope)
    given = state.get("given_plan")
    if given is not None:
        plan = check_plan(_coerce_plan(given), settings, scope.registry)
        usage = Usage()
    else:
        try:
            plan, usage = await make_plan(
                planner_model(settings), state["request"], settings, scope
            )
        except BudgetExceeded:
            return stopped_before_planning(started=started, settings=settings, scope=scope)
    plan_ready(runtime.stream_writer, len(plan.tasks), len(plan.generations()))
    return planned(plan, started=started, usage=usage, settings=settings)


def stopped_before_planning(
    *, started: datetime, settings: RunSettings, scope: RunScope
) -> OrchestratorUpdate:
    """Return the state of a run whose budget ran out while it planned: no plan, no task."""
    why = scope.stop_error() or ErrorInfo(type="BudgetExceeded", message="run budget spent")
    spent = Usage(total_tokens=scope.tokens)  # the planner's calls, as the scope counted them
    return {
        "given_plan": None,
        "plan": None,
        "results": Overwrite([]),
        "started_at": started,
        "usage": Overwrite(spent),
        "settings": settings.to_json(),
        "status": "budget_exceeded",
        "answer": "",
        "stopped": why,
        "metrics": compute_metrics(
            [], tasks=0, started_at=started, overhead=spent, rounds=0, scope=scope, stopped=why
        ),
    }


def planned(
    plan: Plan, *, started: datetime, usage: Usage, settings: RunSettings
) -> OrchestratorUpdate:
    """Return the state update that starts a run on `plan`.

    A thread may hold an earlier run: everything of that run is reset here.

    Raises:
        QuorumUnreachable: `quorum:K` with fewer than K tasks and no planning round left
            to add more.
    """
    k = quorum_of(settings.policy)
    if k is not None and len(plan.tasks) < k and settings.max_rounds == 1:
        msg = f"quorum of {k} is out of reach: the plan has {len(plan.tasks)} tasks"
        raise QuorumUnreachable(msg)
    return {
        "given_plan": None,
        "plan": plan,
        "results": Overwrite([]),
        "started_at": started,
        "rounds": 0,
        "plan_round": 1,
        "replan_done": False,
        "usage": Overwrite(usage),
        "settings": settings.to_json(),
        "status": "",
        "answer": "",
        "rejection": "",
        "stopped": None,
    }


def check_plan(plan: Plan, settings: RunSettings, registry: ToolRegistry) -> Plan:
    """Validate a plan against the run's kinds, tools and size limit.

    Raises:
        PlanError: naming every broken rule.
    """
    known = registry.names() + ([DELEGATE] if settings.max_depth > 1 else [])
    # A name of a tool not loaded yet (its MCP server was never reached) passes: the
    # task gets a stand-in that tells the model so, or the tool once the server is up.
    named = {n for t in plan.tasks for n in t.tools or []}
    known += [n for n in named.difference(known) if registry.stand_in(n) is not None]
    return validate_plan(
        plan, kinds=settings.agent_kinds(), tools=known, max_tasks=settings.max_tasks
    )


def _coerce_plan(value: Plan | dict[str, Any]) -> Plan:
    if isinstance(value, Plan):
        return value
    try:
        return Plan.model_validate(value)
    except ValidationError as exc:
        raise PlanError([_first_lines(exc)]) from exc


def _first_lines(exc: ValidationError) -> str:
    return "; ".join(str(e["msg"]) for e in exc.errors()[:5])


def _structured(model: BaseChatModel, schema: type[BaseModel]) -> Any:
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI
    except ImportError:  # pragma: no cover - langchain-openai is a dependency
        BaseChatOpenAI = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(model, BaseChatOpenAI):
        # Tool calling accepts any JSON schema; OpenAI's strict json_schema mode
        # rejects optional fields with defaults.
        return model.with_structured_output(schema, include_raw=True, method="function_calling")
    return model.with_structured_output(schema, include_raw=True)


def kinds_and_tools(settings: RunSettings, registry: ToolRegistry) -> dict[str, str]:
    """Return the kinds and tools a planning prompt lists, as text."""
    kinds = settings.agent_kinds()
    tools = [(t.name, t.description) for t in registry.resolve(None)]
    if settings.max_depth > 1:
        tools.append((DELEGATE, "run sub-tasks in parallel, one subagent each"))
    return {
        "kinds": "\n".join(f"- {k.name}: {k.description}" for k in kinds.values()),
        "tools": "\n".join(f"- {name}: {desc}" for name, desc in tools),
    }


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)


def parse_text_reply(text: str, schema: type[M]) -> M | ValidationError | None:
    """Return the `schema` object a plain-text reply holds as JSON, if any.

    Accepts a fenced block (```json ... ```) or JSON inside prose; for a plan, a
    bare list of tasks too. Raises nothing: when JSON objects were found but none
    validates, returns the first one's validation error (for the repair round);
    None when the text holds no JSON object at all.
    """
    blocks = _FENCE.findall(text)
    first_error: ValidationError | None = None
    for candidate in _json_values(blocks) if blocks else _json_in_prose(text):
        if isinstance(candidate, list):
            candidate = {"tasks": candidate}
        if not isinstance(candidate, dict):
            continue
        try:
            return schema.model_validate(candidate)
        except ValidationError as exc:
            first_error = first_error or exc
    return first_error


def _json_values(blocks: list[str]) -> Iterator[Any]:
    for block in blocks:
        try:
            yield json.loads(block)
        except ValueError:
            continue


def _json_in_prose(text: str) -> Iterator[Any]:
    # From each of the first few `{` or `[`: the JSON value that starts there, if any.
    decoder = json.JSONDecoder()
    for match in itertools.islice(re.finditer(r"[\[{]", text), MAX_JSON_STARTS):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        yield value


async def ask_structured(
    model: BaseChatModel,
    schema: type[M],
    messages: list[BaseMessage],
    settings: RunSettings,
    scope: RunScope,
    accept: Callable[[M], T],
) -> tuple[T, Usage]:
    """Ask for structured output; feed problems back once; return what `accept` made of it.

    A model that answers in text rather than through the tool call still plans:
    JSON in its text (fenced, or inside prose) is read as the answer. `accept`
    validates the parsed output and raises `PlanError` naming what is wrong.

    Raises:
        PlanError: still invalid after the repair round; `raw` holds the model's reply.
    """
    structured = _structured(model, schema)
    usage = Usage()
    problems: list[str] = []
    raw_text = ""
    asked = list(messages)
    for _ in range(1 + REPAIR_ROUNDS):
        try:
            out = await call_model(structured, asked, settings=settings, scope=scope)
        except ValidationError as exc:
            # The client could not even build a message from the reply (tool-call
            # arguments that are not an object): a malformed plan, so repair it.
            out = {"raw": None, "parsed": None, "parsing_error": exc}
        raw = out.get("raw")
        usage = usage + usage_of(raw)
        raw_text = _raw_text(raw)
        parsed, error = out.get("parsed"), out.get("parsing_error")
        if not isinstance(parsed, schema) and isinstance(raw, AIMessage) and not raw.tool_calls:
            from_text = parse_text_reply(raw_text, schema)
            if isinstance(from_text, ValidationError):
                error = from_text
            else:
                parsed = from_text
        if isinstance(parsed, schema):
            try:
                return accept(parsed), usage
            except PlanError as exc:
                problems = exc.problems
        elif error is not None:
            problems = [_describe(error)]
        else:
            what = "plan" if schema is Plan else "plan extension"
            problems = [f"the model returned no {what} (neither a tool call nor JSON in its text)"]
        asked = [
            *messages,
            HumanMessage(
                f"Your previous plan:\n{raw_text[:4000]}\n\n"
                + PLAN_REPAIR.format(problems="; ".join(problems))
            ),
        ]
    raise PlanError(problems, raw=raw_text)


async def make_plan(
    model: BaseChatModel, request: str, settings: RunSettings, scope: RunScope
) -> tuple[Plan, Usage]:
    """Ask the model for a plan; feed validation errors back once; return plan and tokens.

    Raises:
        PlanError: the plan is still invalid after the repair round.
    """
    fmt = kinds_and_tools(settings, scope.registry)
    system = PLANNER_SYSTEM.format(**fmt, max_tasks=settings.max_tasks)
    messages: list[BaseMessage] = [SystemMessage(system), HumanMessage(request)]
    return await ask_structured(
        model,
        Plan,
        messages,
        settings,
        scope,
        lambda plan: check_plan(plan, settings, scope.registry),
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        return _first_lines(error)
    cause = error.__cause__
    if isinstance(cause, ValidationError):
        return _first_lines(cause)
    return f"{type(error).__name__}: {error}"[:500]


def _raw_text(raw: Any) -> str:
    if isinstance(raw, AIMessage):
        if raw.tool_calls:
            return json.dumps(raw.tool_calls[0].get("args", {}), default=str)
        return raw.text
    return ""
