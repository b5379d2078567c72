"""on_subagent_error: a subagent that raised or timed out still leaves a result."""

from __future__ import annotations

from datetime import timedelta

from langgraph.errors import NodeError, NodeTimeoutError
from langgraph.runtime import Runtime
from langgraph.types import Command

from fanfold.nodes.act import task_id
from fanfold.nodes.context import RunSettings
from fanfold.nodes.dispatch import REDUCER
from fanfold.nodes.domain import ErrorInfo, SubagentResult, Usage
from fanfold.nodes.errors import QuorumUnreachable, TaskFailedError
from fanfold.nodes.events import now
from fanfold.nodes.finish import finish
from fanfold.nodes.scope import scope_of
from fanfold.nodes.state import SubagentInput


def failure_result(
    task_id: str, exc: BaseException | str, usage: Usage | None = None
) -> SubagentResult:
    """Return the result of a subagent that raised or timed out.

    `usage`: the tokens its finished model calls spent (its state is lost with it).
    """
    ended = now()
    if isinstance(exc, NodeTimeoutError):
        return timed_out_result(task_id, exc.timeout, exc.elapsed, usage)
    return SubagentResult(
        task_id=task_id,
        status="failed",
        error=_describe(exc),
        started_at=ended,
        ended_at=ended,
        usage=usage or Usage(),
    )


def timed_out_result(
    task_id: str, timeout: float, elapsed: float, usage: Usage | None = None
) -> SubagentResult:
    """Return the result of a subagent that ran out of time (`usage`: what it spent)."""
    ended = now()
    return SubagentResult(
        task_id=task_id,
        usage=usage or Usage(),
        status="timed_out",
        error=ErrorInfo(
            type="TaskTimeout", message=f"no result after {timeout:g}s (elapsed {elapsed:.3f}s)"
        ),
        started_at=ended - timedelta(seconds=elapsed),
        ended_at=ended,
        duration_s=round(elapsed, 6),
    )


def _describe(exc: BaseException | str) -> ErrorInfo:
    if isinstance(exc, BaseException):
        return ErrorInfo.of("TaskError", exc)
    # A resumed run gets the saved error back as its repr, e.g. "ValueError('boom')".
    text = str(exc)
    name, paren, rest = text.partition("(")
    if paren and name.isidentifier():
        message = rest.removesuffix(")").strip("'\"") or text
        return ErrorInfo(type="TaskError", message=message, exception=name)
    return ErrorInfo(type="TaskError", message=text)


async def on_subagent_error(
    state: SubagentInput, error: NodeError, runtime: Runtime[RunSettings]
) -> Command[str]:
    """Turn the failure into the task's result, or stop the run as its policy says."""
    exc = error.error
    # Raise new exception objects: LangGraph marks the one it handed us as handled,
    # and re-raising that one would not stop the sibling tasks. (The task's result
    # already went out through `finish`, which raised this.)
    if isinstance(exc, TaskFailedError):
        raise TaskFailedError(exc.result, exc.results) from exc
    if isinstance(exc, QuorumUnreachable):
        raise QuorumUnreachable(str(exc), exc.results) from exc
    tid = task_id(state)
    scope = scope_of(runtime)
    try:
        result = failure_result(tid, exc, scope.task_usage.get(tid))
        update = finish(result, state, runtime, scope)
    except (TaskFailedError, QuorumUnreachable) as stop:
        # A new exception: it stops the run and says what failed. (A resumed run hands
        # the saved error back as text, which cannot be a cause.)
        raise stop from exc if isinstance(exc, BaseException) else None
    # The handler is a node of its own: without `goto`, a superstep in which every
    # subagent failed would never reach the reducer.
    return Command(update=update, goto=REDUCER)
