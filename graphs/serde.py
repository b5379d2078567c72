"""Let checkpointers restore Fanfold's own types without warnings."""

from __future__ import annotations

from typing import Any, TypeVar

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from fanfold.nodes.domain import ErrorInfo, Plan, RunMetrics, SubagentResult, Task, Usage
from fanfold.nodes.kinds import AgentKind
from fanfold.nodes.lg import allows_every_type

FANFOLD_TYPES: tuple[type[Any], ...] = (
    Task,
    Plan,
    SubagentResult,
    Usage,
    RunMetrics,
    ErrorInfo,
    AgentKind,
)


C = TypeVar("C")


def allow_fanfold_types(checkpointer: C) -> C:
    """Let a checkpointer restore Fanfold's models without a warning per value, in place.

    LangGraph's default serializer allows every type but logs a warning for each
    one not on an allowlist ("Deserializing unregistered type ..."), and will
    block them in a future version. A default serializer is replaced by one whose
    allowlist is exactly Fanfold's models (LangGraph's safe types, messages
    included, are always allowed); an explicit allowlist is extended.
    """
    serde = getattr(checkpointer, "serde", None)
    if type(serde) is not JsonPlusSerializer:
        return checkpointer  # a custom or encrypting serializer: the owner decides
    if allows_every_type(serde):
        replacement = JsonPlusSerializer(
            pickle_fallback=serde.pickle_fallback, allowed_msgpack_modules=FANFOLD_TYPES
        )
    else:
        replacement = serde.with_msgpack_allowlist(FANFOLD_TYPES)
    setattr(checkpointer, "serde", replacement)  # noqa: B010
    return checkpointer
