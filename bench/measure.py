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
            held = await rss_held(bench, lambda k: run(k, k), n)
    return {"impl": impl, "checkpointer": checkpointer, **held}


async def rss_held(
    bench: Bench, flat: Callable[[int], Callable[[], Awaitable[dict[int, str]]]], n: int
) -> dict[str, Any]:
    """Return the peak RSS per in-flight subagent: the growth from holding `n` to `2n`.

    The fake's gate holds `n` subagents at once, then, in a second run, `2n`; the
    figure is (peak of the second - peak of the first) / n. The first run takes up
    the free heap that imports and warm-ups left (how much there is varies from one
    process to the next: up to 15 MB here, enough to hide 200 subagents); the second
    reuses what the first freed and needs new pages only for the `n` more.
    """
    peaks, stats = [], {}
    for k in (n, 2 * n):
        bench.model.gate = k
        stats = await bench.run_checked(flat(k), k, k)
        if stats["peak"] != k:
            msg = f"only {stats['peak']} of {k} subagents were in flight at once"
            raise AssertionError(msg)
        peaks.append(maxrss_kb())
    if peaks[1] <= peaks[0]:
        msg = f"peak RSS did not grow from {n} to {2 * n} in flight ({peaks} KB)"
        raise AssertionError(msg)
    return {
        "n": n,
        "rss_before_kb": peaks[0],  # the peak at N
        "rss_peak_kb": peaks[1],
        "kb_per_subagent": (peaks[1] - peaks[0]) / n,
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
    async with _saver(checkpointer, path, bench.impl) as saver:
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
async def _saver(checkpointer: str, path: str, impl: str = "bare") -> Any:
    """Yield the saver: for Fanfold what `open_checkpointer` opens (SQLite: its group-commit
    saver), for bare LangGraph the stock `AsyncSqliteSaver`."""
    if checkpointer == "memory":
        yield InMemorySaver()
    elif impl == "fanfold" and checkpointer in ("sqlite", "sqlite-step"):
        from fanfold.graphs.checkpoint import open_checkpointer

        async with open_checkpointer(path) as saver:
            yield saver
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
    """Return the bytes a checkpointed given-plan run stores per task, and its wall cost.

    For each N, one run of N independent tasks at `mc`, zero latency, on a fresh
    thread per backend (`sqlite`: a temp file; `postgres`: the server at
    `$FANFOLD_BENCH_POSTGRES_URL`; both opened by Fanfold's `open_checkpointer`)
    and on `InMemorySaver` (rows with backend `memory`), taking turns, `best_of`
    rounds, each keeping its best wall time; then the bytes the first measured
    thread of each backend stored. The PostgreSQL threads are deleted once counted.
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

    async def timed(graph: Any, n: int, thread_id: str) -> float:
        bench.model.latency = 0.0
        deps: dict[int, list[int]] = {i: [] for i in range(1, n + 1)}
        run = lambda: fanfold_impl.run_plan(  # noqa: E731
            deps, model=bench.model, tools=tools, mc=mc, graph=graph, thread_id=thread_id
        )
        return float((await bench.run_checked(run, n, mc))["wall_s"])

    def location_of(backend: str, tmp: str) -> str:
        if backend == "sqlite":
            return os.path.join(tmp, "cp.sqlite")
        if backend == "postgres":
            url = os.environ.get(POSTGRES_URL_ENV, "")
            if not url:
                msg = f"backend `postgres` needs ${POSTGRES_URL_ENV}"
                raise ValueError(msg)
            return url
        msg = f"unknown backend `{backend}`; known: sqlite, postgres"
        raise ValueError(msg)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            # The same serializer allowlist `open_checkpointer` gives the savers it opens.
            graphs = {
                "memory": compile_orchestrator(
                    checkpointer=allow_fanfold_types(InMemorySaver()), synthesize_answer=False
                )
            }
            where = {"memory": ""}
            for backend in backends:
                where[backend] = location_of(backend, tmp)
                saver = await stack.enter_async_context(open_checkpointer(where[backend]))
                graphs[backend] = compile_orchestrator(checkpointer=saver, synthesize_answer=False)

            async def forget(backend: str, thread_id: str) -> None:
                if backend == "postgres":
                    await graphs[backend].checkpointer.adelete_thread(thread_id)  # type: ignore[union-attr]

            for backend, graph in graphs.items():  # warm-up, every backend
                warm = str(uuid.uuid4())
                await timed(graph, WARMUP_N, warm)
                await forget(backend, warm)
            for n in sizes:
                walls: dict[str, list[float]] = {b: [] for b in graphs}
                counted: dict[str, dict[str, float]] = {}
                for _ in range(best_of):
                    for backend, graph in graphs.items():
                        thread_id = str(uuid.uuid4())
                        walls[backend].append(await timed(graph, n, thread_id))
                        if backend == "sqlite" and backend not in counted:
                            counted[backend] = _db_stats(where[backend], thread_id)
                        elif backend == "postgres" and backend not in counted:
                            counted[backend] = _pg_stats(where[backend], thread_id)
                        await forget(backend, thread_id)
                for backend in graphs:
                    stored = counted.get(backend, {"bytes": None})
                    rows.append(
                        {
                            "backend": backend,
                            "n": n,
                            "mc": mc,
                            "runs": best_of,
                            "wall_s": min(walls[backend]),
                            "all_wall_s": walls[backend],
                            **stored,
                            "bytes_per_task": (
                                None if stored["bytes"] is None else stored["bytes"] / n
                            ),
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
