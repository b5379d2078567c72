"""act: one model turn of a subagent's ReAct loop."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langgraph.runtime import Runtime

from fanfold.nodes.calls import CallStats, call_model
from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.delegation import DELEGATE, make_delegate_tool
from fanfold.nodes.domain import ErrorInfo, Task, Usage
from fanfold.nodes.errors import BudgetExceeded, RunStopped
from fanfold.nodes.events import task_step
from fanfold.nodes.resolve import model_of
from fanfold.nodes.scope import RunScope, scope_of
from fanfold.nodes.state import SubagentInput, SubagentState, SubagentUpdate
from fanfold.nodes.steer import TaskCancelled, unless_cancelled
from fanfold.nodes.tracing import subagent_config
from fanfold.nodes.usage import usage_of


async def task_tools(
    state: SubagentState, settings: RunSettings, scope: RunScope
) -> list[BaseTool]:
    """Return only the tools this task may use, as its spec lists them.

    Dynamic providers are refreshed here when their TTL has run out; `delegate` is
    added when the spec allows it (below the depth limit).

    Raises:
        UnknownToolError: a listed tool is no longer offered by the run's registry.
    """
    spec = state["spec"]
    # A look-up may wait on a tool list (an MCP server's): the run's stop bounds it.
    tools = await scope.race(scope.registry.aresolve(spec["tools"], stats=scope.tool_stats))
    if spec["delegate"]:
        tools.append(
            make_delegate_tool(settings, parent=state["task"], depth=state.get("depth", 1))
        )
    return tools


def bind_tools(model: BaseChatModel, tools: list[BaseTool], scope: RunScope) -> Runnable[Any, Any]:
    """Return `model.bind_tools(tools)`, made once per run, model and set of tool objects.

    Binding converts every tool to its JSON schema; a subagent binds on each turn,
    so without the cache that was redone three times per ReAct subagent. A
    `delegate` tool is made per task, so a set holding one is bound afresh.
    """
    if not tools:
        return model
    if any(t.name == DELEGATE for t in tools):
        return model.bind_tools(tools)
    key = (id(model), *(id(t) for t in tools))
    hit = scope.bound.get(key)
    if hit is None:
        # The model and tools are kept with the binding, so their ids cannot be
        # reused while the run (and this cache) lives.
        hit = scope.bound[key] = (model, list(tools), model.bind_tools(tools))
    bound: Runnable[Any, Any] = hit[2]
    return bound


def over_budget(steps: int, usage: Usage, settings: RunSettings) -> ErrorInfo | None:
    """Return why the task may not make another model call, if so."""
    if steps >= settings.max_steps:
        return ErrorInfo(
            type="MaxStepsExceeded",
            message=f"stopped after {steps} model calls (max_steps={settings.max_steps}) "
            "while the model still asked for tools",
        )
    limit = settings.max_task_tokens
    if limit is not None and usage.total_tokens >= limit:
        return ErrorInfo(
            type="BudgetExceeded",
            message=f"task token budget of {limit} spent ({usage.total_tokens} used)",
        )
    return None


def _deadline(state: SubagentState) -> float | None:
    """Return when retries must stop for the task's timeout (`time.monotonic()` clock).

    A tenth of the timeout before it ends: the timeout's clock started a little before
    the brief stamped `started_at` (more so on a loaded machine), and a retry started
    later could hardly be answered in time; the task then fails with its last fault
    instead of timing out mid-retry.
    """
    timeout = state["spec"].get("timeout_s")
    started = state.get("started_at")
    if timeout is None or started is None:
        return None
    left = 0.9 * timeout - (datetime.now(UTC) - started).total_seconds()
    return time.monotonic() + left


def stopped_error(scope: RunScope, exc: RunStopped | BudgetExceeded) -> ErrorInfo:
    """Return why a running task was cancelled: the run's stop, as every task reports it."""
    return scope.stop_error() or ErrorInfo.of(
        "BudgetExceeded" if isinstance(exc, BudgetExceeded) else "RunStopped", exc
    )


async def act(state: SubagentState, runtime: Runtime[RunSettings]) -> SubagentUpdate:
    """Call the model with the conversation so far and the task's tools."""
    if state.get("error") is not None:
        return {}  # the tools step ended the task (the run stopped)
    settings = settings_of(runtime.context)
    scope = scope_of(runtime)
    steps = state.get("steps", 0)
    usage = state.get("usage") or Usage()
    stop = over_budget(steps, usage, settings)
    if stop is not None:
        return {"error": stop}
    try:
        model = model_of(state["spec"]["model"], settings)
        runnable = bind_tools(model, await task_tools(state, settings, scope), scope)
    except (RunStopped, BudgetExceeded) as exc:
        return {"error": stopped_error(scope, exc), "cancelled": True}
    except Exception as exc:  # noqa: BLE001 - every failure becomes the task's result
        return {"error": ErrorInfo.of("TaskError", exc)}
    stats = CallStats()
    config = subagent_config(
        state["task"], round_=state.get("round", 1), depth=state.get("depth", 1)
    )
    try:
        reply = await unless_cancelled(
            scope.steer,
            task_id(state),
            call_model(
                runnable,
                state["messages"],
                settings=settings,
                scope=scope,
                stats=stats,
                config=config,
                deadline=_deadline(state),
            ),
        )
    except TaskCancelled as exc:
        return {"error": exc.error, "cancelled": True, "steps": steps + 1}
    except (RunStopped, BudgetExceeded) as exc:
        return {
            "error": stopped_error(scope, exc),
            "cancelled": True,
            "steps": steps + 1,
            "retries": state.get("retries", 0) + stats.retries,
        }
    except Exception as exc:  # noqa: BLE001 - every failure becomes the task's result
        error = ErrorInfo.of("ModelError", exc)
        if stats.gave_up:
            error = error.model_copy(update={"message": f"{error.message} ({stats.gave_up})"})
        return {
            "error": error,
            "steps": steps + 1,
            "retries": state.get("retries", 0) + stats.retries,
        }
    if not isinstance(reply, AIMessage):  # pragma: no cover - chat models return AIMessage
        reply = AIMessage(content=str(reply))
    spent = usage + usage_of(reply)
    scope.task_usage[task_id(state)] = spent
    if state.get("depth", 1) == 1:  # a delegated sub-task is its parent's step
        names = [c["name"] for c in reply.tool_calls]
        task_step(
            runtime.stream_writer,
            task_id(state),
            steps + 1,
            spent.total_tokens,
            names,
            scope.limit.limit,
        )
    update: SubagentUpdate = {
        "messages": [reply],
        "steps": steps + 1,
        "usage": spent,
        "tool_calls": state.get("tool_calls", 0) + len(reply.tool_calls),
        "retries": state.get("retries", 0) + stats.retries,
    }
    limit = settings.max_task_tokens
    if reply.tool_calls and limit is not None and spent.total_tokens >= limit:
        # Over its budget with this reply: the tools it asks for are not run.
        update["error"] = ErrorInfo(
            type="BudgetExceeded",
            message=f"task token budget of {limit} spent ({spent.total_tokens} used); "
            f"the {len(reply.tool_calls)} tool call(s) of the last reply were not run",
        )
    return update


def task_id(state: SubagentInput) -> str:
    """Return the id of the task a subagent runs."""
    task = state["task"]
    return task.id if isinstance(task, Task) else str(task["id"])


def after_act(state: SubagentState) -> Literal["run_tools", "report"]:
    """Go on to the tools while the model asks for them, else report."""
    if state.get("error") is not None:
        return "report"
    last = state["messages"][-1]
    if isinstance(last, AIMessage) and last.tool_calls:
        return "run_tools"
    return "report"
