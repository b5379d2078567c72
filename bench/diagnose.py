"""Experiments behind the explanations in docs/BENCHMARKS.md (not part of the table).

    python bench/diagnose.py profile fanfold 2000       # cProfile, zero latency, mc=10
    python bench/diagnose.py growth fanfold 500 1000 2000 4000
    python bench/diagnose.py gc 2000                    # Fanfold: GC on, frozen, off
    python bench/diagnose.py stream 2000                # arun (streaming) vs graph.ainvoke
    python bench/diagnose.py window 4000                # bare LangGraph: Sends in windows
    python bench/diagnose.py memory fanfold 1000        # tracemalloc: who holds the bytes
    python bench/diagnose.py rss bare-node 1000         # run.py's RSS cell, any implementation
    python bench/diagnose.py settings 1000 --latency 0.05   # Fanfold defaults that cost time
    python bench/diagnose.py skew 200                   # flat tasks, log-normal latencies
    python bench/diagnose.py efficiency 1000 raw bare-node  # 50 ms calls, mc=10 and 100
    python bench/diagnose.py checkpoints 1000           # SQLite cost as rounds grow

Every run checks all the work was done, as run.py does. Each experiment runs in
this one process: compare figures within one experiment only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import math
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import bare_langgraph  # noqa: E402
import fanfold_impl  # noqa: E402
from fake import MODEL_CALLS  # noqa: E402
from measure import Bench  # noqa: E402

Start = Callable[[], Awaitable[dict[int, str]]]


async def timed(bench: Bench, start: Start, n: int, mc: int) -> dict[str, float]:
    """Run once, checked; return wall, CPU and GC seconds."""
    return await bench.run_checked(start, n, mc)


def per_agent(stats: dict[str, float], n: int) -> str:
    return (
        f"CPU {stats['cpu_s'] / n * 1e3:6.2f} ms/agent, GC {stats['gc_s'] / n * 1e3:5.2f} ms/agent,"
        f" wall {stats['wall_s']:7.2f} s"
    )


async def profile(impl: str, n: int, mc: int, latency: float, top: int) -> None:
    bench = Bench(impl)
    await bench.warm_up()
    bench.model.latency = latency
    prof = cProfile.Profile()
    bench.counts.reset()
    start = bench.flat(n, mc)
    prof.enable()
    await start()
    prof.disable()
    bench.counts.check(n, limit=mc)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    print(f"own time by package, ms per subagent ({impl}, N={n}, mc={mc}, under cProfile):")
    for name, secs in by_package(stats):
        print(f"  {secs / n * 1e3:7.3f}  {name}")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"/(graphs|nodes|tools)/", top)
    print(out.getvalue())


def by_package(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Sum each function's own time by the package it lives in."""
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "site-packages/" in filename:
            name = filename.split("site-packages/")[1].split("/")[0]
        elif "/work/main/" in filename:
            name = "fanfold " + filename.split("/work/main/")[1].split("/")[0] + "/"
        elif filename.startswith("<") or filename == "~":
            name = "builtins (C)"
        else:
            name = "stdlib " + Path(filename).stem
        totals[name] = totals.get(name, 0.0) + tottime
    return sorted(totals.items(), key=lambda kv: -kv[1])[:14]


async def growth(impl: str, sizes: list[int], mc: int) -> None:
    bench = Bench(impl)
    await bench.warm_up()
    for n in sizes:
        stats = await timed(bench, bench.flat(n, mc), n, mc)
        print(f"{impl:8} N={n:6}: {per_agent(stats, n)}", flush=True)


async def gc_modes(n: int, mc: int) -> None:
    """Fanfold at zero latency with the collector as is, frozen after setup, and off."""
    bench = Bench("fanfold")
    await bench.warm_up()
    for mode in ("default", "freeze", "off"):
        gc.collect()
        if mode == "freeze":
            gc.freeze()
        if mode == "off":
            gc.disable()
        try:
            stats = await timed(bench, bench.flat(n, mc), n, mc)
        finally:
            gc.enable()
            gc.unfreeze()
        print(f"gc {mode:8} N={n}: {per_agent(stats, n)}", flush=True)


async def stream_cost(n: int, mc: int) -> None:
    """Fanfold's `arun` (astream, subgraphs=True, custom+values) against `ainvoke`."""
    from fanfold import RunSettings
    from fanfold.nodes.domain import Plan

    bench = Bench("fanfold")
    await bench.warm_up()
    tools = [bench.tool]
    graph = fanfold_impl.plain_graph()
    deps: dict[int, list[int]] = {i: [] for i in range(1, n + 1)}

    async def via_ainvoke() -> dict[int, str]:
        plan = Plan(tasks=[fanfold_impl.task(i) for i in deps], rationale="bench")
        settings = RunSettings(
            model=bench.model, tools=tools, max_concurrency=mc, task_timeout_s=None, max_tasks=n
        )
        state = await graph.ainvoke(
            {"request": "", "given_plan": plan}, settings.as_config(), context=settings
        )
        return fanfold_impl.answers_of(state["results"])

    for name, start in (
        ("arun", lambda: fanfold_impl.run_plan(deps, model=bench.model, tools=tools, mc=mc)),
        ("ainvoke", via_ainvoke),
    ):
        stats = await timed(bench, start, n, mc)
        print(f"{name:8} N={n}: {per_agent(stats, n)}", flush=True)


async def windows(n: int, mc: int, latency: float) -> None:
    """Bare LangGraph with every Send in one superstep against windows of k x mc Sends."""
    bench = Bench("bare")
    await bench.warm_up()
    tools = [bench.tool]
    bench.model.latency = latency
    ideal = math.ceil(n / mc) * MODEL_CALLS * latency
    items = list(range(1, n + 1))
    for window in (None, 8 * mc, 2 * mc, mc):
        graph = bare_langgraph.build(bench.model, tools, window=window)

        def start(graph: Any = graph) -> Awaitable[dict[int, str]]:
            return bare_langgraph.run_flat(
                items, model=bench.model, tools=tools, mc=mc, graph=graph
            )

        stats = await timed(bench, start, n, mc)
        eff = f", efficiency {ideal / stats['wall_s']:.2f}" if latency else ""
        print(f"window {window!s:5} N={n} mc={mc}: {per_agent(stats, n)}{eff}", flush=True)


async def memory_sites(impl: str, n: int, top: int) -> None:
    """Hold `n` subagents at their first model call; show what their memory is, by file."""
    import tracemalloc

    bench = Bench(impl)
    await bench.warm_up()
    counts = bench.counts
    counts.reset()
    counts.gate, counts.release = asyncio.Event(), asyncio.Event()
    bench.model.latency, bench.model.gate = 0.0, n
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    run = asyncio.ensure_future(bench.flat(n, n)())
    await counts.gate.wait()
    await asyncio.sleep(0.2)  # let the last arrival reach the release too
    gc.collect()
    held = tracemalloc.take_snapshot()
    counts.release.set()
    await run
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    bench.counts.check(n, limit=n)
    diff = held.compare_to(before, "filename")
    total = sum(d.size_diff for d in diff)
    print(f"{impl}: {n} subagents held at their first model call")
    print(
        f"  traced growth {total / n / 1024:.1f} KB/subagent; traced peak {peak / 1024**2:.1f} MB"
    )
    for d in diff[:top]:
        name = d.traceback[0].filename.split("site-packages/")[-1]
        print(
            f"  {d.size_diff / n / 1024:7.2f} KB/subagent  {d.count_diff / n:7.1f} blocks  {name}"
        )


async def settings_cost(n: int, mc: int, latency: float) -> None:
    """Fanfold with its default settings against start jitter and per-call timeouts off."""
    from fanfold import RunSettings, execute_tasks_parallel

    bench = Bench("fanfold")
    await bench.warm_up()
    bench.model.latency = latency
    tools = [bench.tool]
    variants = {
        "defaults": {},
        "start_jitter_s=0": {"start_jitter_s": 0.0},
        "jitter 0, no call timeouts": {
            "start_jitter_s": 0.0,
            "request_timeout_s": None,
            "tool_timeout_s": None,
        },
    }
    ideal = math.ceil(n / mc) * MODEL_CALLS * latency
    for name, overrides in variants.items():

        async def start(overrides: dict[str, Any] = overrides) -> dict[int, str]:
            results = await execute_tasks_parallel(
                [fanfold_impl.task(i) for i in range(1, n + 1)],
                model=bench.model,
                tools=tools,
                max_concurrency=mc,
                settings=RunSettings(**overrides),
            )
            return fanfold_impl.answers_of(results)

        stats = await timed(bench, start, n, mc)
        eff = f", efficiency {ideal / stats['wall_s']:.2f}" if latency else ""
        print(f"{name:28} N={n} mc={mc}: {per_agent(stats, n)}{eff}", flush=True)


async def skew(n: int, mc: int, median_call_s: float) -> None:
    """Independent tasks whose latencies are log-normal (as real model calls are).

    A run that dispatches `mc` tasks per superstep waits for the slowest of each
    window; a semaphore starts the next task as soon as any slot frees.
    """
    import dag

    _, latency = dag.make_dag(n, median_call_s=median_call_s)
    times = dag.task_times(latency)
    print(
        f"{n} tasks, mc={mc}: total task time {sum(times.values()):.2f} s, bound "
        f"max(total/mc, longest) = {max(sum(times.values()) / mc, max(times.values())):.2f} s"
    )
    for impl in ("raw", "bare", "fanfold"):
        bench = Bench(impl)
        await bench.warm_up()
        bench.model.latencies = latency
        stats = await timed(bench, bench.flat(n, mc), n, mc)
        print(f"{impl:8} makespan {stats['wall_s']:6.2f} s, CPU {stats['cpu_s']:.2f} s", flush=True)


async def efficiency(n: int, impls: list[str], mcs: list[int], latency: float) -> None:
    """Parallel efficiency of some implementations (including `bare-node`), one after another."""
    from measure import measure_efficiency

    for impl in impls:
        for row in await measure_efficiency(impl, [n], mcs, latency, best_of=1):
            print(
                f"{impl:10} N={n} mc={row['mc']:4}: efficiency {row['efficiency']:.2f},"
                f" CPU {row['cpu_s'] / n * 1e3:.2f} ms/agent",
                flush=True,
            )


async def checkpoints(n: int, mc: int) -> None:
    """Fanfold on SQLite at many rounds, and a functional-API entrypoint on the same saver."""
    import os
    import tempfile

    import bare_langgraph
    from langgraph.func import entrypoint, task
    from measure import _db_stats, measure_checkpoint, sqlite_saver

    for row in await measure_checkpoint("fanfold", n, mc, 0.0, ["none", "sqlite"], best_of=1):
        kb = row["per_subagent"].get("bytes", 0) / 1024
        print(f"fanfold {row['checkpointer']:7} N={n} mc={mc}: wall {row['wall_s']:.2f} s,"
              f" stored {kb:.1f} KB/subagent")  # fmt: skip
    bench = Bench("raw")  # only its fake model and tool
    sub = bare_langgraph.build_subagent(bench.model, [bench.tool], checkpointer=False)

    @task
    async def run_item(item: int) -> str:
        out = await sub.ainvoke({"item": item})
        return str(out["answers"][-1])

    async def body(items: list[int]) -> dict[int, str]:
        futures = [run_item(i) for i in items]
        return {i: await f for i, f in zip(items, futures, strict=True)}

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cp.sqlite")
        async with sqlite_saver(path) as saver:
            for name, graph in (
                ("none", entrypoint()(body)),
                ("sqlite", entrypoint(checkpointer=saver)(body)),
            ):
                thread = f"{name}-run"
                # The entrypoint holds one max_concurrency slot itself: mc + 1.
                config = {"max_concurrency": mc + 1, "configurable": {"thread_id": thread}}

                async def start(graph: Any = graph, config: Any = config) -> dict[int, str]:
                    return dict(await graph.ainvoke(list(range(1, n + 1)), config))

                stats = await timed(bench, start, n, mc)
                stored = _db_stats(path, thread) if name == "sqlite" else {}
                print(f"functional API {name:7} N={n} mc={mc}: wall {stats['wall_s']:.2f} s,"
                      f" peak {stats['peak']}, stored {stored}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("profile")
    p.add_argument("impl", choices=["raw", "bare", "fanfold", "bare-node"])
    p.add_argument("n", type=int)
    p.add_argument("--mc", type=int, default=10)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--top", type=int, default=35)
    g = sub.add_parser("growth")
    g.add_argument("impl", choices=["raw", "bare", "fanfold", "bare-node"])
    g.add_argument("sizes", type=int, nargs="+")
    g.add_argument("--mc", type=int, default=10)
    for name in ("gc", "stream"):
        q = sub.add_parser(name)
        q.add_argument("n", type=int)
        q.add_argument("--mc", type=int, default=10)
    w = sub.add_parser("window")
    w.add_argument("n", type=int)
    w.add_argument("--mc", type=int, default=100)
    w.add_argument("--latency", type=float, default=0.0)
    st = sub.add_parser("settings")
    st.add_argument("n", type=int)
    st.add_argument("--mc", type=int, default=10)
    st.add_argument("--latency", type=float, default=0.0)
    sk = sub.add_parser("skew")
    sk.add_argument("n", type=int)
    sk.add_argument("--mc", type=int, default=10)
    sk.add_argument("--median", type=float, default=0.05)
    ef = sub.add_parser("efficiency")
    ef.add_argument("n", type=int)
    ef.add_argument("impls", nargs="+", choices=["raw", "bare", "fanfold", "bare-node"])
    ef.add_argument("--mcs", type=int, nargs="+", default=[10, 100])
    ef.add_argument("--latency", type=float, default=0.05)
    ck = sub.add_parser("checkpoints")
    ck.add_argument("n", type=int)
    ck.add_argument("--mc", type=int, default=10)
    rss = sub.add_parser("rss")
    rss.add_argument("impl", choices=["raw", "bare", "fanfold", "bare-node"])
    rss.add_argument("n", type=int)
    rss.add_argument("--checkpointer", default="none", choices=["none", "sqlite", "sqlite-step"])
    mem = sub.add_parser("memory")
    mem.add_argument("impl", choices=["raw", "bare", "fanfold", "bare-node"])
    mem.add_argument("n", type=int)
    mem.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.cmd == "profile":
        asyncio.run(profile(args.impl, args.n, args.mc, args.latency, args.top))
    elif args.cmd == "growth":
        asyncio.run(growth(args.impl, args.sizes, args.mc))
    elif args.cmd == "gc":
        asyncio.run(gc_modes(args.n, args.mc))
    elif args.cmd == "stream":
        asyncio.run(stream_cost(args.n, args.mc))
    elif args.cmd == "settings":
        asyncio.run(settings_cost(args.n, args.mc, args.latency))
    elif args.cmd == "skew":
        asyncio.run(skew(args.n, args.mc, args.median))
    elif args.cmd == "efficiency":
        asyncio.run(efficiency(args.n, args.impls, args.mcs, args.latency))
    elif args.cmd == "checkpoints":
        asyncio.run(checkpoints(args.n, args.mc))
    elif args.cmd == "rss":
        from measure import measure_memory

        row = asyncio.run(measure_memory(args.impl, args.n, args.checkpointer))
        print(f"{args.impl} ({args.checkpointer}): {row['kb_per_subagent']:.1f} KB/subagent RSS,"
              f" {row['peak']} in flight")  # fmt: skip
    elif args.cmd == "memory":
        asyncio.run(memory_sites(args.impl, args.n, args.top))
    elif args.cmd == "window":
        asyncio.run(windows(args.n, args.mc, args.latency))
    else:
        msg = f"unknown experiment `{args.cmd}`"
        raise ValueError(msg)
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
