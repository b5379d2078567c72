"""replan: after a plan's tasks are done, the planner may add tasks that build on them."""

from __future__ import annotations

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, ValidationError

from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.domain import ErrorInfo, Plan, Task
from fanfold.nodes.errors import BudgetExceeded, PlanError
from fanfold.nodes.events import plan_ready
from fanfold.nodes.planner import ask_structured, check_plan, kinds_and_tools
from fanfold.nodes.prompts import REPLAN_REQUEST, REPLAN_SYSTEM, synthesis_prompt
from fanfold.nodes.resolve import planner_model
from fanfold.nodes.scope import scope_of
from fanfold.nodes.state import OrchestratorState, OrchestratorUpdate
from fanfold.tools.registry import ToolRegistry


class PlanExtension(BaseModel):
    """Tasks to add to a plan whose tasks are done; none when the request is answered."""

    tasks: list[Task] = Field(default_factory=list, description="New tasks; empty: finish.")
    rationale: str = Field(default="", description="Why these tasks, or why none.")


def extend_plan(
    plan: Plan, ext: PlanExtension, round_: int, settings: RunSettings, registry: ToolRegistry
) -> Plan:
    """Return `plan` with the new tasks (marked with their round), validated as one DAG.

    Raises:
        PlanError: ids reused across rounds, unknown dependencies, a cycle, unknown
            kinds or tools, or too many tasks in all.
    """
    added = [t.model_copy(update={"round": round_}) for t in ext.tasks]
    rationale = f"{plan.rationale}\nround {round_}: {ext.rationale}".strip()
    if not added:
        return plan.model_copy(update={"rationale": rationale})  # the same tasks: checked before
    try:
        merged = Plan(tasks=[*plan.tasks, *added], rationale=rationale)
    except ValidationError as exc:
        raise PlanError([str(e["msg"]) for e in exc.errors()[:5]]) from exc
    return check_plan(merged, settings, registry)


async def replan(state: OrchestratorState, runtime: Runtime[RunSettings]) -> OrchestratorUpdate:
    """Ask the planner for more tasks given every result so far, or to finish."""
    settings = settings_of(runtime.context)
    scope = scope_of(runtime)
    plan = state["plan"]
    round_ = state.get("plan_round", 1) + 1
    fmt = kinds_and_tools(settings, scope.registry)
    request = REPLAN_REQUEST.format(
        results=synthesis_prompt(state["request"], state.get("results", [])),
        ids=", ".join(t.id for t in plan.tasks),
        round=round_,
        max_rounds=settings.max_rounds,
    )
    messages: list[BaseMessage] = [
        SystemMessage(REPLAN_SYSTEM.format(**fmt)),
        HumanMessage(request),
    ]
    try:
        extended, usage = await ask_structured(
            planner_model(settings),
            PlanExtension,
            messages,
            settings,
            scope,
            lambda ext: extend_plan(plan, ext, round_, settings, scope.registry),
        )
    except BudgetExceeded:
        # Out of budget while re-planning: no more rounds; every result so far stays.
        why = scope.stop_error() or ErrorInfo(type="BudgetExceeded", message="run budget spent")
        return {"plan_round": round_, "replan_done": True, "stopped": why}
    added = len(extended.tasks) - len(plan.tasks)
    if added:
        plan_ready(runtime.stream_writer, len(extended.tasks), len(extended.generations()))
    return {"plan": extended, "plan_round": round_, "replan_done": added == 0, "usage": usage}
