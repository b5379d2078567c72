"""Let checkpointers restore Fanfold's own types without warnings."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Checkpointer

from nodes.domain import ErrorInfo, Plan, RunMetrics, SubagentResult, Task, Usage
from nodes.kinds import AgentKind

FANFOLD_TYPES: tuple[type[Any], ...] = (
    Task,
    Plan,
    SubagentResult,
    Usage,
    RunMetrics,
    ErrorInfo,
    AgentKind,
)


def allow_fanfold_types(checkpointer: Checkpointer) -> Checkpointer:
    """Add Fanfold's models to a checkpointer's msgpack allowlist, in place."""
    serde = getattr(checkpointer, "serde", None)
    if isinstance(serde, JsonPlusSerializer):
        checkpointer.serde = serde.with_msgpack_allowlist(FANFOLD_TYPES)  # type: ignore[union-attr]
    return checkpointer
