"""Failure policies as pure functions of the plan and the results so far."""

from __future__ import annotations

from collections.abc import Mapping

from fanfold.nodes.domain import Plan


def blocked_ids(plan: Plan, status: Mapping[str, str]) -> set[str]:
    """Return tasks without a status that can never run: a dependency ended non-ok."""
    blocked: set[str] = set()
    for gen in plan.generations():
        for tid in gen:
            if tid in status:
                continue
            deps = plan.task(tid).depends_on
            if any((d in status and status[d] != "ok") or d in blocked for d in deps):
                blocked.add(tid)
    return blocked


def can_still_succeed(plan: Plan, status: Mapping[str, str]) -> int:
    """Return how many tasks are ok or may still end ok."""
    ok = sum(1 for s in status.values() if s == "ok")
    blocked = blocked_ids(plan, status)
    open_ = [t.id for t in plan.tasks if t.id not in status and t.id not in blocked]
    return ok + len(open_)


def quorum_met(status: Mapping[str, str], k: int) -> bool:
    """Tell whether at least `k` tasks ended ok."""
    return sum(1 for s in status.values() if s == "ok") >= k
