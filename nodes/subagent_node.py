"""The subagent as one node: brief, then act and run_tools in turn, then report.

With `checkpoint_granularity="task"` (the default) a subagent's inner steps are
never checkpointed, so running them as a compiled subgraph buys nothing but
LangGraph's per-run and per-step machinery: measured in bare LangGraph, one node
per subagent costs a third of the CPU and half the memory of a subgraph per
subagent (docs/BENCHMARKS.md). This node runs the same step functions as the
subgraph (`graphs/subagent.py`), in the same order, over a plain dict, so both
shapes write the same result and emit the same events; `step` granularity keeps
the subgraph, whose steps a resumed run can go on from.

It can also start before its inputs are done (`awaits` in the payload, sent by
`dispatch_eager`): it waits for them in process, then runs under the task's
timeout, counted from then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from langgraph.runtime import Runtime

from fanfold.nodes.act import act, after_act, stopped_error
from fanfold.nodes.brief import brief
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import ErrorInfo, SubagentResult, Task, Usage
from fanfold.nodes.errors import BudgetExceeded, RunStopped
from fanfold.nodes.events import now
from fanfold.nodes.finish import finish
from fanfold.nodes.report import report
from fanfold.nodes.run_tools import run_tools
from fanfold.nodes.scope import RunScope, abandon, scope_of
from fanfold.nodes.state import SubagentInput, SubagentState, SubagentUpdate
from fanfold.nodes.steer import CANCELLED, Steering, user_cancelled
from fanfold.nodes.subagent_error import timed_out_result


def _apply(state: dict[str, Any], update: SubagentUpdate) -> None:
    # The subgraph's one reducer is `add_messages` on `messages`: the steps only
    # ever append new messages, so appending is the same merge.
    for key, value in update.items():
        if key == "messages":
            state["messages"] = [*state.get("messages", ()), *value]  # type: ignore[misc]
        else:
            state[key] = value


async def _run(local: dict[str, Any], runtime: Runtime[RunSettings]) -> SubagentUpdate:
    view: SubagentState = local  # type: ignore[assignment]
    _apply(local, await brief(view, runtime))
    while True:
        _apply(local, await act(view, runtime))
        if after_act(view) == "report":
            return await report(view, runtime)
        _apply(local, await run_tools(view, runtime))


async def _inputs(window: str, awaits: list[str], scope: RunScope) -> dict[str, str] | ErrorInfo:
    """Wait for the dependencies' results: their outputs, or why this task cannot run."""
    try:
        results = await scope.race(scope.results_of(window, awaits))
    except (RunStopped, BudgetExceeded) as exc:
        return stopped_error(scope, exc)
    bad = [r for r in results if r.status != "ok"]
    if any(r.status == "cancelled" and not user_cancelled(r) for r in bad):
        # Only a stopped run cancels tasks: this one is cancelled for the same reason.
        stopped = ErrorInfo(type="RunStopped", message="the run stopped")
        return scope.stop_error() or next((r.error for r in bad if r.error), stopped)
    if bad:
        return ErrorInfo(
            type="DependencyFailed", message=", ".join(f"`{r.task_id}` {r.status}" for r in bad)
        )
    return {r.task_id: r.output for r in results}


async def subagent(state: SubagentInput, runtime: Runtime[RunSettings]) -> SubagentUpdate:
    """Run one task to its result, in one LangGraph step."""
    local: dict[str, Any] = dict(state)
    awaits = state.get("awaits")
    scope = scope_of(runtime) if awaits or "timeout_s" in state else None
    if scope is None:
        return await _run(local, runtime)
    task = local["task"] if isinstance(local["task"], Task) else Task.model_validate(local["task"])
    steer = scope.steer
    if steer is not None:
        why = await steer.wait_to_start(task.id)
        if why is not None:
            # Cancelled before it started, or the run is stopping: nothing ran.
            result = SubagentResult(task_id=task.id, status="cancelled", attempts=0, error=why)
            steer.forget(task.id)
            return finish(result, state, runtime, scope)
    if awaits:
        inputs = await _inputs(str(state.get("window")), awaits, scope)
        if isinstance(inputs, ErrorInfo):
            # What the reducer writes for a task it never sends: skipped or cancelled.
            status = "skipped" if inputs.type == "DependencyFailed" else "cancelled"
            result = SubagentResult(task_id=task.id, status=status, attempts=0, error=inputs)
            return finish(result, state, runtime, scope)
        local["dependency_outputs"] = {**local.get("dependency_outputs", {}), **inputs}
    work = _timed(local, runtime, scope, task)
    if steer is None:
        return await work
    return await _cancellable(work, state, runtime, scope, task, steer)


async def _timed(
    local: dict[str, Any], runtime: Runtime[RunSettings], scope: RunScope, task: Task
) -> SubagentUpdate:
    """Run the task under the timeout its payload carries, counted from now."""
    timeout = local.get("timeout_s")
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout) as deadline:
            return await _run(local, runtime)
    except TimeoutError:
        if not deadline.expired():
            raise
    elapsed = time.monotonic() - start
    result = timed_out_result(task.id, timeout or 0.0, elapsed, scope.task_usage.get(task.id))
    return finish(result, local, runtime, scope)


async def _cancellable(
    work: Coroutine[Any, Any, SubagentUpdate],
    state: SubagentInput,
    runtime: Runtime[RunSettings],
    scope: RunScope,
    task: Task,
    steer: Steering,
) -> SubagentUpdate:
    """Run the task's work unless its task is cancelled first; then end it `cancelled`."""
    started = now()
    running = asyncio.ensure_future(work)
    cancelled = asyncio.ensure_future(steer.event_for(task.id).wait())
    try:
        await asyncio.wait({running, cancelled}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        running.cancel()
        raise
    finally:
        cancelled.cancel()
    if running.done():
        steer.forget(task.id)
        return running.result()
    abandon(running)  # a tool that ignores cancellation must not hold the task
    steer.forget(task.id)
    ended = now()
    result = SubagentResult(
        task_id=task.id,
        status="cancelled",
        attempts=1,
        error=ErrorInfo(type=CANCELLED, message=steer.cancelled.get(task.id, "cancelled")),
        usage=scope.task_usage.get(task.id) or Usage(),
        started_at=started,
        ended_at=ended,
        duration_s=round((ended - started).total_seconds(), 6),
    )
    return finish(result, state, runtime, scope)
