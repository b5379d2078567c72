"""Steering a running fan-out from outside: cancel a task, add tasks, pause, stop.

A `RunHandle` (`fanfold.start`) gives its run a `Steering` on the run's scope
(`scope.steer`); runs without a handle have none and pay nothing. The nodes read it:

- the subagent node waits at its start while the run is paused, ends at once as
  `cancelled` when its task was cancelled or the run was told to stop, and races its
  work against its task's cancel event (the reason lands in the result);
- dispatch holds new windows while paused; the reducer merges added tasks into the
  plan at its next step (validated as one DAG when they were added), treats a stop as
  the reason to cancel what has not started, and makes the dependents of a cancelled
  task `skipped`.

What a cancel or a stop decides is written as results, and added tasks as the plan,
by the nodes, so a checkpointed run keeps them from the step that wrote them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from fanfold.nodes.domain import ErrorInfo, Plan, SubagentResult, Task

CANCELLED = "Cancelled"
"""The error type of a task cancelled from outside (its dependents are then skipped)."""


class Steering:
    """What a run's handle asked for, read by the run's nodes (one event loop)."""

    def __init__(self) -> None:
        self.cancelled: dict[str, str] = {}
        """Task ids cancelled from outside, with the reason given."""
        self._cancel_events: dict[str, asyncio.Event] = {}
        self.draining: str | None = None
        """Why the run was told to stop: nothing more starts; running tasks finish."""
        self._running: asyncio.Event | None = None
        self.paused = False
        self.added: list[Task] = []
        """Tasks added and validated, not yet in the plan (the reducer merges them)."""
        self.plan: Plan | None = None
        """The plan as the reducer last saw it (what added tasks are checked against)."""
        self.finished: set[str] = set()
        """Tasks that have a result (as the reducer last saw them, and since)."""
        self.accepting = True
        """Whether tasks may still be added (false once the run stopped dispatching)."""
        self.rejected: list[str] = []
        """Why added tasks were dropped when merged (the plan changed under them)."""

    # --- asked from the handle --------------------------------------------------

    def cancel(self, task_id: str, reason: str) -> None:
        """Cancel a task: at once if it runs, at its start if it has not started."""
        self.cancelled.setdefault(task_id, reason)
        event = self._cancel_events.get(task_id)
        if event is not None:
            event.set()

    def pause(self) -> None:
        """Hold dispatch: no task starts until `resume`; running tasks go on."""
        self.paused = True
        self._gate().clear()

    def resume(self) -> None:
        """Let held tasks start."""
        self.paused = False
        self._gate().set()

    def drain(self, reason: str) -> None:
        """Stop: no task starts any more; running tasks finish; the answer is written."""
        if self.draining is None:
            self.draining = reason
        self._gate().set()  # a paused run stops too; running tasks finish

    # --- read by the nodes ------------------------------------------------------

    def _gate(self) -> asyncio.Event:
        if self._running is None:
            self._running = asyncio.Event()
            if not self.paused:
                self._running.set()
        return self._running

    async def wait_to_start(self, task_id: str) -> ErrorInfo | None:
        """Wait while the run is paused; return why the task must not start, if so."""
        while True:
            why = self.refusal(task_id)
            if why is not None or not self.paused:
                return why
            waiter = asyncio.ensure_future(self._gate().wait())
            cancel = asyncio.ensure_future(self.event_for(task_id).wait())
            try:
                await asyncio.wait({waiter, cancel}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                cancel.cancel()

    def refusal(self, task_id: str) -> ErrorInfo | None:
        """Return why a task may not start now (cancelled, or the run stopping)."""
        reason = self.cancelled.get(task_id)
        if reason is not None:
            return ErrorInfo(type=CANCELLED, message=reason)
        if self.draining is not None:
            return ErrorInfo(type="RunStopped", message=f"the run was stopped: {self.draining}")
        return None

    async def wait_for_dispatch(self) -> None:
        """Return once the run is not paused (or is stopping)."""
        if self.paused:
            await self._gate().wait()

    def event_for(self, task_id: str) -> asyncio.Event:
        """Return the event set when this task is cancelled (made on first use)."""
        event = self._cancel_events.get(task_id)
        if event is None:
            event = self._cancel_events[task_id] = asyncio.Event()
            if task_id in self.cancelled:
                event.set()
        return event

    def forget(self, task_id: str) -> None:
        """Drop a finished task's cancel event."""
        self._cancel_events.pop(task_id, None)
        self.finished.add(task_id)

    def take_added(self) -> list[Task]:
        """Return the tasks added since the last call (the reducer merges them)."""
        added, self.added = self.added, []
        return added

    def seen(self, plan: Plan, results: Iterable[SubagentResult]) -> None:
        """Learn the plan and which tasks have results (the reducer calls this)."""
        self.plan = plan
        self.finished.update(r.task_id for r in results)


def user_cancelled(result: SubagentResult) -> bool:
    """Tell whether a result is a task cancelled from outside (not by a stop or budget)."""
    return (
        result.status == "cancelled"
        and result.error is not None
        and (result.error.type == CANCELLED)
    )
