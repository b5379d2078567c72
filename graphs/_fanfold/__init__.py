"""Fanfold: plan a task DAG, fan it out to parallel LLM subagents, fold it back.

This is the whole public surface: `arun`/`run` run a request (`stream_tokens` with
the models' text as it streams, by task; `start` with a handle to watch and steer
it: cancel a task, add tasks, pause, stop), `aresume` continues
a checkpointed run, `arerun` runs again what did not end ok, `execute_task` and
`execute_tasks_parallel` run given tasks without a planner; the types they take
and return; the errors they raise. The graphs themselves are in `fanfold.graphs`
(`fanfold.graphs.orchestrator.graph`).
"""

from fanfold.graphs.api import (
    RunHandle,
    RunOutput,
    TokenStream,
    arerun,
    aresume,
    arun,
    execute_task,
    execute_tasks_parallel,
    run,
    start,
    stream_tokens,
)
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import Plan, SubagentResult, Task
from fanfold.nodes.errors import (
    BudgetExceeded,
    FanfoldError,
    NothingToRerun,
    PlanError,
    QuorumUnreachable,
    TaskFailedError,
    ThreadBusy,
)
from fanfold.nodes.kinds import AgentKind
from fanfold.tools.registry import ToolRegistry

__all__ = [
    "AgentKind",
    "BudgetExceeded",
    "FanfoldError",
    "NothingToRerun",
    "Plan",
    "PlanError",
    "QuorumUnreachable",
    "RunHandle",
    "RunOutput",
    "RunSettings",
    "SubagentResult",
    "Task",
    "TaskFailedError",
    "ThreadBusy",
    "TokenStream",
    "ToolRegistry",
    "arerun",
    "aresume",
    "arun",
    "execute_task",
    "execute_tasks_parallel",
    "run",
    "start",
    "stream_tokens",
]
