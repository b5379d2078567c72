"""Compiled graphs whose every run gets its own run scope.

A run's shared layer (limits, budgets, stop signal, caches) is its `RunScope`,
carried by the `RunControl` LangGraph hands to each node of the run
(`fanfold.nodes.scope`). `ScopedGraph` starts every run it is given with a
`ScopedControl`: a new one for a run of its own, the enclosing Fanfold run's for
a graph a Fanfold node runs (a delegated fan-out, the subagent subgraph). So
`ainvoke`, `astream`, `invoke`, `stream`, a server run and a nested run all get
the right scope, whoever calls them, and no scope outlives its run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic

from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import RunControl, get_runtime
from langgraph.typing import ContextT, InputT, OutputT, StateT

from fanfold.nodes.dispatch import check_config
from fanfold.nodes.scope import ScopedControl


def run_control(control: RunControl | None) -> ScopedControl:
    """Return the control a run starts with: its caller's, if it is a Fanfold run's.

    A control the caller passed (or an enclosing non-Fanfold graph's) is wrapped,
    so its drain requests still reach the run.
    """
    if isinstance(control, ScopedControl):
        return control
    if control is None:
        try:
            parent = get_runtime()
        except RuntimeError:  # called outside any runnable
            parent = None
        control = parent.control if parent is not None else None
        if isinstance(control, ScopedControl):
            return control  # a graph run by a node of a Fanfold run: the same run
    return ScopedControl(control)


class ScopedGraph(CompiledStateGraph[StateT, ContextT, InputT, OutputT]):
    """A compiled Fanfold graph: every run it starts has its own run scope."""

    def astream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        control: RunControl | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Stream a run (see `CompiledStateGraph.astream`), under its own run scope."""
        check_config(config)
        return super().astream(input, config, control=run_control(control), **kwargs)

    def stream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        control: RunControl | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Stream a run (see `CompiledStateGraph.stream`), under its own run scope."""
        check_config(config)
        return super().stream(input, config, control=run_control(control), **kwargs)


class ScopedStateGraph(
    StateGraph[StateT, ContextT, InputT, OutputT], Generic[StateT, ContextT, InputT, OutputT]
):
    """A `StateGraph` that compiles to a `ScopedGraph` (however the caller compiles it)."""

    def compile(self, *args: Any, **kwargs: Any) -> ScopedGraph[StateT, ContextT, InputT, OutputT]:
        """Compile as `StateGraph.compile` does, into a `ScopedGraph`."""
        compiled = super().compile(*args, **kwargs)
        attrs = {k: v for k, v in compiled.__dict__.items() if k != "__orig_class__"}
        return ScopedGraph(**attrs)
