"""Measurements that run inside one child process (one implementation, or one memory cell).

Each `measure_*` function returns plain data; `run.py` starts the children and
prints the table. Every run checks that all of the work was done (model calls,
tool calls, answers) before its figure counts.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import math
import os
import resource
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import bare_langgraph
import dag
import fanfold_impl
import raw_asyncio
from fake import MODEL_CALLS, Counts, FakeChatModel, check_answers, make_tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

IMPLS = ("raw", "bare", "fanfold", "bare-node")
"""`bare-node` (diagnostics only): bare LangGraph whose subagent is one node, not a subgraph."""
WARMUP_N = 20


class Bench:
    """One fake model and tool for the whole child, and a runner per implementation."""

    def __init__(self, impl: str) -> None:
        if impl not in IMPLS:
            msg = f"unknown implementation `{impl}`; known: {IMPLS}"
            raise ValueError(msg)
        self.impl = impl
        self.counts = Counts()
        self.model = FakeChatModel(counts=self.counts)
        self.tool = make_tool(self.counts)
        # Bare LangGraph binds the model when the graph is built: build it once, as
        # an application would, outside every timed region.
        self.bare_graph = (
            bare_langgraph.build(self.model, [self.tool], one_node=impl == "bare-node")
            if impl in ("bare", "bare-node")
            else None
        )

    def flat(self, n: int, mc: int) -> Callable[[], Awaitable[dict[int, str]]]:
        """Return a coroutine factory that runs `n` independent subagents."""
        items = list(range(1, n + 1))
        tools = [self.tool]
        if self.impl == "raw":
            return lambda: raw_asyncio.run_flat(items, model=self.model, tools=tools, mc=mc)
        if self.impl in ("bare", "bare-node"):
            return lambda: bare_langgraph.run_flat(
                items, model=self.model, tools=tools, mc=mc, graph=self.bare_graph
            )
        return lambda: fanfold_impl.run_flat(items, model=self.model, tools=tools, mc=mc)

    async def run_checked(
        self, start: Callable[[], Awaitable[dict[int, str]]], n: int, limit: int | None
    ) -> dict[str, float]:
        """Run once from a clean heap; check all the work; return wall, CPU and GC time."""
        self.counts.reset()
        gc.collect()
        with gc_timer() as gc_s:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            answers = await start()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        self.counts.check(n, limit=limit)
        check_answers(answers, range(1, n + 1))
        return {"wall_s": wall, "cpu_s": cpu, "gc_s": gc_s[0], "peak": self.counts.peak_in_flight}

    async def warm_up(self) -> None:
        """Run a few subagents first, so imports and caches are not in any figure."""
        self.model.latency, self.model.gate = 0.0, None
        await self.run_checked(self.flat(WARMUP_N, 4), WARMUP_N, 4)


@contextmanager
def gc_timer() -> Iterator[list[float]]:
    """Add up the time the garbage collector runs inside the block (seconds)."""
    total = [0.0]
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            total[0] += time.perf_counter() - started[0]

    gc.callbacks.append(callback)
    try:
        yield total
    finally:
        gc.callbacks.remove(callback)


def repeats(n: int, best_of: int) -> int:
    """Repeat only the small runs (N <= 100), where one scheduler hiccup is a large share."""
    return best_of if n <= 100 else 1


async def measure_efficiency(
    impl: str, sizes: Sequence[int], mcs: Sequence[int], latency: float, best_of: int
) -> list[dict[str, Any]]:
    """Return the wall time of each (N, mc) against the ideal ceil(N/mc) x 3 calls x latency."""
    bench = Bench(impl)
    await bench.warm_up()
    rows = []
    for n in sizes:
        for mc in mcs:
            bench.model.latency = latency
            runs = [
                await bench.run_checked(bench.flat(n, mc), n, mc)
                for _ in range(repeats(n, best_of))
            ]
            best = min(runs, key=lambda r: r["wall_s"])
            ideal = math.ceil(n / mc) * MODEL_CALLS * latency
            rows.append(
                {
                    "n": n,
                    "mc": mc,
                    "ideal_s": ideal,
                    "efficiency": ideal / best["wall_s"],
                    "runs": len(runs),
                    **best,
                }
            )
    return rows


async def measure_cpu(
    impl: str, sizes: Sequence[int], mc: int, best_of: int
) -> list[dict[str, Any]]:
    """Return CPU and GC time per subagent at zero latency, for each N."""
    bench = Bench(impl)
    await bench.warm_up()
    rows = []
    for n in sizes:
        bench.model.latency = 0.0
        runs = [
            await bench.run_checked(bench.flat(n, mc), n, mc) for _ in range(repeats(n, best_of))
        ]
        best = min(runs, key=lambda r: r["cpu_s"])
        rows.append(
            {
                "n": n,
                "mc": mc,
                "cpu_ms": best["cpu_s"] / n * 1e3,
                "gc_ms": best["gc_s"] / n * 1e3,
                "runs": len(runs),
                **best,
            }
        )
    return rows


def maxrss_kb() -> int:
    """Return this process's peak resident set size so far, in KB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@asynccontextmanager
async def sqlite_saver(path: str) -> Any:
    """Yield an AsyncSqliteSaver on a file."""
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        yield saver


async def measure_memory(impl: str, n: int, checkpointer: str) -> dict[str, Any]:
    """Return the peak RSS growth per in-flight subagent with `n` subagents held at once.

    The fake holds every first model call until `n` subagents are in flight, so
    the width is exactly `n` whatever the machine's speed.
    """
    bench = Bench(impl)
    with tempfile.TemporaryDirectory() as tmp:
        async with _checkpointed(bench, checkpointer, os.path.join(tmp, "cp.sqlite")) as run:
            bench.model.latency, bench.model.gate = 0.0, None
            await bench.run_checked(run(WARMUP_N, 4), WARMUP_N, 4)
            await bench.run_checked(run(WARMUP_N, 4), WARMUP_N, 4)
            bench.model.gate = n
            gc.collect()
            before = maxrss_kb()
            stats = await bench.run_checked(run(n, n), n, n)
            after = maxrss_kb()
    if stats["peak"] != n:
        msg = f"only {stats['peak']} of {n} subagents were in flight at once"
        raise AssertionError(msg)
    return {
        "impl": impl,
        "checkpointer": checkpointer,
        "n": n,
        "rss_before_kb": before,
        "rss_peak_kb": after,
        "kb_per_subagent": (after - before) / n,
        **stats,
    }


@asynccontextmanager
async def _checkpointed(bench: Bench, checkpointer: str, path: str) -> Any:
    """Yield `run(n, mc)`, a coroutine factory for `bench`'s implementation on a checkpointer.

    `checkpointer` is `none`, `memory` (InMemorySaver), `sqlite` (AsyncSqliteSaver
    on `path`, the implementation's default granularity), `sqlite-step` (every
    subagent step checkpointed: the subgraph inherits the checkpointer) or
    `sqlite-task` (the subgraph compiled with `checkpointer=False`: only each
    finished subagent's write is saved). Bare LangGraph's default is `step`.
    """
    if checkpointer == "none":
        yield lambda n, mc, thread_id=None: bench.flat(n, mc)
        return
    if bench.impl == "raw":
        msg = "raw asyncio has no checkpointer"
        raise ValueError(msg)
    async with _saver(checkpointer, path) as saver:
        tools = [bench.tool]
        if bench.impl == "fanfold":
            from fanfold.graphs.orchestrator import compile_orchestrator

            graph = compile_orchestrator(
                checkpointer=saver, synthesize_answer=False, **_granularity(checkpointer)
            )

            def run(
                n: int, mc: int, thread_id: str | None = None
            ) -> Callable[[], Awaitable[dict[int, str]]]:
                deps: dict[int, list[int]] = {i: [] for i in range(1, n + 1)}
                return lambda: fanfold_impl.run_plan(
                    deps,
                    model=bench.model,
                    tools=tools,
                    mc=mc,
                    graph=graph,
                    thread_id=thread_id or str(uuid.uuid4()),
                )

        else:
            bare = bare_langgraph.build(
                bench.model,
                tools,
                checkpointer=saver,
                subagent_checkpoints=checkpointer != "sqlite-task",
            )

            def run(
                n: int, mc: int, thread_id: str | None = None
            ) -> Callable[[], Awaitable[dict[int, str]]]:
                items = list(range(1, n + 1))
                return lambda: bare_langgraph.run_flat(
                    items,
                    model=bench.model,
                    tools=tools,
                    mc=mc,
                    graph=bare,
                    thread_id=thread_id or str(uuid.uuid4()),
                )

        yield run


def granularity_supported() -> bool:
    """Say whether this Fanfold's `compile_orchestrator` takes `checkpoint_granularity`."""
    from fanfold.graphs.orchestrator import compile_orchestrator

    return "checkpoint_granularity" in inspect.signature(compile_orchestrator).parameters


def _granularity(checkpointer: str) -> dict[str, str]:
    if checkpointer in ("sqlite-step", "sqlite-task"):
        if not granularity_supported():
            msg = "this Fanfold has no `checkpoint_granularity`"
            raise ValueError(msg)
        return {"checkpoint_granularity": checkpointer.removeprefix("sqlite-")}
    return {}


def _granularity_label(impl: str, checkpointer: str) -> str:
    if checkpointer == "none":
        return ""
    if checkpointer.endswith(("-step", "-task")):
        return checkpointer.rsplit("-", 1)[1]
    if impl == "fanfold":
        from fanfold.graphs.orchestrator import compile_orchestrator

        param = inspect.signature(compile_orchestrator).parameters.get("checkpoint_granularity")
        return f"{param.default} (default)" if param is not None else "step (default)"
    return "step (default)"


@asynccontextmanager
async def _saver(checkpointer: str, path: str) -> Any:
    if checkpointer == "memory":
        yield InMemorySaver()
    elif checkpointer in ("sqlite", "sqlite-step", "sqlite-task"):
        async with sqlite_saver(path) as saver:
            yield saver
    else:
        msg = f"unknown checkpointer `{checkpointer}`"
        raise ValueError(msg)


def _db_stats(path: str, thread_id: str) -> dict[str, float]:
    """Return what one run stored in SQLite: checkpoints, writes and their bytes."""
    if not os.path.exists(path):
        return {}
    with sqlite3.connect(path) as conn:
        checkpoints, cp_bytes = conn.execute(
            "select count(*), coalesce(sum(length(checkpoint) + length(metadata)), 0)"
            " from checkpoints where thread_id = ?",
            (thread_id,),
        ).fetchone()
        writes, w_bytes = conn.execute(
            "select count(*), coalesce(sum(length(value)), 0) from writes where thread_id = ?",
            (thread_id,),
        ).fetchone()
    return {"checkpoints": checkpoints, "writes": writes, "bytes": cp_bytes + w_bytes}


async def measure_checkpoint(
    impl: str, n: int, mc: int, latency: float, checkpointers: Sequence[str], best_of: int
) -> list[dict[str, Any]]:
    """Return wall and CPU time of the same run on each checkpointer, and what SQLite stored.

    The checkpointers take turns (none, memory, sqlite, ..., then again), so a
    noisy moment on the machine does not land on one of them only; each keeps
    its best wall time.
    """
    bench = Bench(impl)
    await bench.warm_up()
    if impl == "fanfold" and not granularity_supported():
        checkpointers = [c for c in checkpointers if not c.endswith(("-step", "-task"))]
    best: dict[str, dict[str, Any]] = {}
    stored: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            runs = {}
            for c in checkpointers:
                path = os.path.join(tmp, f"{c}.sqlite")
                runs[c] = (path, await stack.enter_async_context(_checkpointed(bench, c, path)))
                bench.model.latency = 0.0
                await bench.run_checked(runs[c][1](WARMUP_N, 4), WARMUP_N, 4)
            for _ in range(best_of):
                for c, (path, run) in runs.items():
                    thread_id = str(uuid.uuid4())
                    bench.model.latency = latency
                    stats = await bench.run_checked(run(n, mc, thread_id), n, mc)
                    if c not in best or stats["wall_s"] < best[c]["wall_s"]:
                        best[c] = stats
                    stored.setdefault(c, {"thread_id": thread_id, "path": path})
        for c, where in stored.items():
            stored[c] = _db_stats(where["path"], where["thread_id"])
    return [
        {
            "impl": impl,
            "checkpointer": c,
            "granularity": _granularity_label(impl, c),
            "n": n,
            "mc": mc,
            "runs": best_of,
            **best[c],
            "per_subagent": {k: v / n for k, v in stored[c].items()},
        }
        for c in checkpointers
    ]


POSTGRES_URL_ENV = "FANFOLD_BENCH_POSTGRES_URL"
"""A PostgreSQL URL for `checkpoint_bytes` (the bench never starts a server)."""


def _pg_stats(url: str, thread_id: str) -> dict[str, float]:
    """Return what one run stored in PostgreSQL (langgraph-checkpoint-postgres 3.2's tables).

    Bytes: `checkpoints.checkpoint` and `.metadata` (jsonb, counted as their text),
    `checkpoint_blobs.blob` (NULL for an empty channel) and `checkpoint_writes.blob`.
    """
    import psycopg

    with psycopg.connect(url) as conn:
        checkpoints, cp_bytes = conn.execute(
            "select count(*), coalesce(sum(octet_length(checkpoint::text)"
            " + octet_length(metadata::text)), 0) from checkpoints where thread_id = %s",
            (thread_id,),
        ).fetchone()
        blobs, b_bytes = conn.execute(
            "select count(*), coalesce(sum(octet_length(blob)), 0)"
            " from checkpoint_blobs where thread_id = %s",
            (thread_id,),
        ).fetchone()
        writes, w_bytes = conn.execute(
            "select count(*), coalesce(sum(octet_length(blob)), 0)"
            " from checkpoint_writes where thread_id = %s",
            (thread_id,),
        ).fetchone()
    return {
        "checkpoints": checkpoints,
        "blobs": blobs,
        "writes": writes,
        "bytes": int(cp_bytes + b_bytes + w_bytes),
    }


async def measure_checkpoint_bytes(
    impl: str, sizes: Sequence[int], mc: int, backends: Sequence[str], best_of: int = 2
) -> list[dict[str, Any]]:
    """Return the bytes a checkpointed given-plan run stores per task, at each size.

    For each backend (`sqlite`: a temp file; `postgres`: the server at
    `$FANFOLD_BENCH_POSTGRES_URL`, through Fanfold's `open_checkpointer`) and each
    N, one run of N independent tasks at `mc`, zero latency, on a fresh thread;
    then the bytes that thread stored. At the largest N the SQLite run and the same
    run on `InMemorySaver` take turns, `best_of` each, and keep their best wall
    time (rows with backend `memory`), for SQLite's wall cost at that size. The
    PostgreSQL threads are deleted once counted.
    """
    if impl != "fanfold":
        msg = "checkpoint_bytes measures Fanfold only"
        raise ValueError(msg)
    from fanfold.graphs.checkpoint import open_checkpointer
    from fanfold.graphs.orchestrator import compile_orchestrator
    from fanfold.graphs.serde import allow_fanfold_types

    bench = Bench(impl)
    await bench.warm_up()
    tools = [bench.tool]
    largest = max(sizes)

    def start(graph: Any, n: int, thread_id: str) -> Callable[[], Awaitable[dict[int, str]]]:
        deps: dict[int, list[int]] = {i: [] for i in range(1, n + 1)}
        return lambda: fanfold_impl.run_plan(
            deps, model=bench.model, tools=tools, mc=mc, graph=graph, thread_id=thread_id
        )

    async def timed(graph: Any, n: int, thread_id: str) -> dict[str, float]:
        bench.model.latency = 0.0
        return await bench.run_checked(start(graph, n, thread_id), n, mc)

    # The same serializer allowlist `open_checkpointer` gives the savers it opens.
    memory = allow_fanfold_types(InMemorySaver())
    memory_graph = compile_orchestrator(checkpointer=memory, synthesize_answer=False)
    await timed(memory_graph, WARMUP_N, str(uuid.uuid4()))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if backend == "sqlite":
                location = os.path.join(tmp, "cp.sqlite")
            elif backend == "postgres":
                location = os.environ.get(POSTGRES_URL_ENV, "")
                if not location:
                    msg = f"backend `postgres` needs ${POSTGRES_URL_ENV}"
                    raise ValueError(msg)
            else:
                msg = f"unknown backend `{backend}`; known: sqlite, postgres"
                raise ValueError(msg)

            async with open_checkpointer(location) as saver:

                def stored(thread_id: str, backend: str = backend, loc: str = location) -> Any:
                    if backend == "sqlite":
                        return _db_stats(loc, thread_id)
                    return _pg_stats(loc, thread_id)

                async def forget(thread_id: str, backend: str = backend, saver: Any = saver):
                    if backend == "postgres":
                        await saver.adelete_thread(thread_id)

                graph = compile_orchestrator(checkpointer=saver, synthesize_answer=False)
                warm = str(uuid.uuid4())
                await timed(graph, WARMUP_N, warm)
                await forget(warm)
                for n in sizes:
                    compare = backend == "sqlite" and n == largest
                    turns = best_of if compare else 1
                    walls: list[float] = []
                    memory_walls: list[float] = []
                    counted: dict[str, float] = {}
                    for _ in range(turns):
                        if compare:
                            stats = await timed(memory_graph, n, str(uuid.uuid4()))
                            memory_walls.append(stats["wall_s"])
                        thread_id = str(uuid.uuid4())
                        stats = await timed(graph, n, thread_id)
                        walls.append(stats["wall_s"])
                        counted = counted or stored(thread_id)
                        await forget(thread_id)
                    rows.append(
                        {
                            "backend": backend,
                            "n": n,
                            "mc": mc,
                            "runs": turns,
                            "wall_s": min(walls),
                            "all_wall_s": walls,
                            **counted,
                            "bytes_per_task": counted["bytes"] / n,
                        }
                    )
                    if compare:
                        rows.append(
                            {
                                "backend": "memory",
                                "n": n,
                                "mc": mc,
                                "runs": turns,
                                "wall_s": min(memory_walls),
                                "all_wall_s": memory_walls,
                                "bytes": None,
                                "bytes_per_task": None,
                            }
                        )
    return rows


async def measure_dag(impl: str, n: int, median_call_s: float, mc: int) -> dict[str, Any]:
    """Return the makespan of the seeded DAG next to its critical path and wave bound."""
    deps, latency = dag.make_dag(n, median_call_s=median_call_s)
    times = dag.task_times(latency)
    bench = Bench(impl)
    await bench.warm_up()
    bench.model.latency, bench.model.latencies = 0.0, latency
    tools = [bench.tool]
    if impl == "raw":
        start = lambda: raw_asyncio.run_dag(deps, model=bench.model, tools=tools, mc=mc)  # noqa: E731
    elif impl == "bare":
        start = lambda: bare_langgraph.run_dag(deps, model=bench.model, tools=tools, mc=mc)  # noqa: E731
    else:
        start = lambda: fanfold_impl.run_plan(deps, model=bench.model, tools=tools, mc=mc)  # noqa: E731
    stats = await bench.run_checked(start, n, mc)
    bench.model.latencies = {}
    return {
        "impl": impl,
        "n": n,
        "mc": mc,
        "depth": dag.depth(deps),
        "critical_path_s": dag.critical_path(deps, times),
        "wave_bound_s": dag.wave_bound(deps, times),
        "task_time_s": sum(times.values()),
        **stats,
    }


async def measure_skew(impl: str, n: int, mc: int, median_call_s: float) -> dict[str, Any]:
    """Return the makespan of `n` independent tasks with the DAG's log-normal latencies."""
    _, latency = dag.make_dag(n, median_call_s=median_call_s)
    times = dag.task_times(latency)
    bench = Bench(impl)
    await bench.warm_up()
    bench.model.latency, bench.model.latencies = 0.0, latency
    stats = await bench.run_checked(bench.flat(n, mc), n, mc)
    bench.model.latencies = {}
    total, longest = sum(times.values()), max(times.values())
    return {
        "impl": impl,
        "n": n,
        "mc": mc,
        "bound_s": max(total / mc, longest),
        "task_time_s": total,
        **stats,
    }


def run_child(spec: dict[str, Any]) -> Any:
    """Run one measurement described by `spec` (from run.py) and return its data."""
    kind = spec.pop("kind")
    fn = {
        "efficiency": measure_efficiency,
        "cpu": measure_cpu,
        "memory": measure_memory,
        "checkpoint": measure_checkpoint,
        "checkpoint_bytes": measure_checkpoint_bytes,
        "dag": measure_dag,
        "skew": measure_skew,
    }[kind]
    return asyncio.run(fn(**spec))
