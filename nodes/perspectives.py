"""perspectives_planner and merge_views: one request, several named viewpoints, one answer."""

from __future__ import annotations

from langgraph.runtime import Runtime

from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.domain import Plan, Task, Usage
from fanfold.nodes.events import now, plan_ready
from fanfold.nodes.planner import check_plan, planned
from fanfold.nodes.prompts import MERGE_VIEWS_SYSTEM
from fanfold.nodes.scope import scope_of
from fanfold.nodes.state import OrchestratorState, OrchestratorUpdate
from fanfold.nodes.synthesize import write_answer


async def perspectives_planner(
    state: OrchestratorState, runtime: Runtime[RunSettings]
) -> OrchestratorUpdate:
    """Give the whole request to each perspective kind, in parallel (no model call)."""
    settings = settings_of(runtime.context)
    started = now()
    tasks = [
        Task(id=kind, description=state["request"], kind=kind)
        for kind in dict.fromkeys(settings.perspectives)
    ]
    registry = scope_of(runtime).registry
    plan = check_plan(Plan(tasks=tasks, rationale="one view per perspective"), settings, registry)
    plan_ready(runtime.stream_writer, len(plan.tasks), 1)
    return planned(plan, started=started, usage=Usage(), settings=settings)


async def merge_views(
    state: OrchestratorState, runtime: Runtime[RunSettings]
) -> OrchestratorUpdate:
    """Merge the views into one answer that keeps who said what (and keep each view)."""
    update = await write_answer(state, runtime, MERGE_VIEWS_SYSTEM)
    update["views"] = {r.task_id: r.output for r in state.get("results", []) if r.status == "ok"}
    return update
