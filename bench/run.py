"""Run the benchmarks and print a table of figures, ratios and targets.

    python bench/run.py --quick     # under 2 minutes
    python bench/run.py             # the full run, under 15 minutes
    python bench/run.py --json      # the same figures as one JSON document

The same fake work runs three ways: raw asyncio, bare LangGraph, Fanfold. Every
implementation runs in child processes of its own (memory: one per cell), so
heaps and caches never leak from one into another. Figures are ratios within
one run; absolute times depend on the machine and on what else it is doing.
Target 6 (real HTTP) is `http_bench.py`: a local OpenAI-compatible server in a
process of its own, and raw httpx, ChatOpenAI and Fanfold as its clients.
Target 4d (checkpoint bytes on PostgreSQL) runs only when
FANFOLD_BENCH_POSTGRES_URL names a server (`postgresql://user@host:port/db`);
the bench never starts one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import http_bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PLANS: dict[str, dict[str, Any]] = {
    "quick": {
        "latency": 0.05,
        "best_of": 1,
        "eff_sizes": [200],
        "mcs": [10, 100],
        "cpu_sizes": [100, 1000],
        "cpu_mc": 10,
        "cpu_small_only": ["bare"],
        "mem_n": 200,
        "ckpt_n": 100,
        "ckpt_mc": 20,
        "ckpt_impls": ["fanfold"],
        "ckpt_bytes_sizes": [100, 400],
        "ckpt_bytes_mc": 50,
        "ckpt_bytes_best_of": 1,
        "dag_n": 200,
        "dag_median_call_s": 0.01,
        "skew_mc": 10,
        "http_n": 300,
        "http_impls": ["httpx2", "chatopenai", "fanfold"],
        "http_best_of": 1,
        "http_warmup": 50,
    },
    "full": {
        "latency": 0.05,
        "best_of": 2,
        "eff_sizes": [100, 1000, 5000],
        "mcs": [10, 100],
        "cpu_sizes": [100, 10_000],
        "cpu_mc": 10,
        # Bare LangGraph at N=10,000 alone takes ~3 minutes (60% of it in the garbage
        # collector); without it the full run fits in 15 minutes.
        "cpu_small_only": ["bare"],
        "mem_n": 1000,
        "ckpt_n": 500,
        "ckpt_mc": 50,
        "ckpt_impls": ["fanfold", "bare"],
        "ckpt_bytes_sizes": [250, 2000],
        "ckpt_bytes_mc": 50,
        "ckpt_bytes_best_of": 2,
        "dag_n": 200,
        "dag_median_call_s": 0.05,
        "skew_mc": 10,
        "http_n": 1000,
        "http_impls": list(http_bench.QUICK_IMPLS),
        "http_best_of": 2,
        "http_warmup": 100,
    },
}
HTTP_MC = 50
HTTP_LATENCY_S = 0.02
MEMORY_CELLS = [
    ("raw", "none"),
    ("bare", "none"),
    ("fanfold", "none"),
    ("fanfold", "sqlite"),
]
CHECKPOINTERS = {
    "fanfold": ["none", "memory", "sqlite", "sqlite-step"],
    "bare": ["none", "sqlite-step", "sqlite-task"],
}
POSTGRES_URL_ENV = "FANFOLD_BENCH_POSTGRES_URL"
SECTIONS = {
    "peer": ("peer", "collect", "targets", "report"),
    "stall": ("stall", "collect", "targets", "report"),
    "temporal": ("temporal_bench", "section", "targets", "section_report"),
}
"""Sections of their own module: `deepagents` as the peer, the first failure's loop
stall, Fanfold on Temporal. Each: (module, collect(mode, say), targets(data),
report(data))."""
NEEDS = {"peer": ("deepagents", "the bench extra: pip install -e '.[bench]'")}
NEEDS["temporal"] = ("temporalio", "the temporal extra: pip install -e '.[dev]'")
"""What a section needs installed, and how to install it."""
QUICK_SKIPS = ("temporal",)
"""Left out of `--quick` (it must stay under 2 minutes): `temporal_bench.py --quick`."""
# Goals (issue 16 raised them from issue 6's 0.95x / 2x / 60 KB / 1.1x / raw httpx).
EFFICIENCY_GOALS = (0.95, 0.9)
"""Parallel efficiency against raw asyncio at the plan's two `mcs` (10 and 100)."""
CPU_GOAL = 1.5
"""CPU per subagent against raw asyncio, zero latency."""
RSS_GOAL_KB = 40
"""Peak RSS per in-flight subagent."""
DAG_GOAL = 1.05
"""DAG makespan against its critical path."""
HTTP_GOAL = 0.9
"""Real-HTTP throughput against bare ChatOpenAI."""


def checkpoint_backends() -> list[str]:
    """Return the backends for checkpoint bytes: SQLite, and PostgreSQL when a URL is set."""
    return ["sqlite", "postgres"] if os.environ.get(POSTGRES_URL_ENV) else ["sqlite"]


@contextlib.contextmanager
def bench_postgres(say: Any, start: bool = True) -> Iterator[str]:
    """Set $FANFOLD_BENCH_POSTGRES_URL for the children; yield where its server is.

    A URL already set is used as it is. Otherwise, unless `start` is false, a
    throwaway server is started as the tests start one (`tests/postgres.py`:
    initdb in a temporary directory, 127.0.0.1, a free port), but with fsync on,
    as a real server runs; it is stopped, and its directory removed, on exit. When
    none can be started, target 4d reads n/a and the reason is printed.
    """
    if os.environ.get(POSTGRES_URL_ENV):
        yield "the server at $" + POSTGRES_URL_ENV
        return
    if not start:
        yield "n/a: --no-postgres"
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres import PostgresUnavailable, TempPostgres

    server = None
    try:
        server = TempPostgres(fsync=True)
        url = server.start()
    except PostgresUnavailable as exc:
        if server is not None:
            server.stop()
        say(f"PostgreSQL: none started ({exc}); 4d is n/a")
        yield f"n/a: {exc}"
        return
    say(f"PostgreSQL: a throwaway server at {url} (fsync on)")
    os.environ[POSTGRES_URL_ENV] = url
    try:
        yield "a throwaway local server started by the bench (fsync on)"
    finally:
        del os.environ[POSTGRES_URL_ENV]
        server.stop()


def section(name: str) -> tuple[Any, Any, Any]:
    """Return a section's collect, targets and report functions."""
    module, *functions = SECTIONS[name]
    mod = importlib.import_module(module)
    collect_, targets_, report_ = (getattr(mod, f) for f in functions)
    return collect_, targets_, report_


def start_child(payload: Any, script: str = __file__) -> subprocess.Popen[str]:
    """Start measurements in a fresh interpreter: `script --child <payload as JSON>`."""
    cmd = [sys.executable, str(Path(script).resolve()), "--child", json.dumps(payload)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def child_result(proc: subprocess.Popen[str], timeout_s: float | None = None) -> Any:
    """Wait for a child (killed past `timeout_s`); return its data, or fail with its output."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        msg = f"child {proc.args[-1]} ran over {timeout_s} s:\n{err[-4000:]}"
        raise RuntimeError(msg) from None
    if proc.returncode != 0:
        msg = f"child {proc.args[-1]} failed:\n{out[-2000:]}\n{err[-4000:]}"
        raise RuntimeError(msg)
    return json.loads(out.strip().splitlines()[-1])


def collect(plan: dict[str, Any], say: Any) -> dict[str, Any]:
    """Run every measurement of a plan; return the raw figures by section."""
    data: dict[str, Any] = {
        "efficiency": {},
        "cpu": {},
        "memory": [],
        "checkpoint": {},
        "checkpoint_bytes": {},
        "dag": {},
        "skew": {},
    }
    for impl in ("raw", "bare", "fanfold"):
        specs: list[dict[str, Any]] = [
            {
                "kind": "cpu",
                "impl": impl,
                "sizes": plan["cpu_sizes"][:1]
                if impl in plan["cpu_small_only"]
                else plan["cpu_sizes"],
                "mc": plan["cpu_mc"],
                "best_of": 3,
            },
            {
                "kind": "efficiency",
                "impl": impl,
                "sizes": plan["eff_sizes"],
                "mcs": plan["mcs"],
                "latency": plan["latency"],
                "best_of": plan["best_of"],
            },
        ]
        if impl in plan["ckpt_impls"]:
            specs.append(
                {
                    "kind": "checkpoint",
                    "impl": impl,
                    "n": plan["ckpt_n"],
                    "mc": plan["ckpt_mc"],
                    "latency": 0.0,
                    "checkpointers": CHECKPOINTERS[impl],
                    "best_of": 2,
                }
            )
        if impl == "fanfold":
            specs.append(
                {
                    "kind": "checkpoint_bytes",
                    "impl": impl,
                    "sizes": plan["ckpt_bytes_sizes"],
                    "mc": plan["ckpt_bytes_mc"],
                    "backends": checkpoint_backends(),
                    "best_of": plan["ckpt_bytes_best_of"],
                }
            )
        specs.append(
            {
                "kind": "dag",
                "impl": impl,
                "n": plan["dag_n"],
                "median_call_s": plan["dag_median_call_s"],
                "mc": plan["dag_n"],
            }
        )
        specs.append(
            {
                "kind": "skew",
                "impl": impl,
                "n": plan["dag_n"],
                "mc": plan["skew_mc"],
                "median_call_s": plan["dag_median_call_s"],
            }
        )
        say(f"{impl}: {', '.join(s['kind'] for s in specs)}")
        t0 = time.perf_counter()
        for spec, out in zip(specs, child_result(start_child(specs)), strict=True):
            data[spec["kind"]][impl] = out
        say(f"{impl}: done in {time.perf_counter() - t0:.0f}s")
    # Memory cells run side by side: each has a process of its own, and peak RSS
    # does not depend on how fast it gets there.
    say(f"memory: {len(MEMORY_CELLS)} cells, {plan['mem_n']} subagents in flight each")
    procs = [
        start_child([{"kind": "memory", "impl": i, "n": plan["mem_n"], "checkpointer": c}])
        for i, c in MEMORY_CELLS
    ]
    data["memory"] = [child_result(p)[0] for p in procs]
    # Real HTTP: a local server process, then one child per client, one at a time.
    t0 = time.perf_counter()
    data["http"] = http_bench.measure(
        n=plan["http_n"],
        mc=HTTP_MC,
        latency=HTTP_LATENCY_S,
        best_of=plan["http_best_of"],
        warmup=plan["http_warmup"],
        impls=tuple(plan["http_impls"]),
        say=say,
    )
    say(f"http: done in {time.perf_counter() - t0:.0f}s")
    return data


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    msg = f"no row {match}"
    raise KeyError(msg)


def targets(data: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each target with its measured figure and PASS/MISS."""
    out: list[dict[str, Any]] = []

    def add(tid: str, what: str, detail: str, value: float | None, goal: str, ok: bool | None):
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        out.append(
            {"id": tid, "target": what, "detail": detail, "value": value, "goal": goal,
             "verdict": verdict}
        )  # fmt: skip

    eff, n_max = data["efficiency"], max(plan["eff_sizes"])
    for i, mc in enumerate(plan["mcs"]):
        f = _row(eff["fanfold"], n=n_max, mc=mc)["efficiency"]
        r = _row(eff["raw"], n=n_max, mc=mc)["efficiency"]
        goal = EFFICIENCY_GOALS[i]
        add(
            f"1{'ab'[i]}",
            f"parallel efficiency vs raw asyncio, N={n_max} mc={mc}",
            f"fanfold {f:.2f}, raw {r:.2f}",
            f / r,
            f">= {goal}x",
            f / r >= goal,
        )
    cpu = data["cpu"]
    small, large = plan["cpu_sizes"]
    for tid, n in (("2a", small), ("2b", large)):
        f = _row(cpu["fanfold"], n=n)["cpu_ms"]
        r = _row(cpu["raw"], n=n)["cpu_ms"]
        add(
            tid,
            f"CPU per subagent vs raw asyncio, N={n}, zero latency",
            f"fanfold {f:.2f} ms, raw {r:.2f} ms",
            f / r,
            f"<= {CPU_GOAL}x",
            f / r <= CPU_GOAL,
        )
    f_small = _row(cpu["fanfold"], n=small)["cpu_ms"]
    f_large = _row(cpu["fanfold"], n=large)["cpu_ms"]
    add(
        "2c",
        f"CPU per subagent flat in N: N={large} / N={small}",
        f"fanfold {f_large:.2f} ms / {f_small:.2f} ms",
        f_large / f_small,
        "<= 1.3x",
        f_large / f_small <= 1.3,
    )
    for tid, checkpointer in (("3a", "none"), ("3b", "sqlite")):
        m = _row(data["memory"], impl="fanfold", checkpointer=checkpointer)
        kb = m["kb_per_subagent"]
        add(
            tid,
            f"peak RSS per in-flight subagent, {m['n']} -> {2 * m['n']} at once, checkpointer "
            f"{checkpointer}",
            f"fanfold {kb:.0f} KB",
            kb,
            f"<= {RSS_GOAL_KB} KB",
            kb <= RSS_GOAL_KB,
        )
    ck = data["checkpoint"]["fanfold"]
    sq = _row(ck, checkpointer="sqlite")
    # 4a: the same run with its checkpoints in memory (InMemorySaver): the same
    # scheduling (windows of mc), so the ratio is what SQLite costs. 4b: against no
    # checkpointer at all, which also schedules differently (wide windows, eager).
    for tid, base, label, goal in (
        ("4a", "memory", "InMemorySaver", 1.3),
        ("4b", "none", "no checkpointer", 1.5),
    ):
        ref = _row(ck, checkpointer=base)
        add(
            tid,
            f"SQLite-checkpointed run vs {label} (wall), N={plan['ckpt_n']}, zero latency",
            f"{sq['wall_s']:.2f} s / {ref['wall_s']:.2f} s",
            sq["wall_s"] / ref["wall_s"],
            f"<= {goal}x",
            sq["wall_s"] / ref["wall_s"] <= goal,
        )
    cb = data["checkpoint_bytes"]["fanfold"]
    lo, hi = min(plan["ckpt_bytes_sizes"]), max(plan["ckpt_bytes_sizes"])
    cb_mc = plan["ckpt_bytes_mc"]
    for tid, backend, label in (("4c", "sqlite", "SQLite"), ("4d", "postgres", "PostgreSQL")):
        what = f"{label} checkpoint bytes per task flat in N: N={hi} / N={lo}, mc={cb_mc}"
        if not any(r["backend"] == backend for r in cb):
            add(tid, what, f"not run: {data.get('postgres', 'no server')}", None, "<= 1.3x", None)
            continue
        b_small = _row(cb, backend=backend, n=lo)["bytes_per_task"]
        b_large = _row(cb, backend=backend, n=hi)["bytes_per_task"]
        add(
            tid,
            what,
            f"{b_large / 1024:.2f} KB / {b_small / 1024:.2f} KB",
            b_large / b_small,
            "<= 1.3x",
            b_large / b_small <= 1.3,
        )
    sq_wall = _row(cb, backend="sqlite", n=hi)["wall_s"]
    mem_wall = _row(cb, backend="memory", n=hi)["wall_s"]
    add(
        "4e",
        f"SQLite-checkpointed run vs InMemorySaver (wall), N={hi}, mc={cb_mc}, zero latency",
        f"{sq_wall:.2f} s / {mem_wall:.2f} s",
        sq_wall / mem_wall,
        "<= 1.3x",
        sq_wall / mem_wall <= 1.3,
    )
    d = data["dag"]["fanfold"]
    add(
        "5",
        f"DAG makespan vs critical path, {d['n']} tasks, log-normal times",
        f"{d['wall_s']:.2f} s / {d['critical_path_s']:.2f} s",
        d["wall_s"] / d["critical_path_s"],
        f"<= {DAG_GOAL}x",
        d["wall_s"] / d["critical_path_s"] <= DAG_GOAL,
    )
    http = data["http"]
    f, limit = http["rows"]["fanfold"], http["ratios"]["connection_limit"]
    opened = max(f["all_connections_opened"])
    add(
        "6a",
        f"TCP connections opened, {http['n']} calls mc={http['mc']} (<= mc+2 = {limit})",
        f"fanfold {'/'.join(map(str, f['all_connections_opened']))} opened, peak open "
        f"{max(f['all_peak_open'])}",
        opened,
        f"<= {limit}",
        opened <= limit,
    )
    # 6b (issue 16): against bare ChatOpenAI, the client Fanfold drives: what Fanfold
    # adds over it is what Fanfold controls. The raw clients are printed for scale.
    bare = http["rows"]["chatopenai"]
    ratio = f["calls_per_s"] / bare["calls_per_s"]
    raws = ", ".join(
        f"{k} {http['rows'][k]['calls_per_s']:.0f}/s"
        for k in http_bench.RAW_IMPLS
        if k in http["rows"]
    )
    add(
        "6b",
        f"throughput vs bare ChatOpenAI, {http['n']} calls mc={http['mc']}",
        f"fanfold {f['calls_per_s']:.0f}/s, ChatOpenAI {bare['calls_per_s']:.0f}/s"
        + (f" (raw {raws})" if raws else ""),
        ratio,
        f">= {HTTP_GOAL}x",
        ratio >= HTTP_GOAL,
    )
    return out


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Return a Markdown table."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(items: list[str]) -> str:
        return "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def targets_table(targets: list[dict[str, Any]]) -> str:
    """Return the targets as a Markdown table, each figure next to its goal and verdict."""
    rows = [
        [t["id"], t["target"], t["detail"], t["value"], t["goal"], t["verdict"]] for t in targets
    ]
    return table(["#", "target", "measured", "ratio / value", "goal", "verdict"], rows)


def stopwatch() -> tuple[float, Callable[[str], None]]:
    """Return when a bench started and a `say` that prints progress with the seconds since."""
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {text}", file=sys.stderr, flush=True)

    return started, say


def document(
    mode: str,
    info: dict[str, Any],
    started: float,
    targets: list[dict[str, Any]],
    data: Any,
    **extra: Any,
) -> dict[str, Any]:
    """Return a bench's JSON document: where and when, how long, the targets, the figures."""
    return {
        "mode": mode,
        "machine": info,
        **extra,
        "elapsed_s": time.perf_counter() - started,
        "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "targets": targets,
        "data": data,
    }  # fmt: skip


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


EFF_COLS = ["N", "mc", "ideal s", "raw", "bare LG", "fanfold", "bare/raw", "fanfold/raw"]
CPU_COLS = ["N", "raw", "bare LG", "fanfold", "bare/raw", "fanfold/raw", "GC raw", "GC bare"]
CPU_COLS += ["GC fanfold"]
MEM_COLS = ["implementation", "checkpointer", "in flight", "KB/subagent", "RSS peak at N MB"]
MEM_COLS += ["RSS peak at 2N MB"]
CK_COLS = ["implementation", "checkpointer", "granularity", "wall s", "CPU s", "wall vs none"]
CK_COLS += ["checkpoints/agent", "writes/agent", "stored KB/agent"]
CB_COLS = ["backend", "N", "wall s", "wall vs memory", "checkpoints", "writes", "stored KB"]
CB_COLS += ["KB/task", "KB/task vs smallest N"]
DAG_COLS = ["critical path s", "wave bound s", "raw", "bare LG (functional API)", "fanfold"]
DAG_COLS += ["raw/CP", "bare/CP", "fanfold/CP", "fanfold/wave bound"]
IMPL_ORDER = ("raw", "bare", "fanfold")


def efficiency_rows(data: dict[str, Any], plan: dict[str, Any]) -> list[list[Any]]:
    """Return the efficiency table: one row per (N, mc), the three implementations side by side."""
    rows = []
    for n in plan["eff_sizes"]:
        for mc in plan["mcs"]:
            e = {i: _row(data["efficiency"][i], n=n, mc=mc)["efficiency"] for i in IMPL_ORDER}
            ideal = _row(data["efficiency"]["raw"], n=n, mc=mc)["ideal_s"]
            rows.append([n, mc, ideal, *e.values(), e["bare"] / e["raw"], e["fanfold"] / e["raw"]])
    return rows


def cpu_rows(data: dict[str, Any], plan: dict[str, Any]) -> list[list[Any]]:
    """Return the CPU table: ms per subagent, ratios to raw, GC ms; then the flatness row."""
    by = {i: {r["n"]: r for r in data["cpu"][i]} for i in IMPL_ORDER}

    def ms(impl: str, n: int, key: str = "cpu_ms") -> float | None:
        row = by[impl].get(n)
        return None if row is None else row[key]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a / b

    rows: list[list[Any]] = []
    for n in plan["cpu_sizes"]:
        cpu = [ms(i, n) for i in IMPL_ORDER]
        gc_ms = [ms(i, n, "gc_ms") for i in IMPL_ORDER]
        rows.append([n, *cpu, ratio(cpu[1], cpu[0]), ratio(cpu[2], cpu[0]), *gc_ms])
    small, large = plan["cpu_sizes"]
    flat = [ratio(ms(i, large), ms(i, small)) for i in IMPL_ORDER]
    rows.append([f"{large}/{small}", *flat, None, None, None, None, None])
    return rows


def memory_rows(data: dict[str, Any]) -> list[list[Any]]:
    """Return the memory table, one row per child process."""
    return [
        [r["impl"], r["checkpointer"], f"{r['n']} -> {r['peak']}", r["kb_per_subagent"]]
        + [r["rss_before_kb"] / 1024, r["rss_peak_kb"] / 1024]
        for r in data["memory"]
    ]


def checkpoint_rows(data: dict[str, Any]) -> list[list[Any]]:
    """Return the checkpointer table: cost against no checkpointer, and what was stored."""
    rows = []
    for impl, ck_rows in data["checkpoint"].items():
        base = _row(ck_rows, checkpointer="none")["wall_s"]
        for r in ck_rows:
            per = r["per_subagent"]
            kb = per["bytes"] / 1024 if "bytes" in per else None
            rows.append(
                [impl, r["checkpointer"], r["granularity"], r["wall_s"], r["cpu_s"]]
                + [r["wall_s"] / base, per.get("checkpoints"), per.get("writes"), kb]
            )
    return rows


def checkpoint_bytes_heading(data: dict[str, Any], plan: dict[str, Any]) -> str:
    """Return the checkpoint-bytes section's heading: sizes, backends, how walls were taken."""
    cb = data["checkpoint_bytes"]["fanfold"]
    pg = data.get("postgres", "n/a: none could be started, and no $" + POSTGRES_URL_ENV)
    runs = cb[0]["runs"]
    return (
        f"## Checkpoint bytes per task (Fanfold, N independent tasks, mc={plan['ckpt_bytes_mc']},"
        f" zero latency; at each N the backends and InMemorySaver (memory) take turns, best"
        f" of {runs} wall each; PostgreSQL: {pg})"
    )


def checkpoint_bytes_rows(data: dict[str, Any]) -> list[list[Any]]:
    """Return the checkpoint-bytes table: per backend and N, wall time and what was stored."""
    cb = data["checkpoint_bytes"]["fanfold"]
    memory = {r["n"]: r["wall_s"] for r in cb if r["backend"] == "memory"}
    smallest = {
        r["backend"]: r["bytes_per_task"]
        for r in sorted(cb, key=lambda r: -r["n"])
        if r["bytes_per_task"] is not None
    }
    rows = []
    for r in cb:
        per = r["bytes_per_task"]
        mem = memory.get(r["n"])
        rows.append(
            [r["backend"], r["n"], r["wall_s"], None if mem is None else r["wall_s"] / mem]
            + [r.get("checkpoints"), r.get("writes")]
            + [None if r["bytes"] is None else r["bytes"] / 1024]
            + [None if per is None else per / 1024]
            + [None if per is None else per / smallest[r["backend"]]]
        )
    return rows


def dag_rows(data: dict[str, Any]) -> list[list[Any]]:
    """Return the DAG table: both bounds, the three makespans (s) and their ratios."""
    wall = {i: data["dag"][i]["wall_s"] for i in IMPL_ORDER}
    f = data["dag"]["fanfold"]
    cp, wave = f["critical_path_s"], f["wave_bound_s"]
    ratios = [wall[i] / cp for i in IMPL_ORDER] + [wall["fanfold"] / wave]
    return [[cp, wave, *wall.values(), *ratios]]


SKEW_COLS = ["bound s", "raw", "bare LG", "fanfold", "raw/bound", "bare/bound", "fanfold/bound"]
SKEW_COLS += ["fanfold/raw"]


def skew_rows(data: dict[str, Any]) -> list[list[Any]]:
    """Return the skewed-latency table: the bound, three makespans (s) and ratios."""
    wall = {i: data["skew"][i]["wall_s"] for i in IMPL_ORDER}
    bound = data["skew"]["raw"]["bound_s"]
    ratios = [wall[i] / bound for i in IMPL_ORDER] + [wall["fanfold"] / wall["raw"]]
    return [[bound, *wall.values(), *ratios]]


def report(doc: dict[str, Any]) -> str:
    """Return the human-readable report: targets first, then each section's figures."""
    data, plan, m = doc["data"], doc["plan"], doc["machine"]
    d = data["dag"]["fanfold"]
    return "\n".join(
        [
            f"Fanfold benchmarks ({doc['mode']} run), {m['date']}: {m['nproc']} cores, "
            f"Python {m['python']}, langgraph {m['langgraph']}, langchain-core "
            f"{m['langchain_core']}, git {m['git']}; load average {m['load_before']} before, "
            f"{doc['load_after']} after; took {doc['elapsed_s']:.0f} s",
            "",
            "## Targets",
            "",
            targets_table(doc["targets"]),
            "",
            f"## Parallel efficiency (ideal = ceil(N/mc) x 3 calls x {plan['latency'] * 1e3:.0f}"
            " ms, / wall)",
            "",
            table(EFF_COLS, efficiency_rows(data, plan)),
            "",
            f"## CPU per subagent at zero latency (ms, process_time; mc={plan['cpu_mc']})",
            "",
            table(CPU_COLS, cpu_rows(data, plan)),
            "",
            "## Peak RSS per in-flight subagent (ru_maxrss growth from N to 2N in flight at once,"
            " / N; `in flight`: N)",
            "",
            table(MEM_COLS, memory_rows(data)),
            "",
            f"## Checkpointers (N={plan['ckpt_n']}, mc={plan['ckpt_mc']}, zero latency)",
            "",
            table(CK_COLS, checkpoint_rows(data)),
            "",
            checkpoint_bytes_heading(data, plan),
            "",
            table(CB_COLS, checkpoint_bytes_rows(data)),
            "",
            f"## DAG makespan ({d['n']} tasks, {d['depth']} generations, log-normal task"
            f" times, mc={d['mc']})",
            "",
            table(DAG_COLS, dag_rows(data)),
            "",
            f"## Independent tasks with the same log-normal times (not a target; {d['n']} tasks,"
            f" mc={plan['skew_mc']}; bound = max(total task time / mc, longest task))",
            "",
            table(SKEW_COLS, skew_rows(data)),
            "",
            f"## Real HTTP ({data['http']['n']} calls, mc={data['http']['mc']}, server latency"
            f" {data['http']['latency_s'] * 1e3:.0f} ms, best of {data['http']['best_of']};"
            " connections: per run; vs best raw: calls/s against the faster raw client)",
            "",
            table(http_bench.COLS, http_bench.table_rows(data["http"])),
            "",
            f"Fanfold settings: {data['http']['rows']['fanfold']['settings']}",
            *("\n" + section(name)[2](d) for name, d in data.get("sections", {}).items()),
            "",
            "Sections not run: "
            + (", ".join(f"{k} ({v})" for k, v in data.get("not_run", {}).items()) or "none"),
        ]
    )


def machine() -> dict[str, Any]:
    """Describe where and on what the figures were taken."""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    dirty = bool(git("status", "--porcelain", "--", "graphs", "nodes", "tools"))
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "langgraph": version("langgraph"),
        "langchain_core": version("langchain-core"),
        "langgraph_checkpoint_sqlite": version("langgraph-checkpoint-sqlite"),
        "langgraph_checkpoint_postgres": version("langgraph-checkpoint-postgres"),
        "git": git("rev-parse", "--short", "HEAD") + ("+dirty library" if dirty else ""),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the benchmarks (or one child's share of them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under 2 minutes")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--no-postgres",
        action="store_true",
        help=f"start no throwaway PostgreSQL for target 4d when ${POSTGRES_URL_ENV} is unset",
    )
    parser.add_argument(
        "--skip",
        default=None,
        help=f"comma-separated sections to leave out: {', '.join(SECTIONS)} (--quick: "
        f"{', '.join(QUICK_SKIPS)})",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import measure

        print(json.dumps([measure.run_child(spec) for spec in json.loads(args.child)]))
        return 0
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    started, say = stopwatch()
    info = machine()
    skips = QUICK_SKIPS if args.quick and args.skip is None else (args.skip or "").split(",")
    unknown = [s for s in skips if s and s not in SECTIONS]
    if unknown:
        parser.error(f"--skip: unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}")
    with bench_postgres(say, start=not args.no_postgres) as postgres:
        data = collect(plan, say)
    data["postgres"] = postgres
    data["sections"], data["not_run"] = {}, {}
    for name in SECTIONS:
        if name in skips:
            data["not_run"][name] = "--skip" if args.skip is not None else "--quick"
            continue
        need = NEEDS.get(name)
        if need and importlib.util.find_spec(need[0]) is None:
            data["not_run"][name] = f"{need[0]} is not installed ({need[1]})"
            say(f"{name}: not run: {data['not_run'][name]}")
            continue
        t0 = time.perf_counter()
        say(f"{name}: start")
        data["sections"][name] = section(name)[0](mode, say)
        say(f"{name}: done in {time.perf_counter() - t0:.0f}s")
    found = targets(data, plan)
    found += [t for name, d in data["sections"].items() for t in section(name)[1](d)]
    doc = document(mode, info, started, found, data, plan=plan)
    print(json.dumps(doc, indent=2) if args.json else report(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
