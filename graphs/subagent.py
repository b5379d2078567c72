"""The subagent: a ReAct tool-calling subgraph with its own message history."""

from __future__ import annotations

from langgraph.graph import END, START
from langgraph.types import Checkpointer

from fanfold.graphs.scoped import ScopedGraph, ScopedStateGraph
from fanfold.nodes.act import act, after_act
from fanfold.nodes.brief import brief
from fanfold.nodes.context import RunSettings
from fanfold.nodes.report import report
from fanfold.nodes.run_tools import run_tools
from fanfold.nodes.state import SubagentInput, SubagentOutput, SubagentState


def build_subagent() -> ScopedStateGraph[SubagentState, RunSettings, SubagentInput, SubagentOutput]:
    """Wire brief -> act <-> run_tools -> report."""
    builder = ScopedStateGraph(
        SubagentState,
        context_schema=RunSettings,
        input_schema=SubagentInput,
        output_schema=SubagentOutput,
    )
    builder.add_node("brief", brief)
    builder.add_node("act", act)
    builder.add_node("run_tools", run_tools)
    builder.add_node("report", report)
    builder.add_edge(START, "brief")
    builder.add_edge("brief", "act")
    builder.add_conditional_edges("act", after_act, ["run_tools", "report"])
    builder.add_edge("run_tools", "act")
    builder.add_edge("report", END)
    return builder


Subagent = ScopedGraph[SubagentState, RunSettings, SubagentInput, SubagentOutput]


def compile_subagent(checkpointer: Checkpointer = None) -> Subagent:
    """Return the compiled subagent, as the orchestrator embeds it.

    `checkpointer=None` inherits the parent's checkpointer (a checkpoint per step);
    `False` keeps the subagent out of checkpoints (only its result is saved).
    """
    return build_subagent().compile(name="subagent", checkpointer=checkpointer)


graph = compile_subagent()
