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
from typing import Any

from langgraph.runtime import Runtime

from fanfold.nodes.act import act, after_act, stopped_error
from fanfold.nodes.brief import brief
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import ErrorInfo, SubagentResult, Task
from fanfold.nodes.errors import BudgetExceeded, RunStopped
from fanfold.nodes.finish import finish
from fanfold.nodes.report import report
from fanfold.nodes.run_tools import run_tools
from fanfold.nodes.scope import RunScope, scope_of
from fanfold.nodes.state import SubagentInput, SubagentState, SubagentUpdate
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
    if any(r.status == "cancelled" for r in bad):
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
    if not awaits:
        return await _run(local, runtime)
    scope = scope_of(runtime)
    task = local["task"] if isinstance(local["task"], Task) else Task.model_validate(local["task"])
    inputs = await _inputs(str(state.get("window")), awaits, scope)
    if isinstance(inputs, ErrorInfo):
        # What the reducer writes for a task it never sends: skipped or cancelled.
        status = "skipped" if inputs.type == "DependencyFailed" else "cancelled"
        result = SubagentResult(task_id=task.id, status=status, attempts=0, error=inputs)
        return finish(result, state, runtime, scope)
    local["dependency_outputs"] = {**local.get("dependency_outputs", {}), **inputs}
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
    return finish(result, state, runtime, scope)
