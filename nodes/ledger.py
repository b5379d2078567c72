"""The run's bookkeeping between windows, kept up to date from new results only.

`dispatch` needs the ready tasks and the `reducer` needs each task's status after
every window of `max_concurrency` subagents. Recomputing them over the whole plan
and every result cost O(N) per window, O(N^2 / max_concurrency) per run: at
N=4000, mc=10 a fifth of the run's CPU (docs/BENCHMARKS.md). A `Ledger` is built
once from the state and then fed only the results appended since it last looked,
so a window costs O(window).

It is a cache, never the truth: the state is. A ledger lives in the run's scope
(in process), and is rebuilt from the state whenever the state is not what it
last saw plus new results at the end (a resume, a re-plan, the reducer's final
rewrite in plan order).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence

from fanfold.nodes.domain import Plan, SubagentResult, Task


class Ledger:
    """Statuses, dependency counts and the ready queue of one plan."""

    def __init__(self, plan: Plan, results: Sequence[SubagentResult] = ()) -> None:
        self.plan = plan
        self.order = plan.order()
        self.by_id: dict[str, SubagentResult] = {}
        """The latest result of each task."""
        self.status: dict[str, str] = {}
        """Each finished task's status."""
        self.dependents: dict[str, list[str]] = {}
        self.waiting: dict[str, int] = {}
        """For each task without a result: how many of its dependencies are not ok yet."""
        for t in plan.tasks:
            deps = set(t.depends_on)
            self.waiting[t.id] = len(deps)
            for d in deps:
                self.dependents.setdefault(d, []).append(t.id)
        self._ready = [self.order[t.id] for t in plan.tasks if self.waiting[t.id] == 0]
        heapq.heapify(self._ready)
        self.seen = 0
        self._last: SubagentResult | None = None
        self.window: str | None = None
        """The key of this run's open eager window in its scope, if any."""
        # The last result written for a task wins (a resumed or rewritten list).
        self.append(list({r.task_id: r for r in results}.values()))
        self.rewritten(results)

    def follows(self, results: Sequence[SubagentResult]) -> bool:
        """Tell whether `results` is what this ledger saw, with new results appended."""
        n = self.seen
        return len(results) >= n and (n == 0 or results[n - 1] is self._last)

    def add(self, results: Sequence[SubagentResult]) -> list[SubagentResult]:
        """Take in the results after those already seen; return them.

        Raises:
            ValueError: a task's result changed from ok to something else (the
                ledger cannot take back what it released: rebuild it).
        """
        new = list(results[self.seen :])
        self.append(new)
        return new

    def append(self, new: Sequence[SubagentResult]) -> None:
        """Take in results that are (or will be) appended to the list it saw.

        Raises:
            ValueError: as `add`.
        """
        for r in new:
            tid = r.task_id
            before = self.status.get(tid)
            if before == "ok" and r.status != "ok":
                msg = f"result of `{tid}` went from ok to {r.status}"
                raise ValueError(msg)
            self.by_id[tid] = r
            self.status[tid] = r.status
            self.waiting.pop(tid, None)
            if r.status == "ok" and before != "ok":
                for dep in self.dependents.get(tid, ()):
                    left = self.waiting.get(dep)
                    if left is not None:
                        self.waiting[dep] = left - 1
                        if left == 1:
                            heapq.heappush(self._ready, self.order[dep])
        if new:
            self.seen += len(new)
            self._last = new[-1]

    def rewritten(self, results: Sequence[SubagentResult]) -> None:
        """Note that the list was replaced by `results` (the same results, reordered)."""
        self.seen = len(results)
        self._last = results[-1] if results else None

    def take_ready(self, limit: int | None = None) -> list[Task]:
        """Remove and return up to `limit` ready tasks, in plan order.

        Ready: no result yet, every dependency ended ok, not taken before.
        """
        taken: list[Task] = []
        while self._ready and (limit is None or len(taken) < limit):
            task = self.plan.tasks[heapq.heappop(self._ready)]
            if task.id not in self.status:
                taken.append(task)
        return taken

    def take_eager(self, ready_limit: int, limit: int) -> list[Task]:
        """Take ready tasks, then tasks whose inputs are ok or taken with them.

        Up to `ready_limit` ready tasks; then, while fewer than `limit` are taken,
        tasks whose dependencies are all ok or taken. Each task comes after all of
        its dependencies. The caller keeps `limit` at or under `max_concurrency`: a
        task waiting for its inputs holds a LangGraph slot, so none may wait while
        one of its inputs is queued for a slot.
        """
        taken = self.take_ready(ready_limit)
        inflight = {t.id for t in taken}
        frontier = deque(inflight)
        while frontier and len(taken) < limit:
            for tid in self.dependents.get(frontier.popleft(), ()):
                if tid in inflight or tid in self.status:
                    continue
                task = self.plan.tasks[self.order[tid]]
                if all(d in inflight or self.status.get(d) == "ok" for d in task.depends_on):
                    taken.append(task)
                    inflight.add(tid)
                    frontier.append(tid)
                    if len(taken) >= limit:
                        break
        return taken

    def done(self) -> bool:
        """Tell whether every task of the plan has a result."""
        return len(self.status) >= len(self.plan.tasks)


MAX_LEDGERS = 32
"""Ledgers a run's scope keeps (nested fan-outs and re-plans each add one)."""


def ledger_for(
    ledgers: dict[int, Ledger], plan: Plan, results: Sequence[SubagentResult]
) -> tuple[Ledger, list[SubagentResult], bool]:
    """Return the plan's ledger brought up to `results`.

    Also returns the results new to it, and whether it was (re)built from the
    whole state.
    """
    ledger = ledgers.get(id(plan))
    if ledger is not None and ledger.plan is plan and ledger.follows(results):
        try:
            return ledger, ledger.add(results), False
        except ValueError:
            pass
    while len(ledgers) >= MAX_LEDGERS:
        # A run sees a new plan object at each re-plan and each delegated fan-out:
        # forget the oldest plan's ledger; were it still in use, it would only be rebuilt.
        ledgers.pop(next(iter(ledgers)))
    ledger = ledgers[id(plan)] = Ledger(plan, results)
    return ledger, list(results), True
