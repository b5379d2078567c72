"""report: a subagent's last step, which writes its one result."""

from __future__ import annotations

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import SubagentResult, Usage
from fanfold.nodes.events import now
from fanfold.nodes.finish import finish
from fanfold.nodes.scope import scope_of
from fanfold.nodes.state import SubagentState, SubagentUpdate


def build_result(state: SubagentState) -> SubagentResult:
    """Return the task's result from the subagent's state (delegated sub-tasks rolled up)."""
    ended = now()
    started = state.get("started_at") or ended
    error = state.get("error")
    last = state["messages"][-1] if state.get("messages") else None
    output = last.text if isinstance(last, AIMessage) and error is None else ""
    if error is None:
        status = "ok"
    elif state.get("cancelled"):
        status = "cancelled"
    else:
        status = "failed"
    subtasks = list(state.get("subtasks") or [])
    usage = state.get("usage") or Usage()
    if subtasks:
        usage = usage + Usage.total(s.usage for s in subtasks)
    return SubagentResult(
        task_id=state["task"].id,
        status=status,
        output=output,
        error=error,
        # No model call at all (the run stopped before this task began): no attempt.
        attempts=1 + state.get("retries", 0) if state.get("steps", 0) else 0,
        started_at=started,
        ended_at=ended,
        duration_s=round((ended - started).total_seconds(), 6),
        usage=usage,
        tool_calls=state.get("tool_calls", 0),
        tool_errors=state.get("tool_errors", 0),
        subtasks=subtasks,
    )


async def report(state: SubagentState, runtime: Runtime[RunSettings]) -> SubagentUpdate:
    """Write exactly one result; the run's policy may stop the run instead."""
    return finish(build_result(state), state, runtime, scope_of(runtime))
