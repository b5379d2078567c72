"""report: a subagent's last step, which writes its one result."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from nodes.context import RunSettings, settings_of
from nodes.domain import SubagentResult
from nodes.errors import TaskFailedError
from nodes.events import now, task_finished
from nodes.state import SubagentState


def build_result(state: SubagentState) -> SubagentResult:
    """Return the task's result from the subagent's state."""
    ended = now()
    started = state.get("started_at") or ended
    error = state.get("error")
    last = state["messages"][-1] if state.get("messages") else None
    output = last.text if isinstance(last, AIMessage) and error is None else ""
    return SubagentResult(
        task_id=state["task"].id,
        status="failed" if error is not None else "ok",
        output=output,
        error=error,
        attempts=1,
        started_at=started,
        ended_at=ended,
        duration_s=round((ended - started).total_seconds(), 6),
        usage=state.get("usage"),
        tool_calls=state.get("tool_calls", 0),
    )


async def report(state: SubagentState, runtime: Runtime[RunSettings]) -> dict[str, Any]:
    """Write exactly one result; under `fail_fast` a failure stops the run instead."""
    result = build_result(state)
    task_finished(runtime.stream_writer, result)
    if result.status != "ok" and settings_of(runtime.context).policy == "fail_fast":
        raise TaskFailedError(result)
    return {"results": [result]}
