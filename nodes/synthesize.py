"""synthesize: one model call over the ordered results writes the answer."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from nodes.context import RunSettings, settings_of
from nodes.domain import Usage
from nodes.metrics import compute_metrics
from nodes.models import load_chat_model
from nodes.prompts import SYNTHESIZE_SYSTEM, synthesis_prompt
from nodes.state import OrchestratorState
from nodes.usage import usage_of


async def synthesize(state: OrchestratorState, runtime: Runtime[RunSettings]) -> dict[str, Any]:
    """Write the final answer from every result, in plan order."""
    settings = settings_of(runtime.context)
    model = load_chat_model(settings.planner_model or settings.model)
    results = state.get("results", [])
    reply = await model.ainvoke(
        [
            SystemMessage(SYNTHESIZE_SYSTEM),
            HumanMessage(synthesis_prompt(state["request"], results)),
        ]
    )
    usage = usage_of(reply)
    plan = state["plan"]
    return {
        "answer": reply.text,
        "usage": usage,
        "metrics": compute_metrics(
            results,
            tasks=len(plan.tasks),
            started_at=state.get("started_at"),
            overhead=(state.get("usage") or Usage()) + usage,
            rounds=state.get("rounds", 0),
        ),
    }
