"""report: a subagent's last step, which writes its one result."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from fanfold.nodes.context import RunSettings, quorum_of, settings_of
from fanfold.nodes.domain import SubagentResult, Usage
from fanfold.nodes.errors import QuorumUnreachable, TaskFailedError
from fanfold.nodes.events import now, task_finished
from fanfold.nodes.policy import can_still_succeed, quorum_met
from fanfold.nodes.scope import RunScope, scope_of
from fanfold.nodes.state import SubagentState


def build_result(state: SubagentState) -> SubagentResult:
    """Return the task's result from the subagent's state."""
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
        usage=state.get("usage"),
        tool_calls=state.get("tool_calls", 0),
        tool_errors=state.get("tool_errors", 0),
    )


def apply_policy(result: SubagentResult, settings: RunSettings, scope: RunScope) -> None:
    """Record a finished task run-wide and act on the run's policy.

    Raises:
        TaskFailedError: under `fail_fast`, for a result that is not ok.
        QuorumUnreachable: under `quorum:K`, once K successes are out of reach.
    """
    if settings.is_nested:
        return  # a delegated sub-task: its parent's model reads the result
    scope.status[result.task_id] = result.status
    if result.status == "ok":
        k = quorum_of(settings.policy)
        if k is not None and quorum_met(scope.status, k):
            scope.stop("quorum", f"quorum of {k} ok tasks reached")
    elif result.status != "cancelled":
        if settings.policy == "fail_fast":
            raise TaskFailedError(result)
        k = quorum_of(settings.policy)
        if k is not None and scope.plan is not None:
            possible = can_still_succeed(scope.plan, scope.status)
            if possible < k:
                msg = f"quorum of {k} is out of reach: at most {possible} tasks can still end ok"
                raise QuorumUnreachable(msg)


async def report(state: SubagentState, runtime: Runtime[RunSettings]) -> dict[str, Any]:
    """Write exactly one result; the run's policy may stop the run instead."""
    settings = settings_of(runtime.context)
    result = build_result(state)
    scope = scope_of(settings)
    children = scope.children.pop(result.task_id, [])
    if children:
        # Roll the delegated sub-tasks up into this task's result and its tokens.
        usage = result.usage + Usage.total(c.usage for c in children)
        result = result.model_copy(update={"subtasks": children, "usage": usage})
    task_finished(runtime.stream_writer, result)
    apply_policy(result, settings, scope)
    return {"results": [result]}
