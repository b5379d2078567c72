"""on_subagent_error: a subagent that raised or timed out still leaves a result."""

from __future__ import annotations

from datetime import timedelta

from langgraph.errors import NodeError, NodeTimeoutError
from langgraph.runtime import Runtime
from langgraph.types import Command

from nodes.context import RunSettings, settings_of
from nodes.dispatch import REDUCER
from nodes.domain import ErrorInfo, SubagentResult, Task
from nodes.errors import TaskFailedError
from nodes.events import now, task_finished
from nodes.state import SubagentInput


async def on_subagent_error(
    state: SubagentInput, error: NodeError, runtime: Runtime[RunSettings]
) -> Command[str]:
    """Turn the failure into the task's result (`settle`) or stop the run (`fail_fast`)."""
    exc = error.error
    if isinstance(exc, TaskFailedError):
        # A new exception object: LangGraph marks the one it handed us as handled,
        # and re-raising it would not stop the sibling tasks.
        raise TaskFailedError(exc.result, exc.results) from exc
    task = state["task"]
    task_id = task.id if isinstance(task, Task) else str(task["id"])
    ended = now()
    if isinstance(exc, NodeTimeoutError):
        elapsed = exc.elapsed
        result = SubagentResult(
            task_id=task_id,
            status="timed_out",
            error=ErrorInfo(
                type="TaskTimeout",
                message=f"no result after {exc.timeout:g}s (elapsed {elapsed:.3f}s)",
            ),
            started_at=ended - timedelta(seconds=elapsed),
            ended_at=ended,
            duration_s=round(elapsed, 6),
        )
    else:
        result = SubagentResult(
            task_id=task_id,
            status="failed",
            error=ErrorInfo.of(exc),
            started_at=ended,
            ended_at=ended,
        )
    task_finished(runtime.stream_writer, result)
    if settings_of(runtime.context).policy == "fail_fast":
        raise TaskFailedError(result) from exc
    # The handler is a node of its own: without `goto`, a superstep in which every
    # subagent failed would never reach the reducer.
    return Command(update={"results": [result]}, goto=REDUCER)
