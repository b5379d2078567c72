"""synthesize: one model call over the ordered results writes the answer."""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from fanfold.nodes.calls import call_model
from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.domain import Usage
from fanfold.nodes.errors import BudgetExceeded
from fanfold.nodes.metrics import outcome
from fanfold.nodes.prompts import SYNTHESIZE_SYSTEM, synthesis_prompt
from fanfold.nodes.resolve import planner_model
from fanfold.nodes.scope import scope_of
from fanfold.nodes.state import OrchestratorState, OrchestratorUpdate
from fanfold.nodes.usage import usage_of


async def synthesize(state: OrchestratorState, runtime: Runtime[RunSettings]) -> OrchestratorUpdate:
    """Write the final answer from every result, in plan order (not when a budget ran out)."""
    return await write_answer(state, runtime, SYNTHESIZE_SYSTEM)


async def write_answer(
    state: OrchestratorState, runtime: Runtime[RunSettings], system: str
) -> OrchestratorUpdate:
    """Make the one model call over the ordered results, with `system` as its instructions."""
    settings = settings_of(runtime.context)
    scope = scope_of(runtime)
    results = state.get("results", [])
    usage = Usage()
    stopped = state.get("stopped") or scope.stop_error()
    if stopped is not None and stopped.type == "BudgetExceeded":
        answer = ""  # the budget is spent: no further model call
    else:
        model = planner_model(settings)
        prompt = synthesis_prompt(state["request"], results)
        messages = [SystemMessage(system), HumanMessage(prompt)]
        try:
            reply = await call_model(
                model, messages, settings=settings, scope=scope, interruptible=False
            )
        except BudgetExceeded:
            answer = ""  # the wall-time budget ran out between the reducer and here
            stopped = scope.stop_error()
        else:
            usage = usage_of(reply)
            answer = reply.text
    update: OrchestratorUpdate = {
        "answer": answer,
        "usage": usage,
        **outcome(
            state,
            results,
            settings=settings,
            scope=scope,
            overhead=(state.get("usage") or Usage()) + usage,
            rounds=state.get("rounds", 0),
            stopped=stopped,
        ),
    }
    if stopped is not None and state.get("stopped") is None:
        update["stopped"] = stopped
    return update
