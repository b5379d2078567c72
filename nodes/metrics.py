"""Run metrics and run status, computed from the results (and the run scope)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fanfold.nodes.context import RunSettings, quorum_of
from fanfold.nodes.domain import (
    TASK_STATUSES,
    ErrorInfo,
    RunMetrics,
    SubagentResult,
    Usage,
    peak_overlap,
)
from fanfold.nodes.events import now
from fanfold.nodes.policy import quorum_met
from fanfold.nodes.scope import RunScope
from fanfold.nodes.state import OrchestratorUpdate


def compute_metrics(
    results: list[SubagentResult],
    *,
    tasks: int,
    started_at: datetime | None,
    overhead: Usage | None,
    rounds: int,
    scope: RunScope | None = None,
    stopped: ErrorInfo | None = None,
) -> RunMetrics:
    """Return metrics: counts, measured peak concurrency, wall and task time, tokens, faults."""
    counts = Counter(r.status for r in results)
    wall = (now() - started_at).total_seconds() if started_at else 0.0
    # Task time is that of the tasks that ran in this wall time: a rerun keeps the ok
    # results of an earlier attempt, which ran before it started.
    task_time = sum(
        r.duration_s
        for r in results
        if started_at is None or r.started_at is None or r.started_at >= started_at
    )
    extra = scope.snapshot() if scope is not None else {}
    extra["stop_reason"] = stopped.message if stopped is not None else None
    return RunMetrics(
        tasks=tasks,
        counts={s: counts.get(s, 0) for s in TASK_STATUSES},
        peak_concurrency=peak_overlap(results),
        wall_time_s=round(wall, 6),
        task_time_s=round(task_time, 6),
        speedup=round(task_time / wall, 3) if wall > 0 else 0.0,
        tokens=Usage.total(r.usage for r in results) + (overhead or Usage()),
        rounds=rounds,
        **extra,
    )


def outcome(
    state: Mapping[str, Any],
    results: list[SubagentResult],
    *,
    settings: RunSettings,
    scope: RunScope,
    overhead: Usage,
    rounds: int,
    stopped: ErrorInfo | None,
) -> OrchestratorUpdate:
    """Return the `status` and `metrics` state update for these results.

    `stopped`: why the run stopped early, if it did (the state's, or just seen).
    """
    tasks = len(state["plan"].tasks)
    return {
        "status": run_status(results, tasks, settings, stopped),
        "metrics": compute_metrics(
            results,
            tasks=tasks,
            started_at=state.get("started_at"),
            overhead=overhead,
            rounds=rounds,
            scope=scope,
            stopped=stopped,
        ),
    }


def run_status(
    results: list[SubagentResult],
    tasks: int,
    settings: RunSettings | None = None,
    stopped: ErrorInfo | None = None,
) -> str:
    """Return `ok`, `partial` or `budget_exceeded`.

    `ok`: every task ended ok, or a `quorum:K` run reached K; `budget_exceeded`: a
    run budget stopped it; `partial`: anything else.
    """
    if stopped is not None and stopped.type == "BudgetExceeded":
        return "budget_exceeded"
    status = {r.task_id: r.status for r in results}
    k = quorum_of(settings.policy) if settings is not None else None
    if k is not None and quorum_met(status, k):
        return "ok"
    ok = sum(1 for s in status.values() if s == "ok")
    return "ok" if ok == tasks else "partial"
