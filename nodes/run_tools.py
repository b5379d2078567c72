"""run_tools: run the tool calls of the last model turn; errors go back to the model."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from langchain_core.messages import AIMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, Tool
from langgraph.runtime import Runtime
from pydantic import BaseModel, ValidationError

from fanfold.nodes.act import stopped_error, task_id, task_tools
from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.delegation import DELEGATE
from fanfold.nodes.domain import ErrorInfo, SubagentResult
from fanfold.nodes.errors import BudgetExceeded, RunStopped
from fanfold.nodes.scope import scope_of
from fanfold.nodes.state import SubagentState, SubagentUpdate
from fanfold.nodes.steer import TaskCancelled, unless_cancelled
from fanfold.nodes.tracing import subagent_config
from fanfold.tools.workspace import MAX_READ_BYTES

T = TypeVar("T")


def runs_in_a_thread(tool: BaseTool) -> bool:
    """Tell whether a tool is synchronous only (its `ainvoke` would use an executor thread)."""
    if isinstance(tool, StructuredTool | Tool):
        return tool.coroutine is None
    return type(tool)._arun is BaseTool._arun


async def in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a daemon thread of its own and await its result.

    LangChain runs a synchronous tool in the event loop's default executor, whose
    threads are joined when the loop closes and when Python exits: a tool blocked in
    `time.sleep(30)` would hold up both long after the run stopped waiting for it. A
    daemon thread holds up neither; if the run stops first, the call is abandoned and
    its result, when it comes, dropped.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()  # the caller's run config and callbacks

    def settle(value: Any, error: BaseException | None) -> None:
        if done.done():
            return  # abandoned: the run stopped waiting
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(value)

    def work() -> None:
        try:
            value, error = context.run(fn, *args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name="fanfold-sync-tool", daemon=True).start()
    return await done


async def call_tool(
    call: ToolCall,
    tools: dict[str, BaseTool],
    config: RunnableConfig | None = None,
    timeout_s: float | None = None,
) -> ToolMessage:
    """Run one tool call; any failure becomes an error message the model can act on.

    The reply, an error's too, is cut at the read limit (`capped`).
    """
    return capped(await _call_tool(call, tools, config, timeout_s))


async def _call_tool(
    call: ToolCall,
    tools: dict[str, BaseTool],
    config: RunnableConfig | None,
    timeout_s: float | None,
) -> ToolMessage:
    call_id = call.get("id") or ""
    name = call["name"]
    tool = tools.get(name)
    if tool is None:
        content = f"Error: unknown tool `{name}`. Available tools: {sorted(tools)}."
        return ToolMessage(content, tool_call_id=call_id, name=name, status="error")
    args = call.get("args") or {}
    try:
        # Check the arguments apart from the call: a ValidationError raised inside
        # the tool is the tool failing, not the model passing bad arguments.
        schema = tool.get_input_schema()
        if issubclass(schema, BaseModel):
            schema.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        content = f"Error: bad arguments for `{name}`: {problems}. Fix them and call again."
        return ToolMessage(content, tool_call_id=call_id, name=name, status="error")
    try:
        async with asyncio.timeout(timeout_s):  # no extra task per call, unlike wait_for
            # Given the whole call, a tool answers with a ToolMessage (and its artifact).
            payload = {**call, "args": args, "type": "tool_call"}
            if runs_in_a_thread(tool):
                reply = await in_daemon_thread(tool.invoke, payload, config)
            else:
                reply = await tool.ainvoke(payload, config)
    except TimeoutError:
        content = f"Error: `{name}` timed out after {timeout_s:g}s. Try a smaller request."
        return ToolMessage(content, tool_call_id=call_id, name=name, status="error")
    except Exception as exc:  # noqa: BLE001 - the model decides what to do next
        content = f"Error: `{name}` failed: {type(exc).__name__}: {exc}"
        return ToolMessage(content, tool_call_id=call_id, name=name, status="error")
    if not isinstance(reply, ToolMessage):
        reply = ToolMessage(str(reply), tool_call_id=call_id, name=name)
    return reply


MAX_TOOL_RESULT_CHARS = MAX_READ_BYTES
"""The read limit: the most characters of one tool result a model is given (text and
encoded files together); the file tools read no more at once either."""


def capped(reply: ToolMessage, limit: int = MAX_TOOL_RESULT_CHARS) -> ToolMessage:
    """Return `reply`, cut to `limit` characters with a note saying so when it is longer.

    A tool result lands in the model's context and the run's state (a checkpoint, too):
    an MCP server that answers with 50 MB must not carry them there. Blocks past the
    limit are dropped, a text block is cut; a cut reply keeps no JSON artifact.
    """
    content = reply.content
    blocks: list[Any] = [content] if isinstance(content, str) else list(content)
    size = sum(_size(b) for b in blocks)
    # A JSON artifact (an MCP tool's structured result) counts; objects (the results a
    # `delegate` call returns) are the run's own, never cut.
    artifact_size = _size(reply.artifact) if isinstance(reply.artifact, dict) else 0
    if size <= limit and artifact_size <= limit:
        return reply
    kept: list[Any] = []
    room = limit
    for block in blocks:
        if room <= 0:
            break
        n = _size(block)
        if n <= room:
            kept.append(block)
            room -= n
            continue
        if isinstance(block, str):
            kept.append(block[:room])
        elif isinstance(block, dict) and block.get("type") == "text":
            kept.append({**block, "text": str(block.get("text", ""))[:room]})
        room = 0
    note = (
        f"[cut: this result has {size} characters; only the first {limit} are shown (the "
        "read limit). Ask the tool for less, such as a narrower query or a range.]"
        if size > limit
        else f"[the tool's structured result ({artifact_size} characters) was left out: "
        f"over the read limit of {limit}]"
    )
    if isinstance(content, str):
        new_content: Any = "".join(kept) + "\n" + note
    else:
        new_content = [*kept, {"type": "text", "text": note}]
    artifact = None if isinstance(reply.artifact, dict) else reply.artifact
    return reply.model_copy(update={"content": new_content, "artifact": artifact})


def _size(value: Any) -> int:
    """Return how many characters a content block (or artifact) takes as JSON.

    As JSON, so 200,000 empty blocks count for what they weigh in the state.
    """
    if isinstance(value, str):
        return len(value)
    return len(json.dumps(value, default=str))


async def _all(calls: Iterable[Awaitable[ToolMessage]]) -> list[ToolMessage]:
    # A coroutine, not a started gather: a stopped run never starts the tools.
    pending = list(calls)
    if len(pending) == 1:
        return [await pending[0]]  # the common case: no task for a single call
    return list(await asyncio.gather(*pending))


async def run_tools(state: SubagentState, runtime: Runtime[RunSettings]) -> SubagentUpdate:
    """Run every tool call of the last turn at once, answers in call order."""
    settings = settings_of(runtime.context)
    scope = scope_of(runtime)
    last = state["messages"][-1]
    calls = last.tool_calls if isinstance(last, AIMessage) else []
    try:
        tools = {t.name: t for t in await task_tools(state, settings, scope)}
    except (RunStopped, BudgetExceeded) as exc:
        return {"error": stopped_error(scope, exc), "cancelled": True}
    except Exception as exc:  # noqa: BLE001 - every failure becomes the task's result
        return {"error": ErrorInfo.of("TaskError", exc)}
    config = subagent_config(
        state["task"], round_=state.get("round", 1), depth=state.get("depth", 1)
    )
    config.pop("run_name")  # a tool run keeps its tool's name; tags and metadata say whose
    try:
        replies = await unless_cancelled(
            scope.steer,
            task_id(state),
            scope.race(_all(call_tool(c, tools, config, settings.tool_timeout_s) for c in calls)),
        )
    except TaskCancelled as exc:
        return {"error": exc.error, "cancelled": True}
    except (RunStopped, BudgetExceeded) as exc:
        return {"error": stopped_error(scope, exc), "cancelled": True}
    errors = sum(1 for r in replies if r.status == "error")
    update: SubagentUpdate = {
        "messages": list(replies),
        "tool_errors": state.get("tool_errors", 0) + errors,
    }
    delegated = [
        r
        for m in replies
        if m.name == DELEGATE and isinstance(m.artifact, list)
        for r in m.artifact
        if isinstance(r, SubagentResult)
    ]
    if delegated:
        update["subtasks"] = [*state.get("subtasks", []), *delegated]
    return update
