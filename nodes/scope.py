"""What one run shares across all its subagents, in process: limits, budgets, a stop signal.

LangGraph enforces `max_concurrency` per graph level and knows nothing of
requests per second, 429s or budgets. A `RunScope` is Fanfold's run-wide layer
for those, and for the run's caches (its tool registry, tool bindings, ledgers).

A run owns its scope for exactly its lifetime. LangGraph gives every run one
`RunControl` object and hands it to each node, router and error handler of the
run, and to graphs a node runs (a delegated fan-out, a subgraph) through
`runtime.control`. Fanfold's compiled graphs start each run with a
`ScopedControl`, a `RunControl` that carries the scope: made on first use, never
found through a settings or plan object, gone with the run.

What decides a run's outcome is also in, or derivable from, the graph's state
(results and their tokens, the stop the reducer wrote, the plan): a resumed run,
or a run whose nodes execute in other processes, rebuilds it from there. The
scope only makes it live and fast within one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from langchain_core.rate_limiters import InMemoryRateLimiter
from langgraph.config import get_config
from langgraph.runtime import RunControl, Runtime

from fanfold.nodes.context import RunSettings, build_registry, concurrency, settings_of
from fanfold.nodes.domain import ErrorInfo, Usage
from fanfold.nodes.errors import BudgetExceeded, FanfoldError, RunStopped
from fanfold.nodes.faults import FaultKind
from fanfold.nodes.throttle import AdaptiveLimit
from fanfold.tools.mcp import McpToolset
from fanfold.tools.registry import RegistryStats

if TYPE_CHECKING:
    from fanfold.nodes.domain import Plan, SubagentResult
    from fanfold.nodes.ledger import Ledger
    from fanfold.nodes.steer import Steering, StoreCommands

StopKind = Literal["budget", "quorum", "failed", "stopped"]
"""Why a run stopped early: a spent budget, a quorum met, a policy failure (fail_fast, a
quorum out of reach), or a stop from outside."""

T = TypeVar("T")


class RunScope:
    """Run-wide limits, budgets, caches, fault counts and the stop signal of one run."""

    def __init__(self, settings: RunSettings, *, limit: int | None = None) -> None:
        self.settings = settings
        """The top-level run's settings (a delegated fan-out shares the scope)."""
        self.max_concurrency = min(settings.max_concurrency, limit or settings.max_concurrency)
        """The run's limit: the smallest `max_concurrency` of its settings and config."""
        self.clock: Callable[[], float] = time.monotonic
        """The clock of the wall-time budget: a Temporal workflow's is its own (replayable)."""
        self.t0 = self.clock()
        rps = settings.requests_per_second
        self.rate: InMemoryRateLimiter | None = (
            InMemoryRateLimiter(
                requests_per_second=rps,
                check_every_n_seconds=min(0.05, 0.5 / rps),
                max_bucket_size=max(1.0, rps / 10),
            )
            if rps
            else None
        )
        self.limit = AdaptiveLimit(self.max_concurrency)
        self.registry = build_registry(settings)
        """The tools this run may hand out (built once per run)."""
        self.mcp: McpToolset | None = None
        """The run's MCP sessions, one per server (closed with the run: `aclose`)."""
        if settings.mcp_servers:
            base = self.registry
            # `delegate` is offered below the depth limit: an MCP tool never takes its name.
            self.mcp = McpToolset(
                settings.mcp_servers, reserved=lambda: [*base.names(), "delegate"]
            )
            self.registry = base.merged(())
            self.mcp.attach(self.registry, ttl_s=settings.mcp_ttl_s)
        self.tool_stats = RegistryStats()
        """This run's tool look-ups: hits, misses, refreshes, errors (a shared registry
        counts every run's; these are this run's only)."""
        self.bound: dict[tuple[int, ...], Any] = {}
        """Models bound to tool sets, by the ids of the model and the tools."""
        self.tokens = 0
        self.task_usage: dict[str, Usage] = {}
        """Each task's tokens so far, from its finished model calls: what a task that times
        out or is cancelled (its own state lost with it) still reports it spent."""
        self.faults: Counter[str] = Counter()
        self.retries = 0
        self.deadline = self.t0 + settings.max_wall_time_s if settings.max_wall_time_s else None
        self.plan: Plan | None = None
        self.status: dict[str, str] = {}
        """Live task statuses (what state knows plus what just finished)."""
        self.stop_reason: str | None = None
        self.stop_kind: StopKind | None = None
        self._stopped: asyncio.Event | None = None
        self.steer: Steering | None = None
        """What a run handle asked for (`fanfold.start`), or commands in the run's store;
        None: nobody steers this run."""
        self.commands: StoreCommands | None = None
        self.accounted: set[str] = set()
        """Tasks whose results the run charged and judged as they arrived from another
        process (on Temporal: `fanfold.graphs.temporal`)."""
        self.ledgers: dict[int, Ledger] = {}
        """Each plan's bookkeeping between windows (`nodes.ledger`), by `id(plan)`."""
        self._windows: dict[str, dict[str, asyncio.Future[SubagentResult]]] = {}
        """Open eager windows: each task's result future, by window key."""

    # --- the stop signal -------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """Tell whether the run was told to stop dispatching and end its tasks."""
        return self.stop_reason is not None

    def stop(self, kind: StopKind, reason: str) -> None:
        """Stop the run: no more dispatch; running tasks end at their next call."""
        if self.stop_reason is None:
            self.stop_kind, self.stop_reason = kind, reason
            if self._stopped is not None:
                self._stopped.set()

    def check(self, *, include_stop: bool = True) -> None:
        """Raise when the run must not go on.

        `BudgetExceeded` when a run budget is spent; `RunStopped` when the run was
        stopped (a quorum met) and `include_stop` is true.
        """
        limits = self.settings
        if self.deadline is not None and self.clock() >= self.deadline:
            self.stop("budget", f"wall time budget of {limits.max_wall_time_s:g}s spent")
        if limits.max_total_tokens is not None and self.tokens >= limits.max_total_tokens:
            self.stop(
                "budget", f"token budget of {limits.max_total_tokens} spent ({self.tokens} used)"
            )
        if self.stop_reason is not None:
            if self.stop_kind == "budget":
                raise BudgetExceeded(self.stop_reason)
            if include_stop:
                raise RunStopped(self.stop_reason)

    def stop_error(self) -> ErrorInfo | None:
        """Return why the run stopped, as the error of a task it keeps from running."""
        with contextlib.suppress(FanfoldError):
            self.check()  # notices a wall-time budget that ran out since the last call
        if self.stop_reason is None:
            return None
        return ErrorInfo(type=_STOP_TYPES[self.stop_kind or "stopped"], message=self.stop_reason)

    @property
    def needs_race(self) -> bool:
        """Tell whether calls must race the stop signal (some budget or policy can stop)."""
        s = self.settings
        return bool(
            s.max_total_tokens
            or s.max_wall_time_s
            or s.policy == "fail_fast"
            or s.policy.startswith("quorum")
        )

    async def race(self, aw: Awaitable[T], *, include_stop: bool = True) -> T:
        """Await `aw` unless the run stops first; then cancel it and raise.

        With `include_stop=False` only a spent budget interrupts (the synthesizer
        still writes the answer of a run whose quorum was met).
        """
        try:
            self.check(include_stop=include_stop)
        except FanfoldError:
            if asyncio.iscoroutine(aw):
                aw.close()  # never started: close it, or Python warns it was never awaited
            elif isinstance(aw, asyncio.Future):
                aw.cancel()  # already running (a task, a gather): stop it
            raise
        if not self.needs_race:
            return await aw
        if self._stopped is None:
            self._stopped = asyncio.Event()
            if self.stop_reason is not None:
                self._stopped.set()
        work = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stopped.wait())
        timeout = None if self.deadline is None else max(0.0, self.deadline - self.clock())
        try:
            done, _ = await asyncio.wait(
                {work, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            work.cancel()
            stop.cancel()
            raise
        stop.cancel()
        if work in done:
            return work.result()
        if not done or include_stop or self.stop_kind == "budget":
            # Never wait on the cancelled work: a tool that swallows CancelledError (or a
            # thread that cannot be interrupted) would hold the stop for as long as it likes.
            abandon(work)
            self.check()
            raise RunStopped(self.stop_reason or "stopped")  # pragma: no cover - check raised
        return await work  # stopped by a quorum, and this call does not stop for it

    # --- ledger ----------------------------------------------------------------------

    def add_tokens(self, n: int) -> None:
        """Count tokens spent by any model call of the run; stop it once over budget.

        Stopping here (not at the next call) ends the siblings still waiting on a
        model at once, instead of at their own timeouts.
        """
        self.tokens += n
        limit = self.settings.max_total_tokens
        if limit is not None and self.tokens >= limit:
            self.stop("budget", f"token budget of {limit} spent ({self.tokens} used)")

    def seed_tokens(self, n: int) -> None:
        """Start the count from what a resumed run had already spent."""
        self.tokens = max(self.tokens, n)

    def sync(self, plan: Plan, status: dict[str, str]) -> None:
        """Learn the plan and the statuses the state holds (after a resume, too)."""
        self.plan = plan
        for tid, st in status.items():
            self.status.setdefault(tid, st)

    # --- results as they finish (for tasks sent before their inputs were done) ------

    def open_window(self) -> str:
        """Start an eager window: a key under which its tasks publish their results.

        Keys keep runs that share a scope (one settings object) apart. Dispatch closes
        a run's window at its next step, and the error handler when a policy stops the
        run.
        """
        key = uuid.uuid4().hex
        self._windows[key] = {}
        return key

    def close_window(self, window: str | None) -> None:
        """Forget an eager window whose tasks have all ended."""
        if window is not None:
            self._windows.pop(window, None)

    def _future(self, window: str, task_id: str) -> asyncio.Future[SubagentResult] | None:
        futures = self._windows.get(window)
        if futures is None:
            return None  # a window already closed
        fut = futures.get(task_id)
        if fut is None:
            fut = futures[task_id] = asyncio.get_running_loop().create_future()
        return fut

    def publish(self, window: str | None, result: SubagentResult) -> None:
        """Tell the tasks of an eager window that wait for this one its result."""
        fut = self._future(window, result.task_id) if window else None
        if fut is not None and not fut.done():
            fut.set_result(result)

    async def results_of(self, window: str, task_ids: list[str]) -> list[SubagentResult]:
        """Wait until these tasks of the window have results; return them in order.

        Raises:
            RuntimeError: the window is closed (it cannot be: its tasks still run).
        """
        out = []
        for tid in task_ids:
            fut = self._future(window, tid)
            if fut is None:
                msg = f"eager window `{window}` is closed"
                raise RuntimeError(msg)
            out.append(await fut)
        return out

    def record_fault(self, kind: FaultKind) -> None:
        """Count a transient fault and the retry it causes."""
        self.faults[kind] += 1
        self.retries += 1

    def steer_from_store(self, store: Any, thread_id: str) -> None:
        """Let commands written to the run's store steer it (`nodes.steer.StoreCommands`)."""
        from fanfold.nodes.planner import check_plan
        from fanfold.nodes.steer import Steering, StoreCommands

        if self.steer is None:
            self.steer = Steering()
        settings, registry = self.settings, self.registry
        self.commands = StoreCommands(
            store, thread_id, self.steer, lambda plan: check_plan(plan, settings, registry)
        )
        self.commands.start()

    async def aclose(self) -> None:
        """Release what the run holds open (MCP sessions, a store poller); the run ended."""
        if self.commands is not None:
            await self.commands.aclose()
        if self.mcp is not None:
            await self.mcp.aclose()

    def snapshot(self) -> dict[str, Any]:
        """Return the run-wide counts for RunMetrics."""
        s = self.tool_stats
        return {
            "mcp": self.mcp.status() if self.mcp is not None else {},
            "faults": dict(sorted(self.faults.items())),
            "retries": self.retries,
            "effective_concurrency": list(self.limit.timeline),
            "request_pace": list(self.limit.pace_timeline),
            "stop_reason": self.stop_reason,
            "tool_cache": {
                "hits": s.hits,
                "misses": s.misses,
                "refreshes": s.refreshes,
                "errors": s.errors,
            },
        }


def abandon(work: asyncio.Future[Any]) -> None:
    """Cancel `work` and let it end on its own, whenever it does; its outcome is dropped.

    What ignores cancellation keeps running until it returns by itself: the run no
    longer waits on it, and its result, if it ever comes, is not used.
    """
    work.cancel()
    work.add_done_callback(_drop_outcome)


def _drop_outcome(work: asyncio.Future[Any]) -> None:
    if not work.cancelled():
        work.exception()  # retrieved: no "exception was never retrieved" warning


_STOP_TYPES: dict[StopKind, Literal["BudgetExceeded", "QuorumReached", "RunStopped"]] = {
    "budget": "BudgetExceeded",
    "quorum": "QuorumReached",
    "failed": "RunStopped",
    "stopped": "RunStopped",
}


class ScopedControl(RunControl):
    """LangGraph's per-run control object, carrying the run's `RunScope`.

    Fanfold's compiled graphs start every run with one (wrapping a control the
    caller or an enclosing graph passed, whose drain requests it forwards), and
    LangGraph hands it to every node of the run and to the graphs those nodes run.
    """

    __slots__ = ("inner", "scope")

    def __init__(self, inner: RunControl | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.scope: RunScope | None = None

    def request_drain(self, reason: str = "shutdown") -> None:
        """Ask the run to drain (forwarded to the wrapped control, if any)."""
        if self.inner is not None:
            self.inner.request_drain(reason)
        else:
            super().request_drain(reason)

    @property
    def drain_requested(self) -> bool:
        """Tell whether a drain was requested."""
        if self.inner is not None:
            return self.inner.drain_requested
        return super().drain_requested

    @property
    def drain_reason(self) -> str | None:
        """Return why the run drains, if it does."""
        if self.inner is not None:
            return self.inner.drain_reason
        return super().drain_reason


def scope_of(runtime: Runtime[Any]) -> RunScope:
    """Return the scope of the run a node belongs to (made on first use).

    Raises:
        RuntimeError: the node runs outside a Fanfold graph, so its run has no scope.
    """
    control = runtime.control
    if not isinstance(control, ScopedControl):
        msg = (
            "this node runs outside a Fanfold graph, so its run has no run scope: run it in a "
            "graph from `compile_orchestrator()` or `build_orchestrator().compile()` (or pass "
            "`control=ScopedControl()` in its Runtime when calling a node yourself)"
        )
        raise RuntimeError(msg)
    if control.scope is None:
        settings = settings_of(runtime.context)
        try:
            config = get_config()  # the run config, as the first node to ask sees it
        except RuntimeError:  # a node called on its own
            config = {}
        scope = control.scope = RunScope(settings, limit=concurrency(settings, config)[0])
        thread_id = (config.get("configurable") or {}).get("thread_id")
        if runtime.store is not None and thread_id:
            scope.steer_from_store(runtime.store, str(thread_id))
    return control.scope
