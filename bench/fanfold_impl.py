"""Fanfold through its public API: `execute_tasks_parallel`, and `arun` with a given plan."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from fake import TOOL_NAME, prompt
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool

from fanfold import RunSettings, Task, arun, execute_tasks_parallel
from fanfold.graphs.orchestrator import Orchestrator, compile_orchestrator
from fanfold.nodes.domain import Plan, SubagentResult


def task(item: int, deps: Sequence[int] = ()) -> Task:
    """Return the task for one item, allowed only the bench's tool."""
    return Task(
        id=f"t{item}",
        description=prompt(item),
        depends_on=[f"t{d}" for d in deps],
        tools=[TOOL_NAME],
    )


def answers_of(results: Sequence[SubagentResult]) -> dict[int, str]:
    """Return the answers by item; fail loudly on any task that did not end ok."""
    bad = [(r.task_id, r.status, r.error) for r in results if r.status != "ok"]
    if bad:
        msg = f"{len(bad)} tasks did not end ok, e.g. {bad[:3]}"
        raise AssertionError(msg)
    return {int(r.task_id[1:]): r.output for r in results}


async def run_flat(
    items: Sequence[int], *, model: BaseChatModel, tools: Sequence[BaseTool], mc: int
) -> dict[int, str]:
    """Run one subagent per item through `execute_tasks_parallel`."""
    results = await execute_tasks_parallel(
        [task(i) for i in items], model=model, tools=tools, max_concurrency=mc
    )
    return answers_of(results)


@functools.cache
def plain_graph() -> Orchestrator:
    """Return the orchestrator without a synthesizer (no extra model call) or checkpointer."""
    return compile_orchestrator(synthesize_answer=False)


async def run_plan(
    deps: Mapping[int, Sequence[int]],
    *,
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    mc: int,
    graph: Orchestrator | None = None,
    thread_id: str | None = None,
) -> dict[int, str]:
    """Run a given plan (item -> items it needs) through `arun`, on `graph` if given."""
    plan = Plan(tasks=[task(i, d) for i, d in deps.items()], rationale="bench")
    settings = RunSettings(
        model=model,
        tools=list(tools),
        max_concurrency=mc,
        task_timeout_s=None,
        max_tasks=len(plan.tasks),
    )
    config = {"configurable": {"thread_id": thread_id}} if thread_id else None
    out = await arun("", settings=settings, plan=plan, graph=graph or plain_graph(), config=config)
    return answers_of(out.results)
