"""dispatch: route every ready task to its own subagent through `Send`."""

from __future__ import annotations

from collections.abc import Hashable

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from langgraph.types import Send

from fanfold.nodes.context import RunSettings, concurrency, quorum_of, settings_of
from fanfold.nodes.domain import SubagentResult, Task
from fanfold.nodes.errors import QuorumUnreachable
from fanfold.nodes.ledger import Ledger, ledger_for
from fanfold.nodes.lg import saves_writes
from fanfold.nodes.policy import quorum_met
from fanfold.nodes.resolve import resolve_task
from fanfold.nodes.scope import RunScope, scope_of
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
REJECTED = "rejected"
"""What the first dispatch returns when the plan was rejected at approval."""
STOPPED = "stopped"
"""What the first dispatch returns when the run stopped before it had a plan (a budget)."""
WIDE_WINDOW = (16, 256)
"""Without a checkpointer a window holds up to 16 x `max_concurrency` Sends, at most 256
(never fewer than `max_concurrency`): LangGraph's cost per finished task grows with the
width of its superstep, and the barrier between windows costs less the wider they are."""


def make_send(
    task: Task,
    by_id: dict[str, SubagentResult],
    settings: RunSettings,
    *,
    round_: int = 1,
    depth: int = 1,
    window: str | None = None,
    steered: bool = False,
) -> Send:
    """Return the `Send` that runs one task: its resolved spec, its inputs, its timeout.

    `by_id`: the results so far. A dependency without a result yet (sent in the same
    eager `window`) is listed in `awaits` instead; the task's timeout then travels in
    the payload, to count from when its inputs are ready, and the Send has none. So it
    does for every task of a `steered` run: a task held by a pause has not started.
    """
    spec = resolve_task(task, settings, depth=depth)
    payload: SubagentInput = {
        "task": task,
        "spec": spec,
        "dependency_outputs": {d: by_id[d].output for d in task.depends_on if d in by_id},
        "round": round_,
        "depth": depth,
    }
    if window is not None:
        payload["window"] = window
    awaits = [d for d in task.depends_on if d not in by_id]
    if awaits:
        payload["awaits"] = awaits
    if awaits or steered:
        payload["timeout_s"] = spec["timeout_s"]
        return Send(SUBAGENT, payload)
    return Send(SUBAGENT, payload, timeout=spec["timeout_s"])


class Dispatch:
    """The routing function that fans ready tasks out; its mode is fixed when the graph is built.

    `eager` (the one-node subagent): without a checkpointer, in a top-level run,
    a window also takes tasks whose dependencies are in it; each waits in process
    for their results, so a task starts when its own inputs are done, not when the
    whole superstep is (there is no checkpoint for such a wait to be lost from).
    """

    def __init__(self, *, eager: bool) -> None:
        self.eager = eager

    async def route(
        self, state: OrchestratorState, config: RunnableConfig, runtime: Runtime[RunSettings]
    ) -> list[Send] | str:
        """Fan ready tasks out, one `Send` each, a window per step; or done / replan / rejected.

        Why a window: LangGraph gates everything it submits in a step behind one
        `max_concurrency` semaphore, the checkpoint writes of finished tasks
        included. With more Sends than slots, a finished task's write waits behind
        every queued task, so a crash mid-step loses finished work (measured: none
        of 24 finished subagents of a 30-wide step had been saved). With a
        checkpointer, at most one Send per slot keeps each write immediate; the
        reducer dispatches the next window. Without one nothing is written, and the
        window widens (`WIDE_WINDOW`) as far as LangGraph's own limit enforces the
        run's: where the run's limit is the smaller one, a window never holds more
        Sends than it allows, so no task waits for a slot (its timeout running).
        """
        if state.get("status") == REJECTED:
            return REJECTED
        if state.get("plan") is None:
            return STOPPED  # the planner ran out of budget: there is nothing to run
        settings = settings_of(runtime.context)
        scope = scope_of(runtime)
        if scope.steer is not None:
            scope.steer.plan = state["plan"]  # what a handle's added tasks are checked against
            await scope.steer.wait_for_dispatch()  # paused: no new window until resumed
        depth = state.get("depth") or 1
        ledger = self._ledger(state, scope, nested=depth > 1)
        limit, graph_limit = concurrency(settings, config)
        saves = saves_writes(config)
        window = limit
        if not saves and graph_limit == limit:
            # Nothing is saved, so no write can wait behind a queued task: let LangGraph's
            # semaphore start each queued Send the moment a slot frees, within the window.
            factor, cap = WIDE_WINDOW
            window = max(limit, min(factor * limit, cap))
        key = None
        scope.close_window(ledger.window)  # its tasks have all ended: this step follows them
        ledger.window = None
        if self.eager and not saves and depth == 1 and not scope.stopped:
            # Tasks that wait for inputs only while every Send has a slot of its own:
            # a waiting task holds its slot, so it must never queue ahead of an input.
            ready = ledger.take_eager(window, limit)
            if ready:
                key = ledger.window = scope.open_window()
        else:
            ready = ledger.take_ready(window)
        if not ready:
            if may_replan(state, settings, ledger, scope):
                return REPLAN
            if depth == 1:
                check_quorum(settings, ledger, scope, state)
            return DONE
        round_ = state.get("rounds", 0) + 1
        # The one-node subagent applies a payload timeout after a pause; the subgraph
        # (`step` granularity) keeps LangGraph's Send timeout.
        steered = scope.steer is not None and self.eager
        return [
            make_send(
                t, ledger.by_id, settings, round_=round_, depth=depth, window=key, steered=steered
            )
            for t in ready
        ]

    @staticmethod
    def _ledger(state: OrchestratorState, scope: RunScope, *, nested: bool) -> Ledger:
        ledger, _, rebuilt = ledger_for(scope.ledgers, state["plan"], state.get("results", []))
        if rebuilt and not nested:
            # The run scope learns the plan and what is done: quorum checks need both,
            # and after a resume this is how a new process catches up.
            scope.sync(state["plan"], ledger.status)
        return ledger


def check_quorum(
    settings: RunSettings, ledger: Ledger, scope: RunScope, state: OrchestratorState
) -> None:
    """At the end of a top-level run, fail it when its quorum was never met.

    A failure reports an unreachable quorum at once; this catches the rest: fewer
    tasks than K in the end, or tasks cancelled without the quorum met.

    Raises:
        QuorumUnreachable: `quorum:K`, every task done, fewer than K ended ok, and the
            run was not stopped by a budget.
    """
    k = quorum_of(settings.policy)
    if k is None or not ledger.done() or quorum_met(ledger.status, k):
        return
    stopped = scope.stop_error() or state.get("stopped")
    if stopped is not None and stopped.type == "BudgetExceeded":
        return  # the run ends budget_exceeded, with what it has
    ok = sum(1 for s in ledger.status.values() if s == "ok")
    msg = f"quorum of {k} is out of reach: {ok} of {len(ledger.plan.tasks)} tasks ended ok"
    raise QuorumUnreachable(msg)


def may_replan(
    state: OrchestratorState, settings: RunSettings, ledger: Ledger, scope: RunScope
) -> bool:
    """Tell whether another planning round may run.

    It may when rounds are left, every task has a result, the planner did not
    decline, and the run was not stopped (a budget, a quorum).
    """
    stopped = (
        scope.stopped
        or state.get("stopped") is not None
        or "cancelled" in ledger.status.values()  # only a stopped run cancels tasks
    )
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
