"""act: one model turn of a subagent's ReAct loop."""

from __future__ import annotations

import weakref
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langgraph.runtime import Runtime

from fanfold.nodes.calls import CallStats, call_model
from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.delegation import DELEGATE, can_delegate, make_delegate_tool
from fanfold.nodes.domain import ErrorInfo, Task, Usage
from fanfold.nodes.errors import BudgetExceeded, MaxStepsExceeded, RunStopped
from fanfold.nodes.models import load_chat_model
from fanfold.nodes.scope import scope_of
from fanfold.nodes.state import SubagentState
from fanfold.nodes.tracing import subagent_config
from fanfold.nodes.usage import usage_of


async def allowed_tools(task: Task, settings: RunSettings, depth: int = 1) -> list[BaseTool]:
    """Return only the tools this task may use: its allow-list, else its kind's.

    Dynamic providers are refreshed here when their TTL has run out. `delegate` is
    offered below the depth limit (to tasks whose allow-list is open or names it),
    and never at it.
    """
    kinds = settings.agent_kinds()
    names = task.tools
    if names is None and task.kind in kinds:
        names = kinds[task.kind].tools
    wants_delegate = names is None or DELEGATE in names
    listed = [n for n in names if n != DELEGATE] if names is not None else None
    tools = await settings.registry().aresolve(listed)
    if wants_delegate and can_delegate(settings, depth):
        tools.append(make_delegate_tool(settings, parent=task, depth=depth))
    return tools


_BOUND: dict[tuple[int, ...], tuple[weakref.ref[BaseChatModel], list[BaseTool], Any]] = {}
_BOUND_MAX = 256


def bind_tools(model: BaseChatModel, tools: list[BaseTool]) -> Runnable[Any, Any]:
    """Return `model.bind_tools(tools)`, made once per model and set of tool objects.

    Binding converts every tool to its JSON schema; a subagent binds on each turn,
    so without the cache that was redone three times per ReAct subagent. A
    `delegate` tool is made per task, so a set holding one is bound afresh.
    """
    if not tools:
        return model
    if any(t.name == DELEGATE for t in tools):
        return model.bind_tools(tools)
    key = (id(model), *(id(t) for t in tools))
    hit = _BOUND.get(key)
    if hit is None or hit[0]() is not model:
        if len(_BOUND) >= _BOUND_MAX:
            _BOUND.clear()  # models gone, tools a provider replaced: let them go
        # The tools are kept with the binding, so their ids cannot be reused while
        # it is cached; the model is held weakly and checked on every hit.
        hit = _BOUND[key] = (weakref.ref(model), list(tools), model.bind_tools(tools))
    return hit[2]


def _over_budget(steps: int, usage: Usage, settings: RunSettings) -> Exception | None:
    if steps >= settings.max_steps:
        return MaxStepsExceeded(
            f"stopped after {steps} model calls (max_steps={settings.max_steps}) "
            "while the model still asked for tools"
        )
    limit = settings.max_task_tokens
    if limit is not None and usage.total_tokens >= limit:
        return BudgetExceeded(f"task token budget of {limit} spent ({usage.total_tokens} used)")
    return None


async def act(state: SubagentState, runtime: Runtime[RunSettings]) -> dict[str, Any]:
    """Call the model with the conversation so far and the task's tools."""
    if state.get("error") is not None:
        return {}  # the tools step ended the task (the run stopped)
    settings = settings_of(runtime.context)
    steps = state.get("steps", 0)
    usage = state.get("usage") or Usage()
    stop = _over_budget(steps, usage, settings)
    if stop is not None:
        return {"error": ErrorInfo.of(stop)}
    stats = CallStats()
    try:
        kind = settings.agent_kinds().get(state["task"].kind)
        model = load_chat_model(kind.model if kind and kind.model else settings.model)
        tools = await allowed_tools(state["task"], settings, state.get("depth", 1))
        runnable = bind_tools(model, tools)
        config = subagent_config(
            state["task"], round_=state.get("round", 1), depth=state.get("depth", 1)
        )
        reply = await call_model(
            runnable,
            state["messages"],
            settings=settings,
            scope=scope_of(settings),
            stats=stats,
            config=config,
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes the task's result
        return {
            "error": ErrorInfo.of(exc),
            "cancelled": isinstance(exc, RunStopped | BudgetExceeded),
            "steps": steps + 1,
            "retries": state.get("retries", 0) + stats.retries,
        }
    if not isinstance(reply, AIMessage):  # pragma: no cover - chat models return AIMessage
        reply = AIMessage(content=str(reply))
    return {
        "messages": [reply],
        "steps": steps + 1,
        "usage": usage + usage_of(reply),
        "tool_calls": state.get("tool_calls", 0) + len(reply.tool_calls),
        "retries": state.get("retries", 0) + stats.retries,
    }


def after_act(state: SubagentState) -> Literal["run_tools", "report"]:
    """Go on to the tools while the model asks for them, else report."""
    if state.get("error") is not None:
        return "report"
    last = state["messages"][-1]
    if isinstance(last, AIMessage) and last.tool_calls:
        return "run_tools"
    return "report"
