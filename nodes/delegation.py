"""Delegation: a subagent fans its own sub-tasks out through the orchestrator machinery.

The `delegate` tool runs a nested orchestrator (plan given, no synthesis) inside
the subagent's tool call. The nested graph runs under the same LangGraph run
control, so it shares the run's scope: one model-call concurrency limit for every
level (LangGraph's own `max_concurrency` is per graph level, so 3 x 3 nested Sends
could otherwise make 9 calls at once), one rate limit, one set of budgets. The
sub-results come back as the tool message's artifact, so they are part of the
subagent's own state (and checkpoints); `report` rolls them and their tokens up
into the delegating task's result.

The graph layer registers the runner (`register_runner`), so this module, like
every node, never imports a graph.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool

from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import Plan, SubagentResult, Task

NestedRunner = Callable[[Plan, RunSettings, int, RunnableConfig], Awaitable[list[SubagentResult]]]
"""Runs a plan as a nested fan-out at a depth; returns its results in plan order."""

DELEGATE = "delegate"
MAX_SUBTASKS = 10

_runner: NestedRunner | None = None


def register_runner(runner: NestedRunner) -> None:
    """Install the nested fan-out runner (done by `fanfold.graphs.orchestrator` on import)."""
    global _runner
    _runner = runner


def can_delegate(settings: RunSettings, depth: int) -> bool:
    """Tell whether a subagent at `depth` may spawn sub-tasks (depth 1: top level)."""
    return depth < settings.max_depth and _runner is not None


def make_delegate_tool(settings: RunSettings, *, parent: Task, depth: int) -> BaseTool:
    """Return the `delegate` tool for one subagent at one depth.

    Its message for the model lists each sub-task's outcome; its artifact is the
    list of sub-task results.
    """

    async def delegate(
        tasks: list[str], config: RunnableConfig
    ) -> tuple[str, list[SubagentResult]]:
        """Split your work: run up to 10 self-contained sub-tasks in parallel, one subagent each.

        Returns each sub-task's result, in order. Use it only for independent parts.
        """
        if _runner is None:  # pragma: no cover - graphs registers it on import
            raise RuntimeError("no nested runner registered")
        if not tasks:
            raise ValueError("give at least one sub-task")
        if len(tasks) > MAX_SUBTASKS:
            raise ValueError(f"at most {MAX_SUBTASKS} sub-tasks, got {len(tasks)}")
        subtasks = [
            Task(id=f"{parent.id}.{i}", description=text, kind="general")
            for i, text in enumerate(tasks, start=1)
        ]
        results = await _runner(Plan(tasks=subtasks), settings, depth + 1, config)
        lines = []
        for r in results:
            body = (
                r.output
                if r.status == "ok"
                else f"{r.error.type}: {r.error.message}"
                if r.error
                else ""
            )
            lines.append(f"[{r.task_id} {r.status}] {body}")
        return "\n".join(lines), results

    return StructuredTool.from_function(
        coroutine=delegate,
        name=DELEGATE,
        description=delegate.__doc__,
        response_format="content_and_artifact",
    )
