"""Every use of LangGraph's private internals, in one place.

Fanfold relies on a few things LangGraph does not promise. Each is named here,
read with a safe default where it can be missing, and pinned by a canary test
(tests/test_langgraph_canaries.py), so an upgrade of LangGraph fails CI instead of
silently changing scheduling or durability. pyproject.toml bounds LangGraph below
its next minor version for the same reason.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph._node import StateNode

__all__ = ["StateNode", "allows_every_type", "saves_writes"]


def saves_writes(config: RunnableConfig) -> bool:
    """Tell whether the run a task belongs to has a checkpointer.

    LangGraph lends its checkpointer to every task through a private config key
    (None without one). A missing key counts as a checkpointer: the safe side
    (narrow windows, every write saved at once).
    """
    conf = config.get("configurable") or {}
    return conf.get(CONFIG_KEY_CHECKPOINTER, True) is not None


def allows_every_type(serde: Any) -> bool:
    """Tell whether a JsonPlusSerializer is LangGraph's permissive default.

    The default allows every type but logs a warning for each one not on an
    allowlist; `_allowed_msgpack_modules is True` is how it says so.
    """
    return type(serde) is JsonPlusSerializer and (
        getattr(serde, "_allowed_msgpack_modules", None) is True
    )
