"""The orchestrator: plan, fan out through Send, fold back, synthesize."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START
from langgraph.types import Checkpointer

from fanfold.graphs.scoped import ScopedGraph, ScopedStateGraph, part_of_run
from fanfold.graphs.serde import allow_fanfold_types
from fanfold.graphs.subagent import compile_subagent
from fanfold.nodes.approve import approve
from fanfold.nodes.context import RunSettings, check_config, concurrency
from fanfold.nodes.delegation import register_runner
from fanfold.nodes.dispatch import (
    REDUCER,
    REJECTED,
    REPLAN,
    STOPPED,
    SUBAGENT,
    Dispatch,
    dispatch_path_map,
)
from fanfold.nodes.domain import Plan, SubagentResult
from fanfold.nodes.lg import StateNode
from fanfold.nodes.planner import planner
from fanfold.nodes.reducer import reducer
from fanfold.nodes.replan import replan
from fanfold.nodes.state import OrchestratorInput, OrchestratorOutput, OrchestratorState
from fanfold.nodes.subagent_error import on_subagent_error
from fanfold.nodes.subagent_node import subagent
from fanfold.nodes.synthesize import synthesize

Granularity = Literal["task", "step"]


@dataclass(frozen=True)
class Engine:
    """The nodes an engine runs in place of the in-process ones (same names, same graph)."""

    subagent: StateNode[Any, Any] | None = None
    """None: the one-node subagent or, at `step` granularity, the subgraph."""
    reducer: StateNode[Any, Any] = reducer
    replan: StateNode[Any, Any] = replan
    route: Callable[..., Awaitable[Any]] | None = None
    """Dispatch's routing function; None: `Dispatch(...).route`."""


Orchestrator = ScopedGraph[OrchestratorState, RunSettings, OrchestratorInput, OrchestratorOutput]


def build_orchestrator(
    *,
    synthesize_answer: bool = True,
    checkpoint_granularity: Granularity = "task",
    plan_with: StateNode[Any, Any] = planner,
    answer_with: StateNode[Any, Any] = synthesize,
    engine: Engine | None = None,
) -> ScopedStateGraph[OrchestratorState, RunSettings, OrchestratorInput, OrchestratorOutput]:
    """Wire planner -> approve -> dispatch =Send=> subagent -> reducer -> ... -> synthesize.

    From the reducer, dispatch goes on to the next ready tasks, to `replan` (when
    rounds are left and every task is done) or to the answer.

    Args:
        synthesize_answer: end with one model call that writes the answer; without
            it the run ends at the reducer (as `execute_tasks_parallel` does).
        plan_with: the node that writes the plan (a preset graph swaps it).
        answer_with: the node that writes the answer.
        engine: the nodes to run instead of the in-process ones, under the same names
            (Temporal's: `fanfold.graphs.temporal`).
        checkpoint_granularity: with a checkpointer, `task` saves each subagent's
            result when it finishes (a resumed run restarts unfinished subagents from
            their first step); `step` also checkpoints every step inside each
            subagent (a resumed subagent goes on mid-conversation, at ~7
            checkpoints per ReAct subagent).
    """
    builder = ScopedStateGraph(
        OrchestratorState,
        context_schema=RunSettings,
        input_schema=OrchestratorInput,
        output_schema=OrchestratorOutput,
    )
    plan_node = _name(plan_with)
    answer_node = _name(answer_with)
    done = answer_node if synthesize_answer else END
    routes = dispatch_path_map(done)
    builder.add_node(plan_node, plan_with)
    builder.add_node("approve", approve)
    # `step`: a subgraph that inherits the checkpointer, so a resumed subagent goes
    # on from its last step. `task`: nothing inside a subagent is saved, so it runs
    # as one node (a third of the CPU and half the memory of a subgraph).
    runner = part_of_run(compile_subagent()) if checkpoint_granularity == "step" else subagent
    engine = engine or Engine()
    builder.add_node(SUBAGENT, engine.subagent or runner, error_handler=on_subagent_error)
    builder.add_node(REDUCER, engine.reducer)
    builder.add_edge(START, plan_node)
    builder.add_edge(plan_node, "approve")
    # The one-node subagent can wait for inputs sent in its own window: it gets the
    # eager dispatch (used only when the run has no checkpointer; see Dispatch).
    route = engine.route or Dispatch(eager=checkpoint_granularity == "task").route
    builder.add_conditional_edges("approve", route, {**routes, REJECTED: END, STOPPED: END})
    builder.add_edge(SUBAGENT, REDUCER)
    builder.add_conditional_edges(REDUCER, route, dispatch_path_map(done, replan=REPLAN))
    builder.add_node(REPLAN, engine.replan)
    builder.add_conditional_edges(REPLAN, route, routes)
    if synthesize_answer:
        builder.add_node(answer_node, answer_with)
        builder.add_edge(answer_node, END)
    return builder


def _name(node: StateNode[Any, Any]) -> str:
    return str(getattr(node, "__name__", type(node).__name__))


def compile_orchestrator(
    *,
    synthesize_answer: bool = True,
    checkpointer: Checkpointer = None,
    checkpoint_granularity: Granularity = "task",
    max_concurrency: int | None = None,
    plan_with: StateNode[Any, Any] = planner,
    answer_with: StateNode[Any, Any] = synthesize,
    name: str = "orchestrator",
    **compile_kwargs: Any,
) -> Orchestrator:
    """Compile the orchestrator, optionally capping every run's `max_concurrency`.

    Each run's limit is the smallest of its settings' (the default is in
    `RunSettings`), its config's and this cap.

    Raises:
        SettingsError: `max_concurrency` is not an integer >= 1.
        ValueError: an unknown `checkpoint_granularity`.
    """
    if max_concurrency is not None:
        check_config({"max_concurrency": max_concurrency}, owner="graph")
    if checkpoint_granularity not in ("task", "step"):
        msg = f"`checkpoint_granularity` must be `task` or `step`, got `{checkpoint_granularity}`"
        raise ValueError(msg)
    builder = build_orchestrator(
        synthesize_answer=synthesize_answer,
        checkpoint_granularity=checkpoint_granularity,
        plan_with=plan_with,
        answer_with=answer_with,
    )
    compiled = builder.compile(
        checkpointer=allow_fanfold_types(checkpointer), name=name, **compile_kwargs
    )
    return (
        compiled
        if max_concurrency is None
        else compiled.with_config(max_concurrency=max_concurrency)
    )


@functools.cache
def _nested_graph() -> Orchestrator:
    # checkpointer=False: a delegated fan-out lives inside one tool call of its
    # parent subagent, which restarts it whole if the run is resumed.
    return part_of_run(
        compile_orchestrator(synthesize_answer=False, checkpointer=False, name="delegated")
    )


async def run_delegated(
    plan: Plan, settings: RunSettings, depth: int, config: RunnableConfig
) -> list[SubagentResult]:
    """Run a delegated plan as a nested fan-out of the same machinery, at `depth`.

    It runs under the calling run's control, so it shares that run's scope: one
    model-call limit, rate limit and set of budgets for every level. Sub-tasks
    settle: a failure is a result the delegating subagent's model reads, and the
    run's policy (fail_fast, quorum) counts top-level tasks only.
    """
    nested = settings if settings.policy == "settle" else settings.replace(policy="settle")
    limit, _ = concurrency(settings, config)  # the parent run's limit holds at every level
    out = await _nested_graph().ainvoke(
        {"request": "", "given_plan": plan, "depth": depth},
        {**config, "max_concurrency": limit},
        context=nested,
    )
    return list(out["results"])


register_runner(run_delegated)

# Studio's view: `step` granularity keeps the subagent a visible subgraph (LangGraph
# leaves subgraphs compiled with checkpointer=False out of `get_graph(xray=...)`).
graph = compile_orchestrator(checkpoint_granularity="step")
