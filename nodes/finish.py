"""finish: the one way a result leaves a subagent.

Whether a task reported, raised, timed out, was skipped or was cancelled while it
waited, its result goes out through `finish`: the `task_finished` event, the run's
live statuses and its policy (which may stop the run), and the eager window of the
tasks waiting for it. Nothing else writes a subagent's result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from fanfold.nodes.context import RunSettings, quorum_of, settings_of
from fanfold.nodes.domain import SubagentResult
from fanfold.nodes.errors import QuorumUnreachable, TaskFailedError
from fanfold.nodes.events import task_finished
from fanfold.nodes.policy import can_still_succeed, quorum_met
from fanfold.nodes.scope import RunScope
from fanfold.nodes.state import SubagentUpdate


def finish(
    result: SubagentResult,
    payload: Mapping[str, Any],
    runtime: Runtime[RunSettings],
    scope: RunScope,
) -> SubagentUpdate:
    """Announce a task's result, apply the run's policy, and return the write to the parent.

    `payload`: the task's Send payload (or the subagent's state), for its depth and
    eager window.

    Raises:
        TaskFailedError: under `fail_fast`, for a result that is not ok.
        QuorumUnreachable: under `quorum:K`, once K successes are out of reach.
    """
    task_finished(runtime.stream_writer, result)
    window = payload.get("window")
    if (payload.get("depth") or 1) == 1:  # a delegated sub-task's result is its parent's to read
        try:
            apply_policy(result, settings_of(runtime.context), scope)
        except (TaskFailedError, QuorumUnreachable):
            scope.close_window(window)  # the run stops: nobody will wait on it again
            raise
    scope.publish(window, result)
    return {"results": [result]}


def apply_policy(result: SubagentResult, settings: RunSettings, scope: RunScope) -> None:
    """Record a finished top-level task run-wide and act on the run's policy.

    Raises:
        TaskFailedError: under `fail_fast`, for a result that is not ok.
        QuorumUnreachable: under `quorum:K`, once K successes are out of reach.
    """
    scope.status[result.task_id] = result.status
    k = quorum_of(settings.policy)
    if result.status == "ok":
        if k is not None and quorum_met(scope.status, k):
            scope.stop("quorum", f"quorum of {k} ok tasks reached")
        return
    if result.status in ("cancelled", "skipped"):
        return  # the run stopped, or a failure that was counted when it happened
    if settings.policy == "fail_fast":
        failure = TaskFailedError(result)
        # Stop at once: running siblings are cancelled, queued ones end before they start
        # (the handler that stops the run may wait for a slot behind them).
        scope.stop("failed", str(failure))
        raise failure
    if k is not None and scope.plan is not None:
        possible = can_still_succeed(scope.plan, scope.status)
        if possible < k:
            msg = f"quorum of {k} is out of reach: at most {possible} tasks can still end ok"
            scope.stop("failed", msg)
            raise QuorumUnreachable(msg)
