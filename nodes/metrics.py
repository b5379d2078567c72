"""Run metrics, computed from the results themselves."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from nodes.domain import TASK_STATUSES, RunMetrics, SubagentResult, Usage, peak_overlap
from nodes.events import now


def compute_metrics(
    results: list[SubagentResult],
    *,
    tasks: int,
    started_at: datetime | None,
    overhead: Usage | None,
    rounds: int,
) -> RunMetrics:
    """Return metrics: counts, measured peak concurrency, wall and task time, tokens."""
    counts = Counter(r.status for r in results)
    wall = (now() - started_at).total_seconds() if started_at else 0.0
    task_time = sum(r.duration_s for r in results)
    return RunMetrics(
        tasks=tasks,
        counts={s: counts.get(s, 0) for s in TASK_STATUSES},
        peak_concurrency=peak_overlap(results),
        wall_time_s=round(wall, 6),
        task_time_s=round(task_time, 6),
        speedup=round(task_time / wall, 3) if wall > 0 else 0.0,
        tokens=Usage.total(r.usage for r in results) + (overhead or Usage()),
        rounds=rounds,
    )


def run_status(results: list[SubagentResult], tasks: int) -> str:
    """Return `ok` when every task has an ok result, else `partial`."""
    ok = sum(1 for r in results if r.status == "ok")
    return "ok" if ok == tasks else "partial"
