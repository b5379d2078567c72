"""The peer row: Fanfold against deepagents on the same fake work, figures as ratios.

    python bench/peer.py --quick    # under 30 s
    python bench/peer.py            # the full run, under 3 minutes
    python bench/peer.py --json     # the same figures as one JSON document

Both run the fake ReAct work of `fake.py` (3 model calls and 2 `lookup` calls per
subagent) with the same fake model code: Fanfold through `execute_tasks_parallel`
(`fanfold_impl.run_flat`), deepagents through a main deep agent whose `task` tool
fans one `worker` subagent out per item (`deepagents_impl.py`). deepagents is a
bench-only dependency (`pip install -e .[bench]`).

Each implementation runs in child processes of its own (a fresh interpreter, like
`run.py`): one for CPU and efficiency (after a warm-up), one per memory cell, one
for the failure cases (the quick run starts these beside the memory cells). Measured:

- CPU per subagent: `process_time` over a run / N at zero latency, mc=10 (best of
  3 at N <= 100); GC time from `gc.callbacks`.
- Peak RSS per in-flight subagent: the growth of `ru_maxrss` from holding N to 2N
  subagents in flight at once (the fake's gate; checked), / N (`measure.rss_held`).
- Wall time and parallel efficiency (ideal / wall, ideal = ceil(N/mc) x 3 calls x
  latency) at a concurrency limit and without one (Fanfold: mc = N; deepagents: no
  `max_concurrency`, so every `task` call starts at once).
- Failures, each in turn in one process: one subagent's `lookup` raises, hangs (an
  Event never set), or hangs ignoring cancellation; each framework with its own
  settings. The bench waits at most `cap_s` for a run (`asyncio.wait`, which never
  cancels), and records whether it ended by itself, when, what the caller got, and
  how many of the other N-1 right answers it got back.

Every run without a fault checks the work: model calls = 3N, tool calls = 2N,
every item's own answer, and at most the limit in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from measure import Bench, rss_held

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PLANS: dict[str, dict[str, Any]] = {
    "quick": {
        "cpu_sizes": [50],
        "cpu_mc": 10,
        "mem_n": 200,
        "latency": 0.05,
        "eff_n": 50,
        "eff_mc": 10,
        "fail_n": 12,
        "fail_mc": 10,
        "fail_latency": 0.01,
        "failing_item": 7,
        "timeout_s": 1.5,
        "cap_s": 2.5,
        "failures_beside_memory": True,
    },
    "full": {
        "cpu_sizes": [100, 1000],
        "cpu_mc": 10,
        "mem_n": 1000,
        "latency": 0.05,
        "eff_n": 200,
        "eff_mc": 10,
        "fail_n": 20,
        "fail_mc": 10,
        "fail_latency": 0.01,
        "failing_item": 7,
        "timeout_s": 2.0,
        "cap_s": 10.0,
        "failures_beside_memory": False,
    },
}
IMPLS = ("fanfold", "deepagents")
WARMUP_N = 20
FANFOLD_MEM_N = 1000
"""Fewest Fanfold subagents held for its RSS figure (see `collect`)."""
BEST_OF = 3
CHILD_TIMEOUT_S = 300
VERSIONS = ("deepagents", "langchain", "langgraph", "langchain-core", "langgraph-prebuilt")


# --- in a child process ------------------------------------------------------------


class Runner(Bench):
    """One implementation in this process: the fake model and tool, and a way to run N items.

    `run_checked` and `warm_up` are the main bench's (`measure.Bench`).
    """

    def __init__(self, impl: str, *, tool: Any = None, middleware: Sequence[Any] = ()) -> None:
        from fake import Counts, FakeChatModel, make_tool

        if impl not in IMPLS:
            msg = f"unknown implementation `{impl}`; known: {IMPLS}"
            raise ValueError(msg)
        self.impl = impl
        self.bare_graph = None
        self.counts = Counts()
        self.tool = tool(self.counts) if tool else make_tool(self.counts)
        if impl == "fanfold":
            self.model: Any = FakeChatModel(counts=self.counts)
            return
        import deepagents_impl as da

        self.model = da.WorkerModel(counts=self.counts)
        self.lead = da.LeadModel()
        # Built once, outside every timed region, as an application would.
        self.agent = da.build(self.model, [self.tool], self.lead, middleware=middleware)

    def flat(self, n: int, mc: int | None) -> Callable[[], Awaitable[dict[int, str]]]:
        """Return a coroutine factory running `n` subagents, at most `mc` at once (None: all)."""
        items = list(range(1, n + 1))
        if self.impl == "fanfold":
            import fanfold_impl

            width = n if mc is None else mc
            return lambda: fanfold_impl.run_flat(
                items, model=self.model, tools=[self.tool], mc=width
            )
        import deepagents_impl as da

        return lambda: da.run_flat(items, agent=self.agent, lead=self.lead, mc=mc)


async def measure_speed(
    impl: str, cpu_sizes: Sequence[int], cpu_mc: int, eff_n: int, eff_mc: int, latency: float
) -> dict[str, Any]:
    """Return CPU per subagent at zero latency, then wall and efficiency with and without limit."""
    from fake import MODEL_CALLS

    r = Runner(impl)
    await r.warm_up()
    cpu = []
    for n in cpu_sizes:
        r.model.latency = 0.0
        runs = [
            await r.run_checked(r.flat(n, cpu_mc), n, cpu_mc)
            for _ in range(BEST_OF if n <= 100 else 1)
        ]
        best = min(runs, key=lambda x: x["cpu_s"])
        cpu.append(
            {
                "n": n,
                "mc": cpu_mc,
                "runs": len(runs),
                "cpu_ms": best["cpu_s"] / n * 1e3,
                "gc_ms": best["gc_s"] / n * 1e3,
                **best,
            }
        )
    eff = []
    for mc in (eff_mc, None):
        r.model.latency = latency
        stats = await r.run_checked(r.flat(eff_n, mc), eff_n, mc)
        ideal = math.ceil(eff_n / (mc or eff_n)) * MODEL_CALLS * latency
        eff.append(
            {
                "n": eff_n,
                "mc": mc,
                "latency_s": latency,
                "ideal_s": ideal,
                "efficiency": ideal / stats["wall_s"],
                **stats,
            }
        )
    return {"cpu": cpu, "efficiency": eff}


async def measure_memory(impl: str, n: int) -> dict[str, Any]:
    """Return the peak RSS growth per in-flight subagent with `n` subagents held at once."""
    r = Runner(impl)
    await r.warm_up()
    await r.warm_up()
    return {"impl": impl, **await rss_held(r, lambda k: r.flat(k, None), n)}


def faulty_tool(bad: int, fault: str) -> Callable[[Any], Any]:
    """Return a factory for `lookup` whose calls for item `bad` raise, hang, or hang stubbornly.

    `raise`: RuntimeError. `hang`: awaits an Event never set. `stubborn`: the same,
    but swallows every cancellation and goes back to waiting.
    """
    from fake import TOOL_NAME
    from langchain_core.tools import tool

    def make(counts: Any) -> Any:
        @tool(TOOL_NAME)
        async def lookup(item: int, step: int) -> str:
            """Look up the value of an item at a step."""
            counts.tool_calls += 1
            if item == bad:
                if fault == "raise":
                    raise RuntimeError(f"lookup failed for item {item}")
                never = asyncio.Event()
                while True:
                    try:
                        await never.wait()
                    except asyncio.CancelledError:
                        if fault != "stubborn":
                            raise
            return f"v{item}.{step}"

        return lookup

    return make


def on_tool_error(exc: Exception, request: Any) -> str:
    """ToolErrorMiddleware's handler: hand every tool error to the model as its result."""
    return f"Error: {type(exc).__name__}: {exc}"


async def _bounded(start: Callable[[], Awaitable[Any]], cap_s: float) -> tuple[str, Any, float]:
    """Run `start()` for at most `cap_s` without cancelling it; return (outcome, value, seconds)."""
    t0 = time.perf_counter()
    work = asyncio.ensure_future(start())
    done, _ = await asyncio.wait({work}, timeout=cap_s)
    seconds = time.perf_counter() - t0
    if not done:
        # Left running: a stubborn tool may never let it end. The process exits hard.
        work.add_done_callback(lambda f: f.cancelled() or f.exception())
        return "hung", None, seconds
    exc = work.exception()
    if exc is not None:
        return "raised", exc, seconds
    return "returned", work.result(), seconds


def _cases(impl: str, timeout_s: float) -> list[dict[str, Any]]:
    """Return the failure cases of `impl`: each framework with its own settings."""
    if impl == "fanfold":
        return [
            {"fault": "raise", "settings": "defaults (no task timeout)", "timeout_s": None},
            {"fault": "hang", "settings": f"task_timeout_s={timeout_s:g}", "timeout_s": timeout_s},
            {
                "fault": "stubborn",
                "settings": f"task_timeout_s={timeout_s:g}",
                "timeout_s": timeout_s,
            },
        ]
    # deepagents has no timeout of its own; LangGraph's `step_timeout` on the main agent
    # (one superstep runs every `task` call) is the nearest a user can set. Without any
    # timeout nothing is ever cancelled, so a stubborn tool is the same as a hang there.
    return [
        {"fault": "raise", "settings": "defaults", "middleware": False},
        {
            "fault": "raise",
            "settings": "worker middleware=[ToolErrorMiddleware]",
            "middleware": True,
        },
        {"fault": "hang", "settings": "defaults (no timeout)"},
        {"fault": "hang", "settings": f"step_timeout={timeout_s:g} (LangGraph)", "step": True},
        {
            "fault": "stubborn",
            "settings": f"step_timeout={timeout_s:g} (LangGraph)",
            "step": True,
        },
    ]


async def measure_failures(
    impl: str, n: int, mc: int, latency: float, failing_item: int, timeout_s: float, cap_s: float
) -> list[dict[str, Any]]:
    """Run each failure case in turn; return what the caller got, and when."""
    from fake import expected_answer

    warm = Runner(impl)
    await warm.warm_up()
    items = list(range(1, n + 1))
    rows = []
    for case in _cases(impl, timeout_s):
        tool = faulty_tool(failing_item, case["fault"])
        seen: dict[int, str] = {}
        if impl == "fanfold":
            from fanfold_impl import task

            from fanfold import execute_tasks_parallel

            r = Runner(impl, tool=tool)

            async def start(r: Runner = r, t: float | None = case["timeout_s"]) -> Any:
                return await execute_tasks_parallel(
                    [task(i) for i in items],
                    model=r.model,
                    tools=[r.tool],
                    max_concurrency=mc,
                    task_timeout_s=t,
                )

        else:
            import deepagents_impl as da
            from langchain.agents.middleware import ToolErrorMiddleware

            mw = [ToolErrorMiddleware(on_error=on_tool_error)] if case.get("middleware") else []
            r = Runner(impl, tool=tool, middleware=mw)
            if case.get("step"):
                r.agent.step_timeout = timeout_s

            def start(r: Runner = r, seen: dict[int, str] = seen) -> Awaitable[dict[int, str]]:
                return da.stream_flat(items, agent=r.agent, lead=r.lead, mc=mc, seen=seen)

        r.model.latency = latency
        outcome, value, seconds = await _bounded(start, cap_s)
        answers: dict[int, str] = {}
        failed: dict[str, Any] = {"result": False}
        if outcome == "returned" and impl == "fanfold":
            answers = {int(x.task_id[1:]): x.output for x in value if x.status == "ok"}
            bad = next(x for x in value if int(x.task_id[1:]) == failing_item)
            failed = {
                "result": True,
                "status": bad.status,
                "error": bad.error.type if bad.error else None,
                "tool_errors": bad.tool_errors,
                "output": bad.output[:120],
            }
            got = f"{len(value)} results"
        elif outcome == "returned":
            answers = dict(value)
            text = answers.get(failing_item)
            failed = {"result": text is not None, "output": (text or "")[:120]}
            got = f"{len(value)} results"
        elif outcome == "raised":
            got = f"{type(value).__name__} raised"
        else:
            got = "nothing: still running at the cap"
        kept = sum(1 for i in items if i != failing_item and answers.get(i) == expected_answer(i))
        timed_out = failed.get("status") == "timed_out" or (
            outcome == "raised" and isinstance(value, TimeoutError)
        )
        rows.append(
            {
                "impl": impl,
                "fault": case["fault"],
                "settings": case["settings"],
                "n": n,
                "mc": mc,
                "ended": outcome != "hung",
                "outcome": outcome,
                "seconds": seconds,
                "cap_s": cap_s,
                "caller_got": got,
                "error": None if outcome != "raised" else f"{type(value).__name__}: {value}"[:200],
                "kept": kept,
                "failed_item": failed,
                "timed_out": timed_out,
                "finished": r.counts.answers,
                "streamed": None if impl == "fanfold" else len(seen),
            }
        )
    return rows


def run_child(spec: dict[str, Any]) -> Any:
    """Run one measurement described by `spec` and return its data."""
    kind = spec.pop("kind")
    fn = {"speed": measure_speed, "memory": measure_memory, "failures": measure_failures}[kind]
    # Not asyncio.run: it would wait at exit for a stubborn tool that never ends.
    loop = asyncio.new_event_loop()
    return loop.run_until_complete(fn(**spec))


# --- in the parent -----------------------------------------------------------------


def start_child(spec: dict[str, Any]) -> subprocess.Popen[str]:
    """Start one measurement in a fresh interpreter."""
    import run

    return run.start_child(spec, __file__)


def child_result(proc: subprocess.Popen[str]) -> Any:
    """Wait for a child; return its data, or fail with its output."""
    import run

    return run.child_result(proc, CHILD_TIMEOUT_S)


def versions() -> dict[str, str]:
    """Return the versions of the packages both sides run on."""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    return {name: version(name) for name in VERSIONS}


def collect(plan: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Run every measurement of a plan ("quick" or "full"); return the raw figures."""
    p = PLANS[plan]
    data: dict[str, Any] = {"plan": plan, **p, "versions": versions(), "speed": {}}
    for impl in IMPLS:
        t0 = time.perf_counter()
        spec = {
            "kind": "speed",
            "impl": impl,
            "cpu_sizes": p["cpu_sizes"],
            "cpu_mc": p["cpu_mc"],
            "eff_n": p["eff_n"],
            "eff_mc": p["eff_mc"],
            "latency": p["latency"],
        }
        data["speed"][impl] = child_result(start_child(spec))
        say(f"{impl}: CPU and efficiency in {time.perf_counter() - t0:.0f}s")
    # Memory cells run side by side: peak RSS does not depend on how fast it gets there.
    # The failure cases mostly wait; the two frameworks' children run side by side too,
    # after the memory cells (full run) or beside them (quick run, to fit in 30 s).
    t0 = time.perf_counter()
    # Fanfold's cell holds at least 1000 (then 2000: `measure.rss_held`) even in the
    # quick run: a few seconds, and the free heap a process starts with (up to ~15 MB
    # seen) can hide most of 200 of its subagents, not of 200 deepagents subagents.
    mem = [
        start_child({"kind": "memory", "impl": i, "n": max(p["mem_n"], FANFOLD_MEM_N)})
        if i == "fanfold"
        else start_child({"kind": "memory", "impl": i, "n": p["mem_n"]})
        for i in IMPLS
    ]
    fail = {
        "n": p["fail_n"],
        "mc": p["fail_mc"],
        "latency": p["fail_latency"],
        "failing_item": p["failing_item"],
        "timeout_s": p["timeout_s"],
        "cap_s": p["cap_s"],
    }

    def failures() -> list[subprocess.Popen[str]]:
        return [start_child({"kind": "failures", "impl": i, **fail}) for i in IMPLS]

    beside = failures() if p["failures_beside_memory"] else []
    data["memory"] = {i: child_result(proc) for i, proc in zip(IMPLS, mem, strict=True)}
    say(f"memory ({p['mem_n']} in flight): {time.perf_counter() - t0:.0f}s")
    t0 = time.perf_counter()
    data["failures"] = [row for proc in beside or failures() for row in child_result(proc)]
    say(f"failures: {time.perf_counter() - t0:.0f}s more")
    return data


def _cpu(data: dict[str, Any], impl: str, n: int) -> dict[str, Any]:
    return next(r for r in data["speed"][impl]["cpu"] if r["n"] == n)


def _eff(data: dict[str, Any], impl: str, limited: bool) -> dict[str, Any]:
    return next(r for r in data["speed"][impl]["efficiency"] if (r["mc"] is not None) == limited)


def _fail(data: dict[str, Any], impl: str, fault: str, settings: str = "") -> dict[str, Any]:
    return next(
        r
        for r in data["failures"]
        if r["impl"] == impl and r["fault"] == fault and settings in r["settings"]
    )


def _score(row: dict[str, Any]) -> tuple[int, int, int]:
    """Return (ended by itself, right answers of the others returned, failed item reported)."""
    return int(row["ended"]), row["kept"], int(row["failed_item"]["result"])


def _describe(row: dict[str, Any]) -> str:
    end = f"ended in {row['seconds']:.2f} s" if row["ended"] else f"hung, cap {row['cap_s']:g} s"
    return f"{row['caller_got']}, {row['kept']}/{row['n'] - 1} kept, {end}"


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each peer target with its measured figure and PASS/MISS, in run.py's shape."""
    out: list[dict[str, Any]] = []

    def add(tid: str, what: str, detail: str, value: Any, goal: str, ok: bool) -> None:
        out.append(
            {"id": tid, "target": what, "detail": detail, "value": value, "goal": goal,
             "verdict": "PASS" if ok else "MISS"}
        )  # fmt: skip

    sizes = data["cpu_sizes"]
    for i, n in enumerate(sizes):
        f, d = _cpu(data, "fanfold", n)["cpu_ms"], _cpu(data, "deepagents", n)["cpu_ms"]
        add(
            f"P1{'ab'[i]}" if len(sizes) > 1 else "P1",
            f"CPU per subagent vs deepagents, N={n} mc={data['cpu_mc']}, zero latency",
            f"fanfold {f:.2f} ms, deepagents {d:.2f} ms",
            f / d,
            "<= 0.25x",
            f / d <= 0.25,
        )
    f, d = data["memory"]["fanfold"], data["memory"]["deepagents"]
    ratio = f["kb_per_subagent"] / d["kb_per_subagent"]
    add(
        "P2",
        "peak RSS per in-flight subagent vs deepagents, growth from N to 2N at once, N="
        + (f"{f['n']}" if f["n"] == d["n"] else f"{f['n']} / {d['n']}"),
        f"fanfold {f['kb_per_subagent']:.0f} KB, deepagents {d['kb_per_subagent']:.0f} KB",
        ratio,
        "<= 0.25x",
        ratio <= 0.25,
    )
    item = data["failing_item"]
    n = data["fail_n"]
    pairs = [
        ("P3a", "raise", "defaults", "defaults", f"item {item}'s tool raises (both defaults)"),
        (
            "P3b",
            "raise",
            "defaults",
            "ToolErrorMiddleware",
            f"item {item}'s tool raises (deepagents + ToolErrorMiddleware)",
        ),
        (
            "P4a",
            "hang",
            "task_timeout",
            "no timeout",
            f"item {item}'s tool hangs (deepagents: no timeout)",
        ),
        (
            "P4b",
            "hang",
            "task_timeout",
            "step_timeout",
            f"item {item}'s tool hangs (deepagents + LangGraph step_timeout)",
        ),
        (
            "P4c",
            "stubborn",
            "task_timeout",
            "step_timeout",
            f"item {item}'s tool hangs, ignoring cancellation (step_timeout)",
        ),
    ]
    for tid, fault, f_set, d_set, what in pairs:
        fr, dr = _fail(data, "fanfold", fault, f_set), _fail(data, "deepagents", fault, d_set)
        fs, ds = _score(fr), _score(dr)
        better = all(a >= b for a, b in zip(fs, ds, strict=True)) and fs != ds
        add(
            tid,
            f"{what}, N={n}",
            f"fanfold: {_describe(fr)}; deepagents: {_describe(dr)}",
            f"{fr['kept']} vs {dr['kept']} kept" + ("" if fs != ds else " (equal)"),
            "fanfold better",
            better,
        )
    for tid, limited in (("P5a", True), ("P5b", False)):
        fe, de = _eff(data, "fanfold", limited), _eff(data, "deepagents", limited)
        limit = f"mc={fe['mc']}" if limited else "no limit"
        add(
            tid,
            f"parallel efficiency vs deepagents, N={fe['n']} {limit}, "
            f"{fe['latency_s'] * 1e3:.0f} ms per call",
            f"fanfold {fe['efficiency']:.2f}, deepagents {de['efficiency']:.2f}",
            fe["efficiency"] / de["efficiency"],
            ">= 1x",
            fe["efficiency"] >= de["efficiency"],
        )
    return out


CPU_COLS = ["N", "mc", "fanfold ms", "deepagents ms", "fanfold/deepagents", "GC fanfold ms"]
CPU_COLS += ["GC deepagents ms"]
MEM_COLS = ["implementation", "in flight", "KB/subagent", "RSS peak at N MB", "RSS peak at 2N MB"]
EFF_COLS = ["N", "limit", "ideal s", "fanfold wall s", "deepagents wall s", "fanfold eff"]
EFF_COLS += ["deepagents eff", "fanfold/deepagents", "peak in flight (f/d)"]
FAIL_COLS = ["fault", "implementation", "settings", "ended by itself", "s", "caller got"]
FAIL_COLS += ["others kept", "failed item", "timed out", "subagents answered", "streamed"]


def _failed_item(row: dict[str, Any]) -> str:
    f = row["failed_item"]
    if not f["result"]:
        return "no result"
    if "status" in f:
        text = f["status"] + (f" ({f['error']})" if f["error"] else "")
        return text + (f", {f['tool_errors']} tool errors" if f["tool_errors"] else "")
    return "error text as its result" if "Error" in f["output"] else "a result"


def report(data: dict[str, Any]) -> str:
    """Return the peer tables (targets first) as Markdown."""
    from run import table, targets_table

    v = data["versions"]
    head = ", ".join(f"{k} {val}" for k, val in v.items())
    cpu_rows = []
    for n in data["cpu_sizes"]:
        f, d = _cpu(data, "fanfold", n), _cpu(data, "deepagents", n)
        cpu_rows.append(
            [n, f["mc"], f["cpu_ms"], d["cpu_ms"], f["cpu_ms"] / d["cpu_ms"]]
            + [f["gc_ms"], d["gc_ms"]]
        )
    mem_rows = [
        [
            i,
            f"{m['n']} -> {m['peak']}",
            m["kb_per_subagent"],
            m["rss_before_kb"] / 1024,
            m["rss_peak_kb"] / 1024,
        ]
        for i, m in data["memory"].items()
    ]
    eff_rows = []
    for limited in (True, False):
        f, d = _eff(data, "fanfold", limited), _eff(data, "deepagents", limited)
        limit = f"mc={f['mc']}" if limited else "none (fanfold mc=N, deepagents no max_concurrency)"
        eff_rows.append(
            [f["n"], limit, f["ideal_s"], f["wall_s"], d["wall_s"], f["efficiency"]]
            + [d["efficiency"], f["efficiency"] / d["efficiency"], f"{f['peak']}/{d['peak']}"]
        )
    fail_rows = [
        [r["fault"], r["impl"], r["settings"], "yes" if r["ended"] else "no: hung until the cap"]
        + [r["seconds"], r["caller_got"], f"{r['kept']}/{r['n'] - 1}", _failed_item(r)]
        + ["yes" if r["timed_out"] else "no", r["finished"], r["streamed"]]
        for r in data["failures"]
    ]
    return "\n".join(
        [
            f"Peer: Fanfold vs deepagents ({data['plan']} run); {head}",
            "",
            targets_table(targets(data)),
            "",
            f"CPU per subagent at zero latency (ms, process_time, best of {BEST_OF} at N <= 100)",
            "",
            table(CPU_COLS, cpu_rows),
            "",
            "Peak RSS per in-flight subagent (ru_maxrss growth from N to 2N in flight at"
            " once, / N)",
            "",
            table(MEM_COLS, mem_rows),
            "",
            f"Wall and parallel efficiency ({data['latency'] * 1e3:.0f} ms per call; ideal ="
            " ceil(N/mc) x 3 x latency, / wall)",
            "",
            table(EFF_COLS, eff_rows),
            "",
            f"One failing subagent (item {data['failing_item']} of N={data['fail_n']},"
            f" mc={data['fail_mc']}, {data['fail_latency'] * 1e3:.0f} ms per call; the bench"
            f" waits at most {data['cap_s']:g} s; streamed: deepagents `task` results seen in"
            " the update stream)",
            "",
            table(FAIL_COLS, fail_rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the peer benchmark (or one child's share of it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under 30 s")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))), flush=True)
        os._exit(0)  # a stubborn tool's task may still be waiting: do not wait for it
    from run import document, machine, stopwatch

    mode = "quick" if args.quick else "full"
    started, say = stopwatch()
    info = machine()
    data = collect(mode, say)
    doc = document(mode, info, started, targets(data), data)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        m = info
        print(
            f"{m['date']}: {m['nproc']} cores, Python {m['python']}, git {m['git']}; load"
            f" {m['load_before']} before, {doc['load_after']} after; took"
            f" {doc['elapsed_s']:.0f} s\n"
        )
        print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
