"""dispatch: route every ready task to its own subagent through `Send`."""

from __future__ import annotations

from langgraph.runtime import Runtime
from langgraph.types import Send

from nodes.context import RunSettings, settings_of
from nodes.domain import Plan, SubagentResult, Task
from nodes.state import OrchestratorState, SubagentInput

SUBAGENT = "subagent"
"""The node that runs one task."""


def ready_tasks(plan: Plan, results: list[SubagentResult]) -> list[Task]:
    """Return, in plan order, the tasks with no result whose dependencies all ended ok."""
    by_id = {r.task_id: r for r in results}
    return [
        t
        for t in plan.tasks
        if t.id not in by_id and all(d in by_id and by_id[d].status == "ok" for d in t.depends_on)
    ]


def make_send(task: Task, results: list[SubagentResult], settings: RunSettings) -> Send:
    """Return the `Send` that runs one task, with its dependencies' outputs and timeout."""
    by_id = {r.task_id: r for r in results}
    payload: SubagentInput = {
        "task": task,
        "dependency_outputs": {d: by_id[d].output for d in task.depends_on},
    }
    timeout = task.timeout_s if task.timeout_s is not None else settings.task_timeout_s
    return Send(SUBAGENT, payload, timeout=timeout)


def dispatch_to(done: str):  # type: ignore[no-untyped-def]
    """Return the routing function; `done` is where to go when nothing is ready."""

    def dispatch(state: OrchestratorState, runtime: Runtime[RunSettings]) -> list[Send] | str:
        """Fan the ready tasks out, or go on to `done`."""
        results = state.get("results", [])
        ready = ready_tasks(state["plan"], results)
        if not ready:
            return done
        settings = settings_of(runtime.context)
        return [make_send(t, results, settings) for t in ready]

    return dispatch
