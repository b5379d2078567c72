"""Test data for graph tests; the task-keyed fake model itself ships as `fanfold.testing`."""

from __future__ import annotations

import random
from typing import Any

from fanfold.testing import (
    REPLY_USAGE,
    TASK_RE,
    AsyncFakeModel,
    ModelCall,
    Recorder,
    ScriptError,
    TaskScript,
    TaskScriptedModel,
    node_runtime,
    tool_names,
)

__all__ = [
    "REPLY_USAGE",
    "TASK_RE",
    "AsyncFakeModel",
    "ModelCall",
    "Recorder",
    "ScriptError",
    "TaskScript",
    "TaskScriptedModel",
    "dag_plan",
    "node_runtime",
    "scripts_for",
    "tool_names",
]


def dag_plan(n: int = 20, *, seed: int = 7) -> dict[str, Any]:
    """Return a plan of `n` tasks in three layers with dependencies, as plain data."""
    rng = random.Random(seed)
    tasks: list[dict[str, Any]] = []
    first, second = n * 2 // 5, n * 7 // 10
    for i in range(1, n + 1):
        tid = f"t{i:02d}"
        if i <= first:
            deps: list[str] = []
        elif i <= second:
            deps = sorted(rng.sample([f"t{j:02d}" for j in range(1, first + 1)], 2))
        else:
            deps = sorted(rng.sample([f"t{j:02d}" for j in range(first + 1, second + 1)], 2))
        tasks.append(
            {
                "id": tid,
                "description": f"work item {i}",
                "kind": "analyst",
                "depends_on": deps,
                "tools": ["calculator"],
            }
        )
    return {"tasks": tasks, "rationale": "three layers"}


def scripts_for(
    plan: dict[str, Any], *, seed: int = 11, **overrides: TaskScript
) -> dict[str, TaskScript]:
    """Return a script per task: random latency, one calculator call each."""
    rng = random.Random(seed)
    out = {}
    for i, t in enumerate(plan["tasks"], start=1):
        out[t["id"]] = TaskScript(latency=rng.uniform(0.005, 0.06), expression=f"{i} * 1000 + 7")
    out.update(overrides)
    return out
