"""The subagent as one node: brief, then act and run_tools in turn, then report.

With `checkpoint_granularity="task"` (the default) a subagent's inner steps are
never checkpointed, so running them as a compiled subgraph buys nothing but
LangGraph's per-run and per-step machinery: measured in bare LangGraph, one node
per subagent costs a third of the CPU and half the memory of a subgraph per
subagent (docs/BENCHMARKS.md). This node runs the same step functions as the
subgraph (`graphs/subagent.py`), in the same order, over a plain dict, so both
shapes write the same result and emit the same events; `step` granularity keeps
the subgraph, whose steps a resumed run can go on from.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from nodes.act import act, after_act
from nodes.brief import brief
from nodes.context import RunSettings
from nodes.report import report
from nodes.run_tools import run_tools
from nodes.state import SubagentInput, SubagentState


def _apply(state: dict[str, Any], update: dict[str, Any]) -> None:
    # The subgraph's one reducer is `add_messages` on `messages`: the steps only
    # ever append new messages, so appending is the same merge.
    messages = update.pop("messages", None)
    if messages:
        state["messages"] = [*state.get("messages", ()), *messages]
    state.update(update)


async def subagent(state: SubagentInput, runtime: Runtime[RunSettings]) -> dict[str, Any]:
    """Run one task to its result, in one LangGraph step."""
    local: dict[str, Any] = dict(state)
    view: SubagentState = local  # type: ignore[assignment]
    _apply(local, await brief(view, runtime))
    while True:
        _apply(local, await act(view, runtime))
        if after_act(view) == "report":
            return await report(view, runtime)
        _apply(local, await run_tools(view, runtime))
