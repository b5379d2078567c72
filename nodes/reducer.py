"""reducer: fold results back in plan order, skip or cancel what cannot run, keep metrics."""

from __future__ import annotations

import contextlib
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from nodes.context import RunSettings, quorum_of, settings_of
from nodes.domain import ErrorInfo, Plan, SubagentResult, Usage
from nodes.errors import FanfoldError
from nodes.events import task_finished
from nodes.metrics import outcome
from nodes.policy import quorum_met
from nodes.scope import RunScope, scope_of
from nodes.state import OrchestratorState


def skipped_results(plan: Plan, results: list[SubagentResult]) -> list[SubagentResult]:
    """Return a `skipped` result for every task a failed dependency blocks, transitively."""
    status = {r.task_id: r.status for r in results}
    skipped: list[SubagentResult] = []
    changed = True
    while changed:
        changed = False
        for t in plan.tasks:
            if t.id in status:
                continue
            bad = [d for d in t.depends_on if d in status and status[d] != "ok"]
            if bad:
                status[t.id] = "skipped"
                skipped.append(
                    SubagentResult(
                        task_id=t.id,
                        status="skipped",
                        attempts=0,
                        error=ErrorInfo(
                            type="DependencyFailed",
                            message=", ".join(f"`{d}` {status[d]}" for d in bad),
                        ),
                    )
                )
                changed = True
    return skipped


def stop_reason(
    results: list[SubagentResult], settings: RunSettings, scope: RunScope
) -> ErrorInfo | None:
    """Return why no further task may start (a spent budget, a quorum met), if so."""
    with contextlib.suppress(FanfoldError):
        scope.check()  # notices a spent budget and stops the run
    if scope.stop_kind == "budget" and scope.stop_reason:
        return ErrorInfo(type="BudgetExceeded", message=scope.stop_reason)
    k = quorum_of(settings.policy)
    if k is not None and quorum_met({r.task_id: r.status for r in results}, k):
        return ErrorInfo(type="QuorumReached", message=f"quorum of {k} ok tasks reached")
    return None


def cancelled_results(
    plan: Plan, results: list[SubagentResult], why: ErrorInfo
) -> list[SubagentResult]:
    """Return a `cancelled` result for every task that has none."""
    done = {r.task_id for r in results}
    return [
        SubagentResult(task_id=t.id, status="cancelled", attempts=0, error=why)
        for t in plan.tasks
        if t.id not in done
    ]


async def reducer(state: OrchestratorState, runtime: Runtime[RunSettings]) -> dict[str, Any]:
    """Order the results by plan, add skipped and cancelled ones, and update metrics."""
    settings = settings_of(runtime.context)
    scope = scope_of(settings)
    plan = state["plan"]
    results = list(state.get("results", []))
    overhead = state.get("usage") or Usage()
    scope.seed_tokens(Usage.total(r.usage for r in results).total_tokens + overhead.total_tokens)
    added = skipped_results(plan, results)
    why = stop_reason(results, settings, scope)
    if why is not None:
        added += cancelled_results(plan, results + added, why)
    for r in added:
        task_finished(runtime.stream_writer, r)
    order = plan.order()
    ordered = sorted(results + added, key=lambda r: order.get(r.task_id, len(order)))
    rounds = state.get("rounds", 0) + 1
    update: dict[str, Any] = {"results": Overwrite(ordered), "rounds": rounds}
    if len(ordered) >= len(plan.tasks):
        # Metrics over every result cost O(N) (a sort, for the peak): only once the
        # plan is done, not after each of the N / max_concurrency windows.
        update |= outcome(
            state, ordered, settings=settings, scope=scope, overhead=overhead, rounds=rounds
        )
    return update
