"""Progress events that nodes write to LangGraph's custom stream.

Each event is a typed dict with the key `fanfold` naming it, so a misspelt field
fails the type check where the event is written or read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypeGuard

from langgraph.types import StreamWriter
from typing_extensions import TypedDict

from fanfold.nodes.domain import SubagentResult, Task

EVENT_KEY = "fanfold"
"""Every Fanfold custom stream event is a dict with this key naming the event."""


class PlanReady(TypedDict):
    """The plan is validated: how many tasks, in how many generations."""

    fanfold: Literal["plan_ready"]
    tasks: int
    generations: int


class TaskStarted(TypedDict):
    """A subagent began its task (`at`: ISO 8601, UTC)."""

    fanfold: Literal["task_started"]
    task_id: str
    kind: str
    at: str


class TaskFinished(TypedDict):
    """A task ended (however it ended), with its whole result as JSON."""

    fanfold: Literal["task_finished"]
    task_id: str
    status: str
    duration_s: float
    total_tokens: int
    result: dict[str, Any]


class TaskStep(TypedDict):
    """A subagent's model replied.

    Its step count, its tokens so far, and the tools it asked for (empty: it answered).
    """

    fanfold: Literal["task_step"]
    task_id: str
    step: int
    tokens: int
    tools: list[str]
    limit: int
    """The run's model-call limit now (the adaptive limit: below `max_concurrency`
    while a server throttles)."""


ProgressEvent = PlanReady | TaskStarted | TaskStep | TaskFinished
"""Any Fanfold progress event (more kinds may come: ignore the ones you do not know)."""


def now() -> datetime:
    """Return the current time, UTC, timezone-aware."""
    return datetime.now(UTC)


def task_started(writer: StreamWriter, task: Task, at: datetime) -> None:
    """Announce that a subagent began its task."""
    event: TaskStarted = {
        "fanfold": "task_started",
        "task_id": task.id,
        "kind": task.kind,
        "at": at.isoformat(),
    }
    writer(event)


def task_finished(writer: StreamWriter, result: SubagentResult) -> None:
    """Announce how a task ended, with the whole result."""
    event: TaskFinished = {
        "fanfold": "task_finished",
        "task_id": result.task_id,
        "status": result.status,
        "duration_s": result.duration_s,
        "total_tokens": result.usage.total_tokens,
        "result": result.model_dump(mode="json"),
    }
    writer(event)


def task_step(
    writer: StreamWriter, task_id: str, step: int, tokens: int, tools: list[str], limit: int
) -> None:
    """Announce a subagent's model reply: how far it is, what it spent, what it calls."""
    event: TaskStep = {
        "fanfold": "task_step",
        "task_id": task_id,
        "step": step,
        "tokens": tokens,
        "tools": tools,
        "limit": limit,
    }
    writer(event)


def plan_ready(writer: StreamWriter, tasks: int, generations: int) -> None:
    """Announce the plan's size."""
    event: PlanReady = {"fanfold": "plan_ready", "tasks": tasks, "generations": generations}
    writer(event)


def is_event(chunk: Any) -> TypeGuard[ProgressEvent]:
    """Tell whether a custom-stream chunk is a Fanfold event."""
    return isinstance(chunk, dict) and EVENT_KEY in chunk
