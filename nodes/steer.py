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
import contextlib
from collections.abc import Iterable
from typing import Any

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


class _NotYet(Exception):
    """A command that must wait for the run's plan."""


STEER_NAMESPACE = ("fanfold", "steer")
"""Store namespace prefix of a run's steering commands: `(*STEER_NAMESPACE, thread_id)`."""
POLL_S = 0.2
"""How often a run with a store reads new steering commands."""


class StoreCommands:
    """Steering commands a run reads from its LangGraph store (a server run's, say).

    A client writes items under `("fanfold", "steer", <thread_id>)`, each value a command:
    `{"action": "cancel", "task_id": ..., "reason": ...}`, `{"action": "add", "tasks":
    [...]}`, `{"action": "pause"}`, `{"action": "resume"}`, `{"action": "stop",
    "reason": ...}`; they are applied in the order of their keys (a timestamp works). The
    run answers each under `("fanfold", "steer", <thread_id>, "done")`, same key:
    `{"ok": true}` or `{"ok": false, "error": ...}`. A resumed run reads them all again:
    cancels and stops hold, tasks already in the plan are not added twice.
    """

    def __init__(self, store: Any, thread_id: str, steer: Steering, check: Any) -> None:
        self.store = store
        self.namespace = (*STEER_NAMESPACE, thread_id)
        self.steer = steer
        self.check = check
        """Checks a plan (raises PlanError): the run's own `check_plan`."""
        self.seen: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Read new commands every `POLL_S` seconds until `aclose`."""
        import contextvars

        self.task = asyncio.get_running_loop().create_task(
            self._poll(), context=contextvars.Context()
        )

    async def aclose(self) -> None:
        """Stop reading commands."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a store that fails now may not later
                await self.read()
            await asyncio.sleep(POLL_S)

    async def read(self) -> None:
        """Apply the commands written since the last read."""
        items = await self.store.asearch(self.namespace, limit=1000)
        new = sorted(
            (i for i in items if tuple(i.namespace) == self.namespace and i.key not in self.seen),
            key=lambda i: i.key,
        )
        for item in new:
            try:
                self.apply(item.value)
                answer: dict[str, Any] = {"ok": True}
            except _NotYet:
                return  # before the run has a plan: this and later commands wait
            except Exception as exc:  # noqa: BLE001 - told to the client, not raised
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.seen.add(item.key)
            await self.store.aput((*self.namespace, "done"), item.key, answer)

    def apply(self, command: Any) -> None:
        """Apply one command.

        Raises:
            ValueError: not a command this run knows (naming what is).
            PlanError: added tasks that do not fit the plan.
        """
        if not isinstance(command, dict):
            msg = "a command is an object with `action`"
            raise ValueError(msg)
        action = command.get("action")
        steer = self.steer
        if action in ("cancel", "add") and steer.plan is None:
            raise _NotYet
        if action == "cancel":
            task_id = str(command.get("task_id"))
            known = {t.id for t in steer.plan.tasks} | {t.id for t in steer.added}  # type: ignore[union-attr]
            if task_id not in known:
                msg = f"no task `{task_id}` in the run's plan"
                raise KeyError(msg)
            steer.cancel(task_id, str(command.get("reason") or "cancelled"))
        elif action == "pause":
            steer.pause()
        elif action == "resume":
            steer.resume()
        elif action == "stop":
            steer.drain(str(command.get("reason") or "stopped"))
        elif action == "add":
            plan = steer.plan
            if plan is None or not steer.accepting or steer.draining is not None:
                msg = "the run no longer dispatches tasks: it has finished them, or was stopped"
                raise RuntimeError(msg)
            known = {t.id for t in plan.tasks} | {t.id for t in steer.added}
            tasks = [Task.model_validate(t) for t in command.get("tasks") or []]
            tasks = [t for t in tasks if t.id not in known]  # read again after a resume
            if tasks:
                self.check(Plan(tasks=[*plan.tasks, *steer.added, *tasks]))
                steer.added.extend(tasks)
        else:
            msg = f"unknown action `{action}`: cancel, add, pause, resume or stop"
            raise ValueError(msg)


class TaskCancelled(Exception):
    """A task cancelled from outside while it waited on its model or tools."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.error = ErrorInfo(type=CANCELLED, message=reason)


async def unless_cancelled(steer: Steering | None, task_id: str, work: Any) -> Any:
    """Await `work` unless the task is cancelled from outside first.

    Raises:
        TaskCancelled: the task was cancelled (`work` is abandoned: what ignores
            cancellation runs on, its outcome dropped).
    """
    if steer is None:
        return await work
    from fanfold.nodes.scope import abandon

    event = steer.event_for(task_id)
    if event.is_set():
        work.close()
        raise TaskCancelled(steer.cancelled.get(task_id, "cancelled"))
    running = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({running, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        running.cancel()
        raise
    finally:
        watch.cancel()
    if running.done():
        return running.result()
    abandon(running)
    raise TaskCancelled(steer.cancelled.get(task_id, "cancelled"))
