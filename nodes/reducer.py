"""reducer: fold results back in plan order, skip or cancel what cannot run, keep metrics."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from pydantic import ValidationError

from fanfold.nodes.context import RunSettings, quorum_of, settings_of
from fanfold.nodes.domain import ErrorInfo, Plan, SubagentResult, Usage
from fanfold.nodes.errors import PlanError
from fanfold.nodes.events import plan_ready, task_finished
from fanfold.nodes.ledger import ledger_for
from fanfold.nodes.metrics import outcome
from fanfold.nodes.planner import check_plan
from fanfold.nodes.policy import blocked_by, quorum_met
from fanfold.nodes.scope import RunScope, scope_of
from fanfold.nodes.state import OrchestratorState, OrchestratorUpdate
from fanfold.nodes.steer import Steering, user_cancelled

FAILED = frozenset({"failed", "timed_out", "skipped"})
"""Statuses that make a task's dependents `skipped`."""


def skipped_results(
    plan: Plan,
    results: list[SubagentResult] | Mapping[str, str],
    cancelled: Collection[str] = (),
) -> list[SubagentResult]:
    """Return a `skipped` result for every task a failed dependency blocks, transitively.

    `results` may be the results or each finished task's status. A `cancelled`
    dependency blocks nothing here when a stop cancelled it: the run's other tasks are
    cancelled too, for the same reason (`cancelled_results`). The tasks in `cancelled`
    (cancelled from outside, by a run handle) block their dependents like failures.
    """
    status: dict[str, str] = (
        dict(results) if isinstance(results, Mapping) else {r.task_id: r.status for r in results}
    )
    for tid in cancelled:
        status[tid] = "cancelled from outside"
    blocks = FAILED | {"cancelled from outside"}
    blocked = blocked_by(plan, status, blocks.__contains__)
    status.update(dict.fromkeys(blocked, "skipped"))
    return [
        SubagentResult(
            task_id=t.id,
            status="skipped",
            attempts=0,
            error=ErrorInfo(
                type="DependencyFailed",
                message=", ".join(
                    f"`{d}` {status[d]}" for d in t.depends_on if status.get(d) in blocks
                ),
            ),
        )
        for t in plan.tasks
        if t.id in blocked
    ]


def stop_reason(
    status: Mapping[str, str], settings: RunSettings, scope: RunScope, saved: ErrorInfo | None
) -> ErrorInfo | None:
    """Return why no further task may start (a spent budget, a quorum met), if so.

    `saved`: the stop the state already holds (a resumed run, or one whose scope is
    in another process). Without it the stop is derived from the results.
    """
    why = scope.stop_error() or saved
    if why is None and scope.steer is not None and scope.steer.draining is not None:
        why = ErrorInfo(type="RunStopped", message=f"the run was stopped: {scope.steer.draining}")
    if why is not None:
        return why
    k = quorum_of(settings.policy)
    if k is not None and quorum_met(status, k):
        return ErrorInfo(type="QuorumReached", message=f"quorum of {k} ok tasks reached")
    return None


def _with_added(
    plan: Plan,
    steer: Steering,
    settings: RunSettings,
    scope: RunScope,
    state: OrchestratorState,
) -> Plan | None:
    """Return the plan with the tasks a run handle added since the last step, if any.

    They were checked with the plan as one DAG when added; checked again here (the
    plan may have grown by a re-planning round since). Refused ones are dropped and
    recorded in `steer.rejected`.
    """
    added = steer.take_added()
    if not added or steer.draining is not None:
        return None
    round_ = state.get("plan_round", 1)
    tasks = [t.model_copy(update={"round": round_}) for t in added]
    try:
        merged = Plan(tasks=[*plan.tasks, *tasks], rationale=plan.rationale)
        return check_plan(merged, settings, scope.registry)
    except (PlanError, ValidationError) as exc:
        steer.rejected.append(str(exc))
        return None


def cancelled_results(plan: Plan, done: Collection[str], why: ErrorInfo) -> list[SubagentResult]:
    """Return a `cancelled` result for every task not in `done`."""
    return [
        SubagentResult(task_id=t.id, status="cancelled", attempts=0, error=why)
        for t in plan.tasks
        if t.id not in done
    ]


async def reducer(state: OrchestratorState, runtime: Runtime[RunSettings]) -> OrchestratorUpdate:
    """Add skipped and cancelled results; once every task has one: plan order and metrics.

    Between windows it looks only at the results new since the last window (through
    the run's `Ledger`), so a window costs O(window), not O(N).
    """
    settings = settings_of(runtime.context)
    scope = scope_of(runtime)
    plan = state["plan"]
    overhead = state.get("usage") or Usage()
    steer = scope.steer
    grown = _with_added(plan, steer, settings, scope, state) if steer is not None else None
    if grown is not None:
        plan = grown
        plan_ready(runtime.stream_writer, len(plan.tasks), len(plan.generations()))
    ledger, new, rebuilt = ledger_for(scope.ledgers, plan, state.get("results", []))
    if rebuilt:
        # A new process (a resume) or a rewritten list: count what was spent already.
        spent = sum(r.usage.total_tokens for r in ledger.by_id.values())
        scope.seed_tokens(spent + overhead.total_tokens)
    failed = rebuilt or any(r.status != "ok" for r in new)
    added = []
    if failed:
        outside = [tid for tid, r in ledger.by_id.items() if user_cancelled(r)]
        added = skipped_results(plan, ledger.status, outside)
    ledger.append(added)
    saved = state.get("stopped")
    why = stop_reason(ledger.status, settings, scope, saved)
    if why is not None:
        cancelled = cancelled_results(plan, ledger.status, why)
        ledger.append(cancelled)
        added += cancelled
    for r in added:
        task_finished(runtime.stream_writer, r)
    update: OrchestratorUpdate = {"rounds": state.get("rounds", 0) + 1}
    if grown is not None:
        update["plan"] = grown
    if why is not None and saved is None:
        update["stopped"] = why
    if steer is not None:
        steer.seen(plan, [*new, *added])
        if ledger.done():
            steer.accepting = False  # from here on the run only writes its answer
    if not ledger.done():
        if added:
            update["results"] = added  # appended after this window's, as the ledger expects
        return update
    # Every task has a result: one result per task in plan order, and the metrics
    # (O(N), a sort for the peak), once rather than after each window.
    ordered = sorted(ledger.by_id.values(), key=lambda r: ledger.order.get(r.task_id, 0))
    ledger.rewritten(ordered)
    update["results"] = Overwrite(ordered)
    update.update(
        outcome(
            state,
            ordered,
            settings=settings,
            scope=scope,
            overhead=overhead,
            rounds=update["rounds"],
            stopped=why,
        )
    )
    return update
