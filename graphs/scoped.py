"""Compiled graphs whose every run gets its own run scope.

A run's shared layer (limits, budgets, stop signal, caches) is its `RunScope`,
carried by the `RunControl` LangGraph hands to each node of the run
(`fanfold.nodes.scope`). `ScopedGraph` starts every run it is given with a new
`ScopedControl`, whoever calls it: `ainvoke`, `astream`, `astream_events`, a
server run, or an `arun` inside a tool of another run (a run of its own, with its
own settings and policy). Only the graphs Fanfold runs as parts of a run (the
subagent subgraph, a delegated fan-out: `PartOfRun`) keep the enclosing run's
control and so its scope. No scope outlives its run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, Generic

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import RunControl, get_runtime
from langgraph.typing import ContextT, InputT, OutputT, StateT

from fanfold.nodes.context import RunSettings, check_config, concurrency, settings_of
from fanfold.nodes.scope import ScopedControl


def run_control(control: RunControl | None, *, part_of_run: bool = False) -> ScopedControl:
    """Return the control a run starts with.

    A `ScopedControl` given is used as it is. Otherwise a new one, wrapping the
    control the caller passed or the enclosing run's (so their drain requests still
    reach this run); with `part_of_run`, the enclosing Fanfold run's own control.
    """
    return _control(control, part_of_run=part_of_run)[0]


def _control(
    control: RunControl | None, *, part_of_run: bool = False
) -> tuple[ScopedControl, bool]:
    """Return `run_control(...)`, and whether it is new (the run that starts owns it)."""
    if isinstance(control, ScopedControl):
        return control, False
    if control is None:
        try:
            parent = get_runtime()
        except RuntimeError:  # called outside any runnable
            parent = None
        control = parent.control if parent is not None else None
        if part_of_run and isinstance(control, ScopedControl):
            return control, False
    return ScopedControl(control), True


async def _closing(stream: AsyncIterator[Any], control: ScopedControl) -> AsyncIterator[Any]:
    """Yield a run's stream, then release what its scope holds open (MCP sessions).

    Whichever way the stream ends: finished, failed, cancelled, or left unfinished.
    """
    try:
        async for item in stream:
            yield item
    finally:
        aclose = getattr(stream, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
        finally:
            if control.scope is not None:
                await control.scope.aclose()


MIN_RECURSION_LIMIT = 10_000


def steps_needed(settings: RunSettings) -> int:
    """Return a LangGraph recursion limit no plan these settings accept can reach.

    A run is bounded by its plan (a window of one task still takes a subagent step
    and a reducer step), so LangGraph's own limit would only cut a large plan short
    (5100 tasks at `max_concurrency=1`).
    """
    per_round = 2 * settings.max_tasks + 10
    return max(MIN_RECURSION_LIMIT, per_round * settings.max_rounds + 10)


class ScopedGraph(CompiledStateGraph[StateT, ContextT, InputT, OutputT]):
    """A compiled Fanfold graph: every run it starts has its own run scope.

    Fanfold's nodes are async: run it with `ainvoke`/`astream` (or `fanfold.run`
    from synchronous code).
    """

    part_of_run: ClassVar[bool] = False
    """Whether it runs as a part of the enclosing Fanfold run (see `PartOfRun`)."""

    def astream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        control: RunControl | None = None,
        context: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Stream a run (see `CompiledStateGraph.astream`), under its own run scope.

        The run's `max_concurrency` (the smallest of its settings', its config's and
        the graph's own) goes to the top of its config, where LangGraph reads it.

        Raises:
            SettingsError: invalid settings, or a `max_concurrency` that is not an
                integer >= 1 in the config.
        """
        check_config(self.config, owner="graph")
        check_config(config)
        settings = settings_of(context)
        merged = merge_configs(self.config, config)
        limit, _ = concurrency(settings, merged)
        run_config: RunnableConfig = {**(config or {}), "max_concurrency": limit}
        if "recursion_limit" not in merged:
            run_config["recursion_limit"] = steps_needed(settings)
        control, owned = _control(control, part_of_run=self.part_of_run)
        stream = super().astream(input, run_config, control=control, context=context, **kwargs)
        return _closing(stream, control) if owned else stream

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Refuse: Fanfold's nodes are async (LangGraph would fail at the first node).

        Raises:
            TypeError: always, saying what to call instead.
        """
        msg = (
            "Fanfold graphs run async: use `await graph.ainvoke(...)` or `graph.astream(...)`, "
            "or `fanfold.run(...)` from synchronous code"
        )
        raise TypeError(msg)


class PartOfRun(ScopedGraph[StateT, ContextT, InputT, OutputT]):
    """A graph Fanfold runs as a part of a run: the subagent subgraph, a delegated fan-out.

    It keeps the enclosing Fanfold run's control, so it shares that run's scope: one
    model-call limit, rate limit, set of budgets and stop signal for every level.
    """

    part_of_run = True


def part_of_run(
    graph: ScopedGraph[StateT, ContextT, InputT, OutputT],
) -> PartOfRun[StateT, ContextT, InputT, OutputT]:
    """Return `graph` as a part of the run that runs it (see `PartOfRun`)."""
    return PartOfRun(**_attrs(graph))


def _attrs(graph: CompiledStateGraph[Any, Any, Any, Any]) -> dict[str, Any]:
    return {k: v for k, v in graph.__dict__.items() if k != "__orig_class__"}


class ScopedStateGraph(
    StateGraph[StateT, ContextT, InputT, OutputT], Generic[StateT, ContextT, InputT, OutputT]
):
    """A `StateGraph` that compiles to a `ScopedGraph` (however the caller compiles it)."""

    def compile(self, *args: Any, **kwargs: Any) -> ScopedGraph[StateT, ContextT, InputT, OutputT]:
        """Compile as `StateGraph.compile` does, into a `ScopedGraph`."""
        return ScopedGraph(**_attrs(super().compile(*args, **kwargs)))
