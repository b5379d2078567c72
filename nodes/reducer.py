"""reducer: fold results back in plan order, skip what cannot run, keep the metrics."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from nodes.context import RunSettings
from nodes.domain import ErrorInfo, Plan, SubagentResult
from nodes.events import task_finished
from nodes.metrics import compute_metrics, run_status
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


async def reducer(state: OrchestratorState, runtime: Runtime[RunSettings]) -> dict[str, Any]:
    """Order the results by plan, add skipped ones, and update metrics."""
    plan = state["plan"]
    results = list(state.get("results", []))
    skipped = skipped_results(plan, results)
    for r in skipped:
        task_finished(runtime.stream_writer, r)
    order = plan.order()
    ordered = sorted(results + skipped, key=lambda r: order.get(r.task_id, len(order)))
    rounds = state.get("rounds", 0) + 1
    return {
        "results": Overwrite(ordered),
        "rounds": rounds,
        "status": run_status(ordered, len(plan.tasks)),
        "metrics": compute_metrics(
            ordered,
            tasks=len(plan.tasks),
            started_at=state.get("started_at"),
            overhead=state.get("usage"),
            rounds=rounds,
        ),
    }
