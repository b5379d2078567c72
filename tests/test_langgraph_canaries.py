"""Canaries: the LangGraph behaviour Fanfold designs around, pinned one test each.

Fanfold's scheduling and durability lean on things LangGraph does but does not
promise: when a finished task's checkpoint write is put, what re-raising in an error
handler does, where `max_concurrency` is read, which private config key lends the
checkpointer to a task, and so on (docs/ARCHITECTURE.md, "LangGraph behaviour we
design around"; every private name is read in nodes/lg.py). An upgrade that changes
one of them would not break an import; it would quietly change how runs are
scheduled or what a crash loses. Each canary here builds a tiny graph of its own,
uses LangGraph directly, and asserts the behaviour, so such an upgrade fails CI
instead. Each docstring names the Fanfold code that relies on the behaviour.

No canary measures a sleep, except where the behaviour itself is about time (Send
timeouts), and then with margins of several tenths of a second. Ordering is driven by
`asyncio.Event` gates the test opens itself. Every run is bounded by
`asyncio.timeout`, so a changed behaviour fails a canary instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import operator
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.errors import NodeError, NodeTimeoutError
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import RunControl, Runtime
from langgraph.types import Command, Overwrite, Send
from pydantic import BaseModel

from fanfold.nodes.lg import NEVER_SNAPSHOT, DeltaValue, allows_every_type, saves_writes

RUN_BOUND_S = 10.0
"""Upper bound on any one run: a canary whose behaviour changed fails, never hangs."""

SETTLE_S = 0.3
"""How long a canary waits for something that should NOT happen (a write, a
cancellation) before it concludes it did not. When the thing does happen, it takes a
few event-loop turns, far below this."""

AT_ONCE_S = 2.0
"""How long a canary waits for something that should happen at once."""


def concat(left: list[Any] | None, right: list[Any] | None) -> list[Any]:
    """Append, like Fanfold's `merge_results` (nodes/state.py)."""
    return [*(left or []), *(right or [])]


class Done(TypedDict, total=False):
    """The state of most canaries: what the tasks wrote, appended."""

    done: Annotated[list[Any], operator.add]
    reached: bool


class Items(TypedDict, total=False):
    """A list channel with a custom appending reducer, like Fanfold's `results`."""

    items: Annotated[list[Any], concat]


class Point(BaseModel):
    """A pydantic model for the serializer canary."""

    x: int
    tags: list[str]


class Other(BaseModel):
    """A second pydantic model, not on the first allowlist."""

    name: str


class Scoped(RunControl):
    """A RunControl with a slot of its own, as Fanfold would give each run its scope."""

    __slots__ = ("scope",)


async def happens_within(event: asyncio.Event, seconds: float) -> bool:
    """Tell whether `event` is set within `seconds` (the wait is a bound, not a measure)."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


@contextlib.asynccontextmanager
async def running(
    coro: Coroutine[Any, Any, Any], unblock: Callable[[], None] | None = None
) -> AsyncIterator[asyncio.Task[Any]]:
    """Run `coro` as a task while the test drives it; end it if the test fails.

    A failed canary first `unblock`s the run's gates and lets it finish (cancelling a
    task still queued for a slot leaves a coroutine LangGraph never awaited, whose
    warning would bury the failure), and cancels it only if it still hangs.
    """
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        if not task.done() and unblock is not None:
            unblock()
            await asyncio.wait([task], timeout=AT_ONCE_S)
        if not task.done():
            task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: asyncio must not log it as lost


def thread(name: str, **extra: Any) -> RunnableConfig:
    """Return a run config on its own checkpoint thread."""
    return RunnableConfig(configurable={"thread_id": name}, **extra)


# --- 1. checkpoint writes and the max_concurrency semaphore -----------------------------


class WriteProbe(InMemorySaver):
    """An InMemorySaver that notes, in order, which tickets' writes it is asked to put."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.written: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        for channel, value in writes:
            if channel == "done":
                for ticket in value:
                    self.log.append(f"write {ticket}")
                    self.written[ticket].set()
        await super().aput_writes(config, writes, task_id, task_path)


class Gated:
    """Tasks of one superstep: the first to start finishes at once, the rest wait.

    Each task takes a ticket as it starts (so "ticket 0" is whichever task got a
    slot first, whatever order LangGraph starts them in); ticket 0 returns at once,
    every other ticket waits for its own gate, which the test opens.
    """

    def __init__(self, log: list[str], sends: int) -> None:
        self.log = log
        self.sends = sends
        self.tickets = itertools.count()
        self.started: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self.gates: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)

    async def work(self, _: int) -> Done:
        ticket = next(self.tickets)
        self.log.append(f"start {ticket}")
        self.started[ticket].set()
        if ticket:
            await self.gates[ticket].wait()
        return {"done": [ticket]}

    async def wait_started(self, *tickets: int) -> None:
        async with asyncio.timeout(AT_ONCE_S):
            for ticket in tickets:
                await self.started[ticket].wait()

    def open(self, *tickets: int) -> None:
        self.log.append(f"open {' '.join(map(str, tickets))}")
        for ticket in tickets:
            self.gates[ticket].set()

    def open_all(self) -> None:
        self.open(*range(1, self.sends))

    def graph(self, saver: InMemorySaver) -> Any:
        graph = StateGraph(Done)
        graph.add_node("work", self.work)
        graph.add_conditional_edges(START, lambda _: [Send("work", i) for i in range(self.sends)])
        graph.add_edge("work", END)
        return graph.compile(checkpointer=saver)


async def test_checkpoint_writes_wait_behind_queued_tasks() -> None:
    """A finished task's checkpoint write waits for a slot, behind the queued tasks.

    LangGraph's async executor gates everything it submits in a run behind one
    `max_concurrency` semaphore, the checkpointer's `aput_writes` for a finished task
    included. With more Sends than slots, that write queues behind the Sends still
    waiting for a slot, and is not put while the slots are held: a crash then loses
    the finished result. Fanfold relies on this in nodes/dispatch.py (`dispatch`):
    with a checkpointer it sends at most `max_concurrency` tasks per superstep, and
    without one it widens the window (`WIDE_WINDOW`) because there is nothing to lose.
    If this canary fails, LangGraph puts writes at once now: dispatch could send a
    wide window with a checkpointer too (and ARCHITECTURE.md should say so).
    """
    log: list[str] = []
    saver = WriteProbe(log)
    tasks = Gated(log, sends=4)
    app = tasks.graph(saver)
    async with (
        asyncio.timeout(RUN_BOUND_S),
        running(app.ainvoke({}, thread("queued", max_concurrency=2)), tasks.open_all) as run,
    ):
        # Slots: ticket 0 (finished at once), then 1 and 2 (waiting); the fourth Send
        # is queued for a slot, and ticket 0's write queues behind it.
        await tasks.wait_started(0, 1, 2)
        assert not await happens_within(saver.written[0], SETTLE_S), (
            f"ticket 0's write was put while every slot was held: {log}"
        )
        # A slot frees: the queued Send takes it, ahead of the write.
        tasks.open(1)
        await tasks.wait_started(3)
        assert not await happens_within(saver.written[0], SETTLE_S), (
            f"ticket 0's write was put while tickets 2 and 3 held the slots: {log}"
        )
        tasks.open(2, 3)
        out = await run
    assert sorted(out["done"]) == [0, 1, 2, 3]
    assert saver.written[0].is_set()
    assert log.index("write 0") > log.index("start 3") > log.index("open 1"), log
    assert log.index("write 0") > log.index("open 2 3"), log


async def test_checkpoint_write_is_put_at_once_when_every_send_has_a_slot() -> None:
    """With no more Sends than slots, a finished task's write is put at once.

    The other side of the canary above, and the reason Fanfold's windows work
    (nodes/dispatch.py, `dispatch`: with a checkpointer, at most `max_concurrency`
    Sends per superstep): when no Send is queued, a finished task's write takes a free
    slot and is saved while its siblings are still running.
    """
    log: list[str] = []
    saver = WriteProbe(log)
    tasks = Gated(log, sends=3)
    app = tasks.graph(saver)
    async with (
        asyncio.timeout(RUN_BOUND_S),
        running(app.ainvoke({}, thread("window", max_concurrency=3)), tasks.open_all) as run,
    ):
        await tasks.wait_started(0, 1, 2)
        assert await happens_within(saver.written[0], AT_ONCE_S), (
            f"ticket 0's write was not put while its siblings ran: {log}"
        )
        tasks.open(1, 2)
        out = await run
    assert sorted(out["done"]) == [0, 1, 2]
    assert log.index("write 0") < log.index("open 1 2"), log


# --- 2. re-raising in an error handler ------------------------------------------------


async def fail_beside_a_running_sibling(
    raise_new: bool,
) -> tuple[dict[str, bool], BaseException | None]:
    """Fail one Send while its sibling runs; the handler raises the same or a new error.

    Returns what happened to the sibling (cancelled, finished) and what the run raised.
    """
    events = {k: asyncio.Event() for k in ("started", "handled", "cancelled", "finished")}
    release = asyncio.Event()
    original: list[BaseException] = []

    async def work(arg: str) -> Done:
        if arg == "boom":
            await events["started"].wait()
            error = ValueError("boom")
            original.append(error)
            raise error
        events["started"].set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            events["cancelled"].set()
            raise
        events["finished"].set()
        return {"done": [arg]}

    async def on_error(state: Done, error: NodeError) -> Done:
        events["handled"].set()
        assert error.error is original[0]
        if raise_new:
            raise RuntimeError("stop the run") from error.error
        raise error.error

    graph = StateGraph(Done)
    graph.add_node("work", work, error_handler=on_error)
    graph.add_conditional_edges(START, lambda _: [Send("work", "boom"), Send("work", "sibling")])
    graph.add_edge("work", END)
    app = graph.compile()
    raised: BaseException | None = None
    async with asyncio.timeout(RUN_BOUND_S), running(app.ainvoke({}), release.set) as run:
        assert await happens_within(events["handled"], AT_ONCE_S)
        if raise_new:
            assert await happens_within(events["cancelled"], AT_ONCE_S), (
                "a new exception from the handler did not cancel the running sibling"
            )
        else:
            assert not await happens_within(events["cancelled"], SETTLE_S), (
                "re-raising the handed exception cancelled the sibling"
            )
            release.set()  # the sibling goes on and may finish
        try:
            await run
        except Exception as exc:  # what the run raised is the result
            raised = exc
    return {k: e.is_set() for k, e in events.items()}, raised


async def test_reraising_the_handed_exception_does_not_stop_the_run() -> None:
    """Re-raising the handed exception lets siblings go on; a new one cancels them at once.

    LangGraph records the id of the exception it hands an error handler as handled;
    raising that same object again does not stop the superstep (measured in Fanfold:
    a fail_fast run waited for a hung sibling's full timeout). Fanfold relies on this
    in nodes/subagent_error.py (`on_subagent_error`), which raises a NEW
    `TaskFailedError` / `QuorumUnreachable` to stop a run, so running subagents are
    cancelled at once.
    """
    seen, raised = await fail_beside_a_running_sibling(raise_new=False)
    assert seen["finished"] and not seen["cancelled"], seen
    # The run still ends with that error, but only after the sibling finished.
    assert isinstance(raised, ValueError) and str(raised) == "boom", raised

    seen, raised = await fail_beside_a_running_sibling(raise_new=True)
    assert seen["cancelled"] and not seen["finished"], seen
    assert isinstance(raised, RuntimeError) and str(raised) == "stop the run", raised


# --- 3. an error handler is its own node ----------------------------------------------


async def test_error_handler_needs_goto_to_reach_the_next_node() -> None:
    """When every Send fails, only the handler's `goto` reaches the node after them.

    The error handler runs as a node of its own: the failing node's outgoing edge does
    not fire for it. Fanfold relies on this in nodes/subagent_error.py
    (`on_subagent_error` returns `Command(update=..., goto=REDUCER)`): without the goto
    a superstep in which every subagent failed never reached the reducer.
    """

    async def run(goto: bool) -> Done:
        async def work(arg: str) -> Done:
            raise ValueError(arg)

        async def on_error(state: Done, error: NodeError) -> Done | Command[str]:
            update: Done = {"done": [f"failed {error.error}"]}
            return Command(update=update, goto="next") if goto else update

        def next_node(state: Done) -> Done:
            return {"reached": True}

        graph = StateGraph(Done)
        graph.add_node("work", work, error_handler=on_error)
        graph.add_node("next", next_node)
        graph.add_conditional_edges(START, lambda _: [Send("work", "a"), Send("work", "b")])
        graph.add_edge("work", "next")
        graph.add_edge("next", END)
        async with asyncio.timeout(RUN_BOUND_S):
            out: Done = await graph.compile().ainvoke({})
        return out

    without_goto = await run(goto=False)
    assert sorted(without_goto["done"]) == ["failed a", "failed b"]
    assert "reached" not in without_goto, "the failing node's edge now fires for its handler"

    with_goto = await run(goto=True)
    assert sorted(with_goto["done"]) == ["failed a", "failed b"]
    assert with_goto.get("reached") is True


# --- 4. sync durability and subgraphs without a checkpointer --------------------------


@pytest.mark.parametrize("form", ["subgraph node", "ainvoke in a node"])
async def test_sync_durability_breaks_a_graph_without_checkpointer(form: str) -> None:
    """`durability="sync"` fails a graph compiled with `checkpointer=False` run inside.

    In a checkpointed parent, such a graph, added as a node or `ainvoke`d inside a node,
    raises `AttributeError: 'AsyncPregelLoop' object has no attribute
    '_put_checkpoint_fut'` under sync durability. Fanfold runs such graphs: the
    delegated orchestrator (graphs/orchestrator.py, `_nested_graph`, compiled with
    `checkpointer=False` and `ainvoke`d inside a subagent's `delegate` tool call), and
    docs/ARCHITECTURE.md's "task" granularity. So graphs/api.py (`_stream`) runs with
    the default async durability.
    """

    async def inner(state: Done) -> Done:
        return {"done": ["inner"]}

    sub = StateGraph(Done)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    compiled = sub.compile(checkpointer=False)

    async def call(state: Done) -> Done:
        out = await compiled.ainvoke({})
        return {"done": out["done"]}

    parent = StateGraph(Done)
    parent.add_node("sub", compiled if form == "subgraph node" else call)
    parent.add_edge(START, "sub")
    app = parent.compile(checkpointer=InMemorySaver())

    async with asyncio.timeout(RUN_BOUND_S):
        out = await app.ainvoke({}, thread("default"))
    assert out["done"] == ["inner"]  # the graph itself is fine

    try:
        async with asyncio.timeout(RUN_BOUND_S):
            await app.ainvoke({}, thread("sync"), durability="sync")
    except AttributeError as exc:
        assert "_put_checkpoint_fut" in str(exc)
    else:
        pytest.fail(
            f'durability="sync" now works with a graph compiled with checkpointer=False '
            f"({form}): Fanfold could switch to sync durability (graphs/api.py, _stream), "
            "so every finished task's write is saved before the step goes on"
        )


# --- 5. the checkpointer a task is lent -----------------------------------------------


@pytest.mark.parametrize("with_saver", [False, True], ids=["no-checkpointer", "checkpointer"])
async def test_every_task_is_lent_the_checkpointer(with_saver: bool) -> None:
    """`config["configurable"]["__pregel_checkpointer"]` is the run's checkpointer, or None.

    Fanfold's dispatch learns whether finished writes are saved from this private key
    (nodes/lg.py, `saves_writes`, read by nodes/dispatch.py to choose the window); a
    missing key would count as a checkpointer (narrow windows: slower, never unsafe).
    The key must be present in nodes, routing functions (dispatch is one) and Send
    targets, None without a checkpointer and the checkpointer itself with one.
    """
    assert CONFIG_KEY_CHECKPOINTER == "__pregel_checkpointer"
    saver = InMemorySaver() if with_saver else None
    seen: dict[str, tuple[Any, bool]] = {}
    missing = object()

    def note(where: str, config: RunnableConfig) -> None:
        lent = config["configurable"].get(CONFIG_KEY_CHECKPOINTER, missing)
        seen[where] = (lent, saves_writes(config))

    async def first(state: Done, config: RunnableConfig) -> Done:
        note("node", config)
        return {}

    def route(state: Done, config: RunnableConfig) -> list[Send]:
        note("route", config)
        return [Send("work", i) for i in range(2)]

    async def work(arg: int, config: RunnableConfig) -> Done:
        note(f"send {arg}", config)
        return {"done": [arg]}

    graph = StateGraph(Done)
    graph.add_node("first", first)
    graph.add_node("work", work)
    graph.add_edge(START, "first")
    graph.add_conditional_edges("first", route)
    graph.add_edge("work", END)
    async with asyncio.timeout(RUN_BOUND_S):
        await graph.compile(checkpointer=saver).ainvoke({}, thread("lent"))

    assert sorted(seen) == ["node", "route", "send 0", "send 1"]
    for where, (lent, saves) in seen.items():
        assert lent is saver, f"{where}: {CONFIG_KEY_CHECKPOINTER} is {lent!r}, not {saver!r}"
        assert saves is with_saver, where


# --- 6. Send timeouts -----------------------------------------------------------------


async def test_send_timeout_clock_starts_when_the_task_gets_a_slot() -> None:
    """A Send's timeout counts from when its task gets a slot, not from when it was sent.

    With one slot, four 0.3 s tasks with a 0.8 s timeout all succeed, though the last
    one ends about 1.2 s after it was sent. Fanfold relies on this in
    nodes/dispatch.py (`make_send` gives each task `Send(..., timeout=)`; a wide window
    queues tasks for slots) and documents it in docs/ARCHITECTURE.md; an eager task
    that waits for its inputs carries its timeout in the payload instead, because the
    Send's clock would count that wait.
    """
    work_s, timeout_s = 0.3, 0.8
    ended: dict[int, float] = {}
    sent_at: list[float] = []

    def fan_out(state: Done) -> list[Send]:
        sent_at.append(time.monotonic())
        return [Send("work", i, timeout=timeout_s) for i in range(4)]

    async def work(arg: int) -> Done:
        await asyncio.sleep(work_s)
        ended[arg] = time.monotonic() - sent_at[0]
        return {"done": [arg]}

    async def on_error(state: Done, error: NodeError) -> Done:
        return {"done": [repr(error.error)]}

    graph = StateGraph(Done)
    graph.add_node("work", work, error_handler=on_error)
    graph.add_conditional_edges(START, fan_out)
    graph.add_edge("work", END)
    async with asyncio.timeout(RUN_BOUND_S):
        out = await graph.compile().ainvoke({}, {"max_concurrency": 1})
    assert sorted(out["done"]) == [0, 1, 2, 3], out["done"]
    # The scenario is the one meant: the last task ended well past its timeout as
    # counted from the Send (one slot: 4 x 0.3 s back to back).
    assert max(ended.values()) > timeout_s + 0.25, ended


async def test_send_timeout_hands_the_handler_a_node_timeout_error() -> None:
    """On expiry the error handler gets a `NodeTimeoutError` with `timeout` and `elapsed`.

    Fanfold relies on this in nodes/subagent_error.py (`failure_result` turns a
    `NodeTimeoutError` into a `timed_out` result whose `started_at` is
    `ended_at - elapsed`). Work of 1.5 s under a 0.5 s timeout times out; its body never
    completes (LangGraph cancels it).
    """
    timeout_s = 0.5
    handed: list[BaseException] = []
    completed: list[str] = []

    async def work(arg: float) -> Done:
        await asyncio.sleep(arg)
        completed.append(f"{arg}")
        return {"done": [arg]}

    async def on_error(state: Done, error: NodeError) -> Done:
        handed.append(error.error)
        return {"done": ["timed out"]}

    graph = StateGraph(Done)
    graph.add_node("work", work, error_handler=on_error)
    graph.add_conditional_edges(
        START,
        lambda _: [Send("work", 0.1, timeout=timeout_s), Send("work", 1.5, timeout=timeout_s)],
    )
    graph.add_edge("work", END)
    async with asyncio.timeout(RUN_BOUND_S):
        out = await graph.compile().ainvoke({})
    assert sorted(map(str, out["done"])) == ["0.1", "timed out"]
    assert completed == ["0.1"]
    [error] = handed
    assert isinstance(error, NodeTimeoutError), repr(error)
    assert error.timeout == timeout_s
    assert timeout_s <= error.elapsed < 1.5, error.elapsed


# --- 7. where max_concurrency is read -------------------------------------------------


async def peak_concurrency(config: RunnableConfig, *, baked: int | None = None) -> int:
    """Run 8 Sends that each hold a while; return how many ran at once at the peak."""
    running_now = peak = 0

    async def work(arg: int) -> Done:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        await asyncio.sleep(0.05)  # holds the slot; not what is measured
        running_now -= 1
        return {"done": [arg]}

    graph = StateGraph(Done)
    graph.add_node("work", work)
    graph.add_conditional_edges(START, lambda _: [Send("work", i) for i in range(8)])
    graph.add_edge("work", END)
    app: Any = graph.compile()
    if baked is not None:
        app = app.with_config(max_concurrency=baked)
    async with asyncio.timeout(RUN_BOUND_S):
        out = await app.ainvoke({}, config)
    assert sorted(out["done"]) == list(range(8))
    return peak


async def test_max_concurrency_is_read_from_the_top_of_the_run_config() -> None:
    """`max_concurrency` bounds Sends from the run config's top level, not "configurable".

    Fanfold relies on this in graphs/api.py (`arun` passes the settings' value at the
    top level), graphs/orchestrator.py (`compile_orchestrator(max_concurrency=)` bakes
    a default with `with_config`) and nodes/dispatch.py (reads
    `config.get("max_concurrency")` to size windows). A value under "configurable" is
    ignored by LangGraph.
    """
    assert await peak_concurrency({"max_concurrency": 2}) == 2
    assert await peak_concurrency({}, baked=3) == 3
    assert await peak_concurrency({"configurable": {"max_concurrency": 2}}) == 8


# --- 8. Runtime.control ---------------------------------------------------------------


def control_graph(seen: list[tuple[str, RunControl | None]]) -> Any:
    """A graph whose node, routing function, Send targets, error handler, nested
    `ainvoke` and subgraph node each note the `runtime.control` they see."""

    def note(where: str, runtime: Runtime[Any]) -> None:
        seen.append((where, runtime.control))

    async def child_node(state: Done, runtime: Runtime[Any]) -> Done:
        [how] = state["done"]
        note(f"nested ainvoke, {how}", runtime)
        return {}

    async def sub_node(state: Done, runtime: Runtime[Any]) -> Done:
        note("subgraph node", runtime)
        return {}

    child = StateGraph(Done)
    child.add_node("child", child_node)
    child.add_edge(START, "child")
    nested = child.compile()
    sub = StateGraph(Done)
    sub.add_node("inner", sub_node)
    sub.add_edge(START, "inner")

    async def first(state: Done, config: RunnableConfig, runtime: Runtime[Any]) -> Done:
        note("node", runtime)
        await nested.ainvoke({"done": ["implicit config"]})
        # As graphs/orchestrator.py's `run_delegated` calls its nested graph.
        await nested.ainvoke({"done": ["config passed"]}, {**config, "max_concurrency": 2})
        return {}

    def route(state: Done, runtime: Runtime[Any]) -> list[Send]:
        note("route", runtime)
        return [Send("work", "ok"), Send("work", "fail")]

    async def work(arg: str, runtime: Runtime[Any]) -> Done:
        note(f"send {arg}", runtime)
        if arg == "fail":
            raise ValueError(arg)
        return {}

    async def on_error(state: Done, error: NodeError, runtime: Runtime[Any]) -> Command[str]:
        note("error handler", runtime)
        return Command(update={}, goto="sub")

    graph = StateGraph(Done)
    graph.add_node("first", first)
    graph.add_node("work", work, error_handler=on_error)
    graph.add_node("sub", sub.compile())
    graph.add_edge(START, "first")
    graph.add_conditional_edges("first", route)
    graph.add_edge("work", "sub")
    graph.add_edge("sub", END)
    return graph.compile()


CONTROL_SEEN_BY = [
    "node",
    "nested ainvoke, implicit config",
    "nested ainvoke, config passed",
    "route",
    "send ok",
    "send fail",
    "error handler",
    "subgraph node",
]


async def test_every_part_of_a_run_sees_one_run_control() -> None:
    """One `runtime.control` per run, seen by every node, route and handler, nested too.

    Every node, routing function, Send target and error handler of one `ainvoke` sees
    the same `RunControl`; the next `ainvoke` gets another; a `control=` passed to
    `ainvoke`/`astream` (a subclass with a slot of its own included) is the one they
    see; and a graph run inside a node (a nested `ainvoke`, with or without the node's
    config passed, as graphs/orchestrator.py's `run_delegated` does) or added as a node
    sees its parent's (pregel/main.py: `control or parent_runtime.control or
    RunControl()`). Fanfold relies on this to give each run its own scope, shared by
    delegated fan-outs (nodes/scope.py: `ScopedControl`, a RunControl subclass with a
    `scope` slot, and `scope_of`, which reads it off `runtime.control`).
    """
    seen: list[tuple[str, RunControl | None]] = []
    app = control_graph(seen)

    async with asyncio.timeout(RUN_BOUND_S):
        await app.ainvoke({})
    assert sorted(where for where, _ in seen) == sorted(CONTROL_SEEN_BY)
    first = seen[0][1]
    assert isinstance(first, RunControl)
    assert all(control is first for _, control in seen), seen

    seen.clear()
    async with asyncio.timeout(RUN_BOUND_S):
        await app.ainvoke({})
    second = seen[0][1]
    assert isinstance(second, RunControl) and second is not first
    assert all(control is second for _, control in seen), seen

    mine = Scoped()
    mine.scope = "run scope"
    seen.clear()
    async with asyncio.timeout(RUN_BOUND_S):
        await app.ainvoke({}, control=mine)
    assert sorted(where for where, _ in seen) == sorted(CONTROL_SEEN_BY)
    assert all(control is mine for _, control in seen), seen

    seen.clear()
    async with asyncio.timeout(RUN_BOUND_S):
        async for _ in app.astream(
            {}, control=mine, stream_mode=["custom", "values"], subgraphs=True
        ):
            pass
    assert sorted(where for where, _ in seen) == sorted(CONTROL_SEEN_BY)
    assert all(control is mine for _, control in seen), seen


# --- 9. the serializer's msgpack allowlist --------------------------------------------


@pytest.mark.skipif(
    os.environ.get("LANGGRAPH_STRICT_MSGPACK", "").lower() in ("1", "true", "yes"),
    reason="LANGGRAPH_STRICT_MSGPACK makes the default serializer strict",
)
def test_default_serializer_is_permissive_and_an_allowlist_is_not() -> None:
    """The default JsonPlusSerializer allows every type; an allowlisted one restricts.

    Fanfold relies on this in nodes/lg.py (`allows_every_type` reads the private
    `_allowed_msgpack_modules is True`) and graphs/serde.py (`allow_fanfold_types`
    replaces a permissive default by one allowlisting Fanfold's models, and extends an
    explicit allowlist with `with_msgpack_allowlist`).
    """
    default = JsonPlusSerializer()
    assert default._allowed_msgpack_modules is True
    assert allows_every_type(default)

    listed = JsonPlusSerializer(allowed_msgpack_modules=(Point,))
    assert listed._allowed_msgpack_modules is not True
    assert not allows_every_type(listed)

    point = Point(x=1, tags=["a", "b"])
    restored = listed.loads_typed(listed.dumps_typed(point))
    assert type(restored) is Point and restored == point

    # The allowlist is in force: a model not on it does not come back as itself.
    assert type(listed.loads_typed(listed.dumps_typed(Other(name="n")))) is not Other

    extended = listed.with_msgpack_allowlist((Other,))
    assert isinstance(extended, JsonPlusSerializer)
    assert not allows_every_type(extended)
    for value in (point, Other(name="n")):
        back = extended.loads_typed(extended.dumps_typed(value))
        assert type(back) is type(value) and back == value


# --- 10. custom stream events from subgraphs ------------------------------------------


async def test_custom_events_from_a_subgraph_node_reach_the_parent_stream_live() -> None:
    """`runtime.stream_writer` events inside a subgraph node arrive live in the parent stream.

    They come as `(namespace, "custom", chunk)` from `astream(..., stream_mode=["custom",
    "values"], subgraphs=True)`, with the subgraph's task in the namespace, while the
    subgraph is still running (each inner node waits until the test has read its
    event, so a stream that held events back would not finish). Fanfold relies on this
    in graphs/api.py (`_stream` collects `task_finished` events, so a stopped run's
    error still carries every finished result) and for live progress (nodes/events.py,
    written by nodes/brief.py and nodes/report.py inside the subagent subgraph).
    """
    received: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def inner(state: Done, runtime: Runtime[Any]) -> Done:
        [name] = state["done"]
        runtime.stream_writer({"event": "inner", "task": name})
        await received[name].wait()  # the parent's stream has it before the node ends
        return {"done": [f"{name} finished"]}

    sub = StateGraph(Done)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    parent = StateGraph(Done)
    parent.add_node("sub", sub.compile())
    parent.add_conditional_edges(
        START, lambda _: [Send("sub", {"done": ["a"]}), Send("sub", {"done": ["b"]})]
    )
    parent.add_edge("sub", END)

    custom: list[tuple[tuple[str, ...], Any]] = []
    final: dict[str, Any] = {}
    async with asyncio.timeout(RUN_BOUND_S):
        async for namespace, mode, chunk in parent.compile().astream(
            {}, stream_mode=["custom", "values"], subgraphs=True
        ):
            if mode == "custom":
                custom.append((namespace, chunk))
                received[chunk["task"]].set()
            elif mode == "values" and not namespace:
                final = chunk
    assert sorted(chunk["task"] for _, chunk in custom) == ["a", "b"]
    for namespace, chunk in custom:
        assert chunk == {"event": "inner", "task": chunk["task"]}
        assert len(namespace) == 1 and namespace[0].startswith("sub:"), namespace
    assert len({namespace for namespace, _ in custom}) == 2  # one namespace per task
    assert "a finished" in final["done"] and "b finished" in final["done"]


# --- 11. Overwrite --------------------------------------------------------------------


@pytest.mark.parametrize("replacement", [["z"], []], ids=["list", "empty"])
async def test_overwrite_replaces_a_reduced_list(replacement: list[str]) -> None:
    """`Overwrite(value)` on a channel with an appending reducer replaces the list.

    Fanfold relies on this in nodes/reducer.py (writes `results` back in plan order
    with `Overwrite`) and nodes/planner.py (`Overwrite([])` clears `results` and
    `usage` for a new plan); `results` has an appending reducer (nodes/state.py,
    `merge_results`).
    """

    def append_ab(state: Items) -> Items:
        return {"items": ["a", "b"]}

    def overwrite(state: Items) -> dict[str, Any]:
        assert state["items"] == ["init", "a", "b"]
        return {"items": Overwrite(replacement)}

    def append_c(state: Items) -> Items:
        return {"items": ["c"]}

    graph = StateGraph(Items)
    graph.add_node("append_ab", append_ab)
    graph.add_node("overwrite", overwrite)
    graph.add_node("append_c", append_c)
    graph.add_edge(START, "append_ab")
    graph.add_edge("append_ab", "overwrite")
    graph.add_edge("overwrite", "append_c")
    graph.add_edge("append_c", END)
    async with asyncio.timeout(RUN_BOUND_S):
        out = await graph.compile().ainvoke({"items": ["init"]})
    assert out["items"] == [*replacement, "c"]


# --- 12. Delta channels -----------------------------------------------------------------


def append_batches(left: list[str], writes: Sequence[list[str]]) -> list[str]:
    """The batch reducer shape of Fanfold's `results` channel (nodes/state.py)."""
    return [*left, *(x for w in writes for x in w)]


class Ledgered(TypedDict):
    plan: Annotated[list[str], DeltaValue()]
    items: Annotated[list[str], DeltaChannel(append_batches, snapshot_frequency=NEVER_SNAPSHOT)]
    step: int


async def test_delta_channels_are_saved_once_and_rebuilt_from_writes() -> None:
    """A delta channel's value is not in the checkpoints between snapshots; a load
    rebuilds it from the writes of the checkpoint's ancestors; a route reads a copy
    that shares the value.

    Fanfold relies on this for linear checkpoints (nodes/state.py: `results` is a
    `DeltaChannel`, `plan` and `request` are `DeltaValue`s, nodes/lg.py) and on the
    shared copy for its ledgers, which key on the plan object's identity
    (nodes/ledger.py, read by the router in nodes/dispatch.py).
    """
    seen: list[bool] = []
    plan = ["a", "b", "c"]

    def start(state: Ledgered) -> dict[str, Any]:
        return {"plan": plan, "items": [], "step": 0}

    def work(state: Ledgered) -> dict[str, Any]:
        return {"items": [state["plan"][state["step"]]], "step": state["step"] + 1}

    def route(state: Ledgered) -> str:
        seen.append(state["plan"] is plan)
        return "work" if state["step"] < len(state["plan"]) else END

    builder = StateGraph(Ledgered)
    builder.add_node("start", start)
    builder.add_node("work", work)
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", route, ["work", END])
    builder.add_conditional_edges("work", route, ["work", END])
    saver = InMemorySaver()
    graph = builder.compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "delta"}}
    async with asyncio.timeout(RUN_BOUND_S):
        out = await graph.ainvoke({"step": 0}, config)
    assert out["items"] == ["a", "b", "c"] and seen == [True] * 4
    stored = [t.checkpoint["channel_values"] async for t in saver.alist(config)]
    assert len(stored) >= 5
    assert not any("items" in values or "plan" in values for values in stored)
    # A new graph object (a new process) rebuilds both from the saved writes.
    again = builder.compile(checkpointer=saver)
    state = await again.aget_state(config)
    assert state.values["items"] == ["a", "b", "c"] and state.values["plan"] == plan
