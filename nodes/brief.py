"""brief: open a subagent's own conversation with its task and its inputs."""

from __future__ import annotations

import asyncio
import random

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.domain import Task, Usage
from fanfold.nodes.events import now, task_started
from fanfold.nodes.prompts import task_prompt
from fanfold.nodes.resolve import resolve_task
from fanfold.nodes.scope import scope_of
from fanfold.nodes.state import SubagentState, SubagentUpdate


async def brief(state: SubagentState, runtime: Runtime[RunSettings]) -> SubagentUpdate:
    """Start the clock and write the system and task messages."""
    settings = settings_of(runtime.context)
    task = state["task"]
    if not isinstance(task, Task):  # a plain dict when sent over HTTP
        task = Task.model_validate(task)
    spec = state.get("spec") or resolve_task(task, settings, depth=state.get("depth") or 1)
    started = now()
    task_started(runtime.stream_writer, task, started)
    # A task that LangGraph started after the run stopped (it waited for a slot in
    # a window wider than max_concurrency) ends at once, before any model call.
    scope = scope_of(runtime)
    stopped = scope.stop_error()
    if stopped is None and scope.steer is not None:
        # Steered: wait while the run is paused; a task cancelled, or a run stopping,
        # ends here before any model call.
        stopped = await scope.steer.wait_to_start(task.id)
    burst = state.get("round", 1) == 1 and not state.get("awaits")
    if settings.start_jitter_s and burst and stopped is None:
        # Spread the run's first burst of calls (when the connection pool is cold)
        # over a few milliseconds. Later windows start on warm connections, and a task
        # that waited for its inputs starts on its own, not in a burst: for them the
        # wait would only lengthen the run (by a wait per level of a DAG).
        await asyncio.sleep(random.uniform(0, settings.start_jitter_s))
    return {
        "task": task,
        "spec": spec,
        "messages": [
            SystemMessage(spec["system_prompt"]),
            HumanMessage(task_prompt(task, state.get("dependency_outputs") or {})),
        ],
        "started_at": started,
        "usage": Usage(),
        "steps": 0,
        "tool_calls": 0,
        "retries": 0,
        "tool_errors": 0,
        "error": stopped,
        "cancelled": stopped is not None,
        "subtasks": [],
    }
