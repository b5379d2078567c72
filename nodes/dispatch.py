"""dispatch: route every ready task to its own subagent through `Send`."""

from __future__ import annotations

from collections.abc import Hashable

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from langgraph.types import Send

from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.domain import Plan, SubagentResult, Task
from fanfold.nodes.ledger import Ledger, ledger_for
from fanfold.nodes.lg import saves_writes
from fanfold.nodes.scope import scope_of
from fanfold.nodes.state import OrchestratorState, SubagentInput

SUBAGENT = "subagent"
"""The node that runs one task."""
REDUCER = "reducer"
"""The node that folds results back."""
FAN_OUT = "fan-out"
"""Edge label of the `Send` fan-out (drawn only: the `Send`s name their node)."""
DONE = "done"
"""What dispatch returns when no task is ready."""
REPLAN = "replan"
"""What dispatch returns when every task is done and another planning round may run."""
WIDE_WINDOW = (16, 256)
"""Without a checkpointer a window holds up to 16 x `max_concurrency` Sends, at most 256
(never fewer than `max_concurrency`): LangGraph's cost per finished task grows with the
width of its superstep, and the barrier between windows costs less the wider they are."""


def ready_tasks(plan: Plan, results: list[SubagentResult]) -> list[Task]:
    """Return, in plan order, the tasks with no result whose dependencies all ended ok."""
    return Ledger(plan, results).take_ready()


def make_send(
    task: Task,
    by_id: dict[str, SubagentResult],
    settings: RunSettings,
    *,
    round_: int = 1,
    depth: int = 1,
    window: str | None = None,
) -> Send:
    """Return the `Send` that runs one task, with its dependencies' outputs and timeout.

    `by_id`: the results so far. A dependency without a result yet (sent in the same
    eager `window`) is listed in `awaits` instead; the task's timeout then travels in
    the payload, to count from when its inputs are ready, and the Send has none.
    """
    payload: SubagentInput = {
        "task": task,
        "dependency_outputs": {d: by_id[d].output for d in task.depends_on if d in by_id},
        "round": round_,
        "depth": depth,
    }
    if window is not None:
        payload["window"] = window
    kind = settings.agent_kinds().get(task.kind)
    timeout = next(
        (t for t in (task.timeout_s, kind.timeout_s if kind else None) if t is not None),
        settings.task_timeout_s,
    )
    awaits = [d for d in task.depends_on if d not in by_id]
    if awaits:
        payload["awaits"] = awaits
        payload["timeout_s"] = timeout
        return Send(SUBAGENT, payload)
    return Send(SUBAGENT, payload, timeout=timeout)


async def dispatch(
    state: OrchestratorState,
    config: RunnableConfig,
    runtime: Runtime[RunSettings],
    *,
    eager: bool = False,
) -> list[Send] | str:
    """Fan ready tasks out, one `Send` each, a window per step; or `done` / `replan`.

    Why a window: LangGraph gates everything it submits in a step behind one
    `max_concurrency` semaphore, the checkpoint writes of finished tasks included.
    With more Sends than slots, a finished task's write waits behind every queued
    task, so a crash mid-step loses finished work (measured: none of 24 finished
    subagents of a 30-wide step had been saved). With a checkpointer, at most one
    Send per slot keeps each write immediate; the reducer dispatches the next window.
    Without one nothing is written, and the window widens (`WIDE_WINDOW`).

    `eager` (the one-node subagent, no checkpointer, a top-level run): the window
    also takes tasks whose dependencies are in it; each waits in process for their
    results, so a task starts when its own inputs are done, not when the whole
    superstep is (there is no checkpoint for such a wait to be lost from).
    """
    results = state.get("results", [])
    settings = settings_of(runtime.context)
    scope = scope_of(settings)
    ledger, _, rebuilt = ledger_for(scope.ledgers, state["plan"], results)
    if rebuilt and not settings.is_nested:
        # The run scope learns the plan and what is done: quorum checks need both,
        # and after a resume this is how a new process catches up.
        scope.sync(state["plan"], ledger.status)
    slots = config.get("max_concurrency") or settings.max_concurrency
    window = slots
    saves = saves_writes(config)
    if not saves:
        # Nothing is saved, so no write can wait behind a queued task: let LangGraph's
        # semaphore start each queued Send the moment a slot frees, within the window.
        factor, cap = WIDE_WINDOW
        window = max(slots, min(factor * slots, cap))
    key = None
    scope.close_window(ledger.window)  # its tasks have all ended: this step follows them
    ledger.window = None
    if eager and not saves and not settings.is_nested and not scope.stopped:
        # Tasks that wait for inputs only while every Send has a slot of its own:
        # a waiting task holds its slot, so it must never queue ahead of an input.
        ready = ledger.take_eager(window, slots)
        if ready:
            key = ledger.window = scope.open_window()
    else:
        ready = ledger.take_ready(window)
    if not ready:
        return REPLAN if may_replan(state, settings, ledger) else DONE
    round_ = state.get("rounds", 0) + 1
    depth = state.get("depth") or 1
    return [
        make_send(t, ledger.by_id, settings, round_=round_, depth=depth, window=key) for t in ready
    ]


async def dispatch_eager(
    state: OrchestratorState, config: RunnableConfig, runtime: Runtime[RunSettings]
) -> list[Send] | str:
    """`dispatch` for the one-node subagent, which can wait for its inputs."""
    return await dispatch(state, config, runtime, eager=True)


def may_replan(state: OrchestratorState, settings: RunSettings, ledger: Ledger) -> bool:
    """Tell whether another planning round may run.

    It may when rounds are left, every task has a result, the planner did not
    decline, and the run was not stopped (a budget, a quorum).
    """
    # A cancelled result exists only when the run stopped (a budget, a quorum); the
    # scope also knows it in this process.
    stopped = scope_of(settings).stopped or "cancelled" in ledger.status.values()
    return (
        state.get("plan_round", 1) < settings.max_rounds
        and not state.get("replan_done", False)
        and ledger.done()
        and not stopped
    )


def dispatch_path_map(done_target: str, *, replan: str | None = None) -> dict[Hashable, str]:
    """Return dispatch's path map.

    The labelled fan-out edge, where `done` goes and, when the graph re-plans, the
    `replan` edge.
    """
    routes: dict[Hashable, str] = {FAN_OUT: SUBAGENT, DONE: done_target}
    if replan is not None:
        routes[REPLAN] = replan
    return routes


REJECTED = "rejected"
"""What the first dispatch returns when the plan was rejected at approval."""


async def dispatch_approved(
    state: OrchestratorState,
    config: RunnableConfig,
    runtime: Runtime[RunSettings],
    *,
    eager: bool = False,
) -> list[Send] | str:
    """Dispatch after the approval step: a rejected plan ends the run."""
    if state.get("status") == REJECTED:
        return REJECTED
    return await dispatch(state, config, runtime, eager=eager)


async def dispatch_approved_eager(
    state: OrchestratorState, config: RunnableConfig, runtime: Runtime[RunSettings]
) -> list[Send] | str:
    """`dispatch_approved` for the one-node subagent, which can wait for its inputs."""
    return await dispatch_approved(state, config, runtime, eager=True)
