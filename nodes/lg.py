"""Every use of LangGraph's private internals, in one place.

Fanfold relies on a few things LangGraph does not promise. Each is named here,
read with a safe default where it can be missing, and pinned by a canary test
(tests/test_langgraph_canaries.py), so an upgrade of LangGraph fails CI instead of
silently changing scheduling or durability. pyproject.toml bounds LangGraph below
its next minor version for the same reason.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER
from langgraph._internal._typing import MISSING
from langgraph.channels.binop import _get_overwrite
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from langgraph.graph._node import StateNode

__all__ = ["DeltaValue", "StateNode", "allows_every_type", "saves_writes"]

NEVER_SNAPSHOT = 10**9
"""A delta channel's `snapshot_frequency` that never comes: LangGraph still snapshots at
an `Overwrite`, at a fork and every 5000 supersteps (its own bound)."""


def saves_writes(config: RunnableConfig) -> bool:
    """Tell whether the run a task belongs to has a checkpointer.

    LangGraph lends its checkpointer to every task through a private config key
    (None without one). A missing key counts as a checkpointer: the safe side
    (narrow windows, every write saved at once).
    """
    conf = config.get("configurable") or {}
    return conf.get(CONFIG_KEY_CHECKPOINTER, True) is not None


def as_if_unsaved(config: RunnableConfig) -> RunnableConfig:
    """Return `config` as a run without a checkpointer would see it (`saves_writes` false).

    For an engine whose durability is not LangGraph's (Temporal: the workflow's history)
    while its graph keeps a checkpointer for interrupts.
    """
    conf = {**(config.get("configurable") or {}), CONFIG_KEY_CHECKPOINTER: None}
    return {**config, "configurable": conf}


def allows_every_type(serde: Any) -> bool:
    """Tell whether a JsonPlusSerializer is LangGraph's permissive default.

    The default allows every type but logs a warning for each one not on an
    allowlist; `_allowed_msgpack_modules is True` is how it says so.
    """
    return type(serde) is JsonPlusSerializer and (
        getattr(serde, "_allowed_msgpack_modules", None) is True
    )


def _last(left: Any, writes: Sequence[Any]) -> Any:
    return writes[-1] if writes else left


class DeltaValue(DeltaChannel[Any]):
    """A channel holding one value that each write replaces, saved as a delta.

    LangGraph's `LastValue` is stored whole in every checkpoint (SQLite stores every
    channel's value in each checkpoint), so a big value written once, the plan,
    would be re-saved at every step. A `DeltaChannel` stores only the write that set
    it and rebuilds the value from its ancestors' writes on load. LangGraph's
    `DeltaChannel` (beta) is made for reducers over collections: it starts empty
    from `typ()`, which a `Plan` or a `str | None` cannot be. This one starts
    missing, as `LastValue` does; what it overrides is pinned by canary tests.
    """

    def __init__(
        self,
        reducer: Callable[[Any, Sequence[Any]], Any] = _last,
        typ: Any = None,
        *,
        snapshot_frequency: int = NEVER_SNAPSHOT,
    ) -> None:
        super().__init__(reducer, typ, snapshot_frequency=snapshot_frequency)

    def copy(self) -> DeltaValue:
        """Return a copy sharing the value, as `LastValue` does.

        A write replaces the value, never changes it; the plan keeps its identity,
        which the run's ledgers key on.
        """
        new = self.from_checkpoint(MISSING)
        new.value = self.value
        return new

    def from_checkpoint(self, checkpoint: Any) -> DeltaValue:
        """Restore a snapshot or a plain value (a thread saved before this channel).

        Without either, start missing: LangGraph replays the writes next.
        """
        new = DeltaValue(self.reducer, self.typ, snapshot_frequency=self.snapshot_frequency)
        new.key = self.key
        if isinstance(checkpoint, _DeltaSnapshot):
            new.value = checkpoint.value
        elif checkpoint is not MISSING and checkpoint is not None:
            new.value = checkpoint
        return new

    def update(self, values: Sequence[Any]) -> bool:
        """Take the step's last write (an `Overwrite` sets the value just the same)."""
        if not values:
            return False
        last = values[-1]
        is_overwrite, value = _get_overwrite(last)
        self.value = copy.copy(value) if is_overwrite else last
        return True
