"""Progress events that nodes write to LangGraph's custom stream."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from langgraph.types import StreamWriter

from fanfold.nodes.domain import SubagentResult, Task

EVENT_KEY = "fanfold"
"""Every Fanfold custom stream event is a dict with this key naming the event."""

EventName = Literal["plan_ready", "task_started", "task_finished"]


def now() -> datetime:
    """Return the current time, UTC, timezone-aware."""
    return datetime.now(UTC)


def task_started(writer: StreamWriter, task: Task, at: datetime) -> None:
    """Announce that a subagent began its task."""
    writer({EVENT_KEY: "task_started", "task_id": task.id, "kind": task.kind, "at": at.isoformat()})


def task_finished(writer: StreamWriter, result: SubagentResult) -> None:
    """Announce how a task ended, with the whole result."""
    writer(
        {
            EVENT_KEY: "task_finished",
            "task_id": result.task_id,
            "status": result.status,
            "duration_s": result.duration_s,
            "total_tokens": result.usage.total_tokens,
            "result": result.model_dump(mode="json"),
        }
    )


def plan_ready(writer: StreamWriter, tasks: int, generations: int) -> None:
    """Announce the plan's size."""
    writer({EVENT_KEY: "plan_ready", "tasks": tasks, "generations": generations})


def is_event(chunk: Any) -> bool:
    """Tell whether a custom-stream chunk is a Fanfold event."""
    return isinstance(chunk, dict) and EVENT_KEY in chunk
