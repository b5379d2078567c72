"""brief: open a subagent's own conversation with its task and its inputs."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from nodes.context import RunSettings, settings_of
from nodes.domain import Task, Usage
from nodes.events import now, task_started
from nodes.prompts import task_prompt
from nodes.state import SubagentState


async def brief(state: SubagentState, runtime: Runtime[RunSettings]) -> dict[str, Any]:
    """Start the clock and write the system and task messages."""
    settings = settings_of(runtime.context)
    task = state["task"]
    if not isinstance(task, Task):  # a plain dict when sent over HTTP
        task = Task.model_validate(task)
    kind = settings.agent_kinds().get(task.kind)
    system = kind.system_prompt if kind else settings.agent_kinds()["general"].system_prompt
    started = now()
    task_started(runtime.stream_writer, task, started)
    if settings.start_jitter_s:
        # Spread the first calls of a burst of subagents over a few milliseconds.
        await asyncio.sleep(random.uniform(0, settings.start_jitter_s))
    return {
        "task": task,
        "messages": [
            SystemMessage(system),
            HumanMessage(task_prompt(task, state.get("dependency_outputs") or {})),
        ],
        "started_at": started,
        "usage": Usage(),
        "steps": 0,
        "tool_calls": 0,
        "retries": 0,
        "tool_errors": 0,
        "error": None,
        "cancelled": False,
    }
