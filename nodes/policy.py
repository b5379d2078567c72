"""Failure policies as pure functions of the plan and the results so far."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

from fanfold.nodes.domain import Plan


def blocked_by(plan: Plan, status: Mapping[str, str], blocks: Callable[[str], bool]) -> set[str]:
    """Return the tasks without a status that a status which `blocks` keeps from running.

    Transitively: a blocked task blocks its dependents. Linear in the plan, in any
    order (a fixpoint over the plan took a pass per level of a chain listed backwards).
    """
    dependents: dict[str, list[str]] = {}
    for t in plan.tasks:
        for d in t.depends_on:
            dependents.setdefault(d, []).append(t.id)
    frontier = deque(tid for tid, s in status.items() if blocks(s))
    blocked: set[str] = set()
    while frontier:
        for tid in dependents.get(frontier.popleft(), ()):
            if tid not in status and tid not in blocked:
                blocked.add(tid)
                frontier.append(tid)
    return blocked


def blocked_ids(plan: Plan, status: Mapping[str, str]) -> set[str]:
    """Return tasks without a status that can never run: a dependency ended non-ok."""
    return blocked_by(plan, status, lambda s: s != "ok")


def can_still_succeed(plan: Plan, status: Mapping[str, str]) -> int:
    """Return how many tasks are ok or may still end ok."""
    ok = sum(1 for s in status.values() if s == "ok")
    blocked = blocked_ids(plan, status)
    open_ = [t.id for t in plan.tasks if t.id not in status and t.id not in blocked]
    return ok + len(open_)


def quorum_met(status: Mapping[str, str], k: int) -> bool:
    """Tell whether at least `k` tasks ended ok."""
    return sum(1 for s in status.values() if s == "ok") >= k
