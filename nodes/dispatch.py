"""dispatch: route every ready task to its own subagent through `Send`."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from langgraph.types import Send

from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.domain import SubagentResult, Task
from fanfold.nodes.errors import SettingProblem, SettingsError
from fanfold.nodes.ledger import Ledger, ledger_for
from fanfold.nodes.lg import saves_writes
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
) -> Send:
    """Return the `Send` that runs one task: its resolved spec, its inputs, its timeout.

    `by_id`: the results so far. A dependency without a result yet (sent in the same
    eager `window`) is listed in `awaits` instead; the task's timeout then travels in
    the payload, to count from when its inputs are ready, and the Send has none.
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
        payload["timeout_s"] = spec["timeout_s"]
        return Send(SUBAGENT, payload)
    return Send(SUBAGENT, payload, timeout=spec["timeout_s"])


def concurrency(settings: RunSettings, config: RunnableConfig) -> tuple[int, int | None]:
    """Return the run's subagent limit and LangGraph's own (None: LangGraph has none).

    The limit is the smallest `max_concurrency` set anywhere: the run's settings
    (its context, as Studio sets it), the top level of the run config (where
    LangGraph reads it), or `configurable` (where LangGraph ignores it).

    Raises:
        SettingsError: a config value that is not an integer >= 1.
    """
    graph_limit = _config_limit(config.get("max_concurrency"), "config")
    nested = _config_limit(
        (config.get("configurable") or {}).get("max_concurrency"), "configurable"
    )
    limit = min(v for v in (settings.max_concurrency, graph_limit, nested) if v is not None)
    return limit, graph_limit


def check_config(config: RunnableConfig | None) -> None:
    """Refuse a run config whose `max_concurrency` LangGraph could not use.

    Raises:
        SettingsError: a `max_concurrency` (top level or configurable) that is not an
            integer >= 1 (LangGraph would hang on 0).
    """
    if config:
        _config_limit(config.get("max_concurrency"), "config")
        _config_limit((config.get("configurable") or {}).get("max_concurrency"), "configurable")


def _config_limit(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problem = SettingProblem(
            "max_concurrency", None, f"an integer >= 1 (in the run's {where})", value
        )
        raise SettingsError([problem])
    return value


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
        settings = settings_of(runtime.context)
        scope = scope_of(runtime)
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
            return REPLAN if may_replan(state, settings, ledger, scope) else DONE
        round_ = state.get("rounds", 0) + 1
        return [
            make_send(t, ledger.by_id, settings, round_=round_, depth=depth, window=key)
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
