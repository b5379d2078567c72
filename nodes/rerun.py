"""Which tasks a rerun runs again, and which results it keeps."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from fanfold.nodes.domain import ErrorInfo, Plan, SubagentResult

RERUNNABLE: tuple[str, ...] = ("failed", "timed_out", "cancelled", "skipped")
"""The statuses a rerun may run again (every one but `ok`); the default is all of them."""


def check_only(only: Collection[str]) -> tuple[str, ...]:
    """Return the statuses to run again, validated.

    Raises:
        ValueError: an empty selection, or a status that is not in `RERUNNABLE`.
    """
    chosen = tuple(dict.fromkeys(s.strip() for s in only if s.strip()))
    wrong = [s for s in chosen if s not in RERUNNABLE]
    if wrong or not chosen:
        got = ", ".join(f"`{s}`" for s in wrong) if wrong else "nothing"
        msg = f"`only` takes statuses among {', '.join(RERUNNABLE)}, got {got}"
        raise ValueError(msg)
    return chosen


def rerun_selection(
    plan: Plan, results: Mapping[str, SubagentResult], only: Collection[str]
) -> tuple[list[SubagentResult], list[str]]:
    """Return the results a rerun keeps and the ids of the tasks it runs again, in plan order.

    A task runs again when its status is in `only` (a task without a result counts
    as `cancelled`: the run stopped before it ended), and so does every task that
    depends on one that runs again and did not end ok itself (skipped or cancelled
    because of it). Every other result is kept as it is, and a task without one that
    does not run again keeps a `cancelled` result.
    """
    status = {t.id: results[t.id].status if t.id in results else "cancelled" for t in plan.tasks}
    again = {tid for tid, st in status.items() if st in only}
    changed = True
    while changed:  # a plan may list a task before its dependencies
        changed = False
        for task in plan.tasks:
            if task.id not in again and status[task.id] != "ok":
                if any(d in again for d in task.depends_on):
                    again.add(task.id)
                    changed = True
    stopped = ErrorInfo(type="RunStopped", message="the run stopped before this task ended")
    kept = [
        results.get(t.id)
        or SubagentResult(task_id=t.id, status="cancelled", attempts=0, error=stopped)
        for t in plan.tasks
        if t.id not in again
    ]
    return kept, [t.id for t in plan.tasks if t.id in again]
