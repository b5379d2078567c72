"""approve: optionally stop after planning until a person accepts, edits or rejects the plan."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import ValidationError

from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.domain import Plan
from fanfold.nodes.errors import PlanError
from fanfold.nodes.planner import check_plan
from fanfold.nodes.scope import scope_of
from fanfold.nodes.state import OrchestratorState, OrchestratorUpdate

MAX_ASKS = 3
"""How many times an invalid edit is sent back before the run fails with PlanError."""

Decision = tuple[Literal["accept", "edit", "reject"], Any]


def _shown(value: Any, limit: int = 200) -> str:
    """Return a decision as an error shows it: its repr, cut (an answer may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_decision(value: Any) -> Decision:
    """Read a resume value: accept, edit (a new task list or plan) or reject.

    Accepted forms: `True`/`"accept"`/`{"action": "accept"}`; `False`/`"reject"`/
    `{"action": "reject", "reason": ...}`; `{"action": "edit", "tasks": [...]}`,
    `{"action": "edit", "plan": {...}}` or a `Plan`.

    Raises:
        ValueError: naming what was received and the accepted forms.
    """
    if isinstance(value, Plan):
        return "edit", value
    if value is True or value == "accept":
        return "accept", None
    if value is False or value == "reject":
        return "reject", "rejected"
    if isinstance(value, dict):
        action = value.get("action")
        if action == "accept":
            return "accept", None
        if action == "reject":
            return "reject", str(value.get("reason") or "rejected")
        if action == "edit":
            plan = value.get("plan") or {
                "tasks": value.get("tasks"),
                "rationale": value.get("rationale", "edited"),
            }
            return "edit", plan
    msg = (
        f"unrecognised plan decision `{_shown(value)}`: resume with `accept`, `reject`, "
        '{"action": "edit", "tasks": [...]} or {"action": "reject", "reason": "..."}'
    )
    raise ValueError(msg)


async def approve(state: OrchestratorState, runtime: Runtime[RunSettings]) -> OrchestratorUpdate:
    """Ask for the plan's approval when the run wants it; apply an edit or a rejection."""
    settings = settings_of(runtime.context)
    if not settings.approve_plan or state.get("plan") is None:
        return {}  # nothing to ask (or the planner ran out of budget: no plan)
    registry = scope_of(runtime).registry
    plan = state["plan"]
    problems: list[str] = []
    for _ in range(MAX_ASKS):
        request: dict[str, Any] = {
            "question": "Accept, edit or reject this plan?",
            "plan": plan.model_dump(mode="json"),
        }
        if problems:
            request["problems"] = problems
        try:
            action, payload = parse_decision(interrupt(request))
        except ValueError as exc:
            problems = [str(exc)]
            continue
        if action == "accept":
            return {"plan": plan} if plan is not state["plan"] else {}
        if action == "reject":
            return {"status": "rejected", "answer": "", "rejection": payload}
        try:
            edited = payload if isinstance(payload, Plan) else Plan.model_validate(payload)
            plan = check_plan(edited, settings, registry)
        except ValidationError as exc:
            problems = [str(e["msg"]) for e in exc.errors()[:5]]
        except PlanError as exc:
            problems = exc.problems
        else:
            return {"plan": plan}
    raise PlanError(problems or ["the plan was not approved"])
