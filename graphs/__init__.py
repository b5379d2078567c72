"""Fanfold: plan a task DAG, fan it out to parallel LLM subagents, fold it back.

The public face: `build_orchestrator` and friends wire LangGraph graphs;
`arun`/`run` run a request; `execute_task` and `execute_tasks_parallel` run
given tasks without a planner.
"""

from graphs.api import (
    RunOutput,
    aresume,
    arun,
    execute_task,
    execute_tasks_parallel,
    run,
)
from graphs.checkpoint import open_checkpointer
from graphs.orchestrator import build_orchestrator, compile_orchestrator
from graphs.subagent import build_subagent, compile_subagent
from nodes.context import RunSettings
from nodes.domain import Plan, RunMetrics, SubagentResult, Task, Usage
from nodes.errors import (
    BudgetExceeded,
    FanfoldError,
    PlanError,
    QuorumUnreachable,
    TaskFailedError,
)
from nodes.models import load_chat_model

__all__ = [
    "BudgetExceeded",
    "FanfoldError",
    "Plan",
    "PlanError",
    "QuorumUnreachable",
    "RunMetrics",
    "RunOutput",
    "RunSettings",
    "SubagentResult",
    "Task",
    "TaskFailedError",
    "Usage",
    "aresume",
    "arun",
    "build_orchestrator",
    "build_subagent",
    "compile_orchestrator",
    "compile_subagent",
    "execute_task",
    "execute_tasks_parallel",
    "load_chat_model",
    "open_checkpointer",
    "run",
]
