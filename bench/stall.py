"""Target 7: the first failure of a process costs no loop stall.

    python bench/stall.py --quick      # ~20 s: forked processes, 3 per scenario
    python bench/stall.py              # ~2 min: a fresh interpreter each, 7 per scenario
    python bench/stall.py --json       # the same figures as one JSON document
    python bench/stall.py --control 5  # check the method: the first failure burns 5 ms more

Each process runs, after a warm-up run with no failure, the same run twice: N
subagents at mc on one event loop through `execute_tasks_parallel` (`settle`), the
fake model answering after a small latency, item 61 failing. Its failure in the
first run is the process's first; in the second, a later one at the same point of
the same run. Item 62 of the first run is the normal subagent they are compared
with. Scenarios: `tool` (the tool raises on its first call; the model gets the error
and answers), `model` (the model call raises after its latency: the task ends
`failed`), `timeout` (the model never answers that task: its `timeout_s` ends it
`timed_out`). `raw` runs the same fake model and tool in a hand-written loop on
plain asyncio, errors caught where Fanfold catches them: the control for what
LangChain and Python themselves cost.

Two clocks on the loop:

- loop steps: every callback the loop runs (`Handle._run`) is timed, wall clock and
  CPU time of the loop's thread; a step is how long the loop could run nothing else;
- loop lag: a task sleeps 1 ms again and again; lag = how late each wake-up is.

A failure's windows: `window_ms` from its cause (the raise; for a timeout, the
cancellation reaching the hung call) and `window_ms` up to its task's result being
seen (Fanfold's `task_finished` event; raw: the item's coroutine returning): a
timed-out task's result is made by LangGraph's error handler, which runs only after
the other tasks of its superstep. A failure's figures are the longest step and the
largest lag in its windows; the normal subagent's, the same at its matching moment
(its tool's first return, its first reply, its answer). Baseline: every window of
that width within the runs that overlaps none of them. Target 7 is on the longest
step's CPU time: the wall clock (lag) also moves with whatever else this shared
machine runs. Forked processes (`--quick`) start from a parent that imported
everything and ran the warm-up, and never failed; full runs start a fresh
interpreter each. Figures are medians over the processes.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fake import ITEM_RE, SYSTEM, TOOL_CALLS, TOOL_NAME, FakeChatModel, _reply, prompt
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PLANS: dict[str, dict[str, Any]] = {
    "quick": {
        "n": 100,
        "mc": 20,
        "latency": 0.005,
        "window_ms": 10.0,
        "runs": 3,
        "raw_runs": 2,
        "isolation": "fork",
        "scenarios": ["tool", "model", "timeout"],
        "raw_scenarios": ["tool", "model", "timeout"],
    },
    "full": {
        "n": 200,
        "mc": 20,
        "latency": 0.005,
        "window_ms": 10.0,
        "runs": 7,
        "raw_runs": 5,
        "isolation": "spawn",
        "scenarios": ["tool", "model", "timeout"],
        "raw_scenarios": ["tool", "model", "timeout"],
    },
}
FAILING, NORMAL = 61, 62
"""The item that fails in each of the two runs, and the normal one it is compared with."""
RUN_LABELS = ({FAILING: "first", NORMAL: "normal"}, {FAILING: "later"})
"""The marked items of the first run (the process's first failure) and of the second."""
WANT = {"tool": "ok", "model": "failed", "timeout": "timed_out"}
"""How a failing subagent's task ends in each scenario (a tool error goes to the model)."""
TIMEOUT_S = 0.1
"""A hung task's timeout (`timeout` scenario)."""
WARMUP_N = 20
CHILD_TIMEOUT_S = 300.0
GOAL_FLOOR_MS = 2.0
GOAL_RATIO = 2.0
"""Target 7: the first failure's longest loop step (CPU) <= max(GOAL_FLOOR_MS,
GOAL_RATIO x a later failure's)."""

STATE: dict[str, Any] = {"kind": "none", "labels": {}, "times": {}, "inject_ms": 0.0}
"""What the fakes read: the scenario, the marked items, where they note each marked
moment, the control's CPU burn."""


# --- the fakes ---------------------------------------------------------------------------


def _mark(item: int, moment: str = "") -> bool:
    """Note the moment a marked item reaches (its cause, or `moment`); say if it must fail."""
    label = STATE["labels"].get(item)
    if label is None:
        return False
    STATE["times"][label + moment] = time.perf_counter()
    if label == "first" and not moment and STATE["inject_ms"]:
        # --control: the first failure alone keeps the loop busy (as parsing source would).
        until = time.thread_time() + STATE["inject_ms"] / 1e3
        while time.thread_time() < until:
            pass
    return label != "normal"


def _failing(item: int) -> bool:
    return STATE["labels"].get(item) in ("first", "later")


class ScriptedModel(FakeChatModel):
    """`fake.FakeChatModel`'s conversation, failing the marked items as the scenario says."""

    async def _agenerate(
        self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        found = ITEM_RE.search(str(messages[1].content))
        if found is None:
            raise AssertionError("no item in the conversation")
        item, kind = int(found.group(1)), STATE["kind"]
        done = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
        if kind == "timeout" and _failing(item):
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                _mark(item)  # the deadline: the timeout's cancellation reached the call
                raise
        await asyncio.sleep(self.latency)
        if kind == "model" and not done and _mark(item):
            msg = f"the model failed on item {item}"
            raise ValueError(msg)
        if len(done) < TOOL_CALLS:
            step = len(done)
            call = {"name": TOOL_NAME, "args": {"item": item, "step": step},
                    "id": f"call-{item}-{step}", "type": "tool_call"}  # fmt: skip
            return _reply(AIMessage("", tool_calls=[call]))
        if kind == "timeout" and STATE["labels"].get(item) == "normal":
            _mark(item)  # a task ending normally
        return _reply(AIMessage(f"answer item-{item}: " + " ".join(done)))


@tool(TOOL_NAME)
async def lookup(item: int, step: int) -> str:
    """Look up the value of an item at a step."""
    if STATE["kind"] == "tool" and step == 0 and _mark(item):
        msg = f"the tool failed on item {item}"
        raise ValueError(msg)
    return f"v{item}.{step}"


# --- the runners -------------------------------------------------------------------------


async def run_fanfold(items: list[int], model: ScriptedModel, mc: int) -> dict[int, str]:
    """Run one subagent per item through `execute_tasks_parallel`; return statuses by item."""
    from fanfold_impl import task

    from fanfold import execute_tasks_parallel

    def on_event(event: Any) -> None:
        if event.get("fanfold") == "task_finished":
            _mark(int(event["task_id"][1:]), "_result")

    timeout = STATE["kind"] == "timeout"
    tasks = [
        task(i).model_copy(update={"timeout_s": TIMEOUT_S}) if timeout and _failing(i) else task(i)
        for i in items
    ]
    results = await execute_tasks_parallel(
        tasks, model=model, tools=[lookup], max_concurrency=mc, policy="settle", on_event=on_event
    )
    return {int(r.task_id[1:]): r.status for r in results}


async def run_raw(items: list[int], model: ScriptedModel, mc: int) -> dict[int, str]:
    """A hand-written ReAct loop per item under a semaphore; errors caught as Fanfold does."""
    bound = model.bind_tools([lookup])
    sem = asyncio.Semaphore(mc)

    async def call(c: Any) -> ToolMessage:
        try:
            out = await lookup.ainvoke(c["args"])
        except Exception as exc:  # noqa: BLE001 - as Fanfold: the model gets the error
            text = f"Error: `{c['name']}` failed: {type(exc).__name__}: {exc}"
            return ToolMessage(text, tool_call_id=c["id"] or "", name=c["name"], status="error")
        return ToolMessage(str(out), tool_call_id=c["id"] or "", name=c["name"])

    async def react(item: int) -> str:
        messages: list[Any] = [SystemMessage(SYSTEM), HumanMessage(prompt(item))]
        while True:
            try:
                reply = await bound.ainvoke(messages)
            except Exception:  # noqa: BLE001 - as Fanfold: the task fails
                return "failed"
            messages.append(reply)
            if not isinstance(reply, AIMessage) or not reply.tool_calls:
                return "ok"
            messages.extend(await asyncio.gather(*(call(c) for c in reply.tool_calls)))

    async def one(item: int) -> str:
        async with sem:
            if STATE["kind"] == "timeout" and _failing(item):
                try:
                    async with asyncio.timeout(TIMEOUT_S):
                        status = await react(item)
                except TimeoutError:
                    status = "timed_out"
            else:
                status = await react(item)
        _mark(item, "_result")
        return status

    outs = await asyncio.gather(*(one(i) for i in items))
    return dict(zip(items, outs, strict=True))


RUNNERS: dict[str, Callable[..., Any]] = {"fanfold": run_fanfold, "raw": run_raw}


# --- the clocks --------------------------------------------------------------------------


class Recorder:
    """Loop lag (a 1 ms sleeper), every loop step, and the garbage collector's passes."""

    def __init__(self) -> None:
        self.lags: list[tuple[float, float]] = []
        """(when a 1 ms sleep was due to end, how late it woke), perf_counter seconds."""
        self.steps: list[tuple[float, float]] = []
        """(when a loop callback started, how long it ran), wall clock."""
        self.cpu: list[tuple[float, float]] = []
        """(when a loop callback started, the CPU its thread used in it): what the loop
        itself did, whatever else the machine ran meanwhile."""
        self.gcs: list[tuple[float, float]] = []
        self.paused = False
        """Set between the runs: a wake-up late then was held up by no failure."""
        self.named: dict[float, str] = {}
        """What ran in each step longer than `NAMED_S`, by its start (`longest` in --json)."""
        self._orig: Callable[..., Any] | None = None
        self._gc_start = 0.0

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gcs.append((self._gc_start, time.perf_counter() - self._gc_start))

    def __enter__(self) -> Recorder:
        orig = asyncio.events.Handle._run
        steps, cpu, named = self.steps, self.cpu, self.named
        clock, thread_time = time.perf_counter, time.thread_time

        def timed_run(handle: asyncio.Handle) -> None:
            t0, c0 = clock(), thread_time()
            orig(handle)
            c, d = thread_time() - c0, clock() - t0
            steps.append((t0, d))
            cpu.append((t0, c))
            if d > NAMED_S:
                named[t0] = _what(handle)

        self._orig = orig
        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
        gc.callbacks.append(self._gc)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._orig  # type: ignore[method-assign]
        gc.callbacks.remove(self._gc)

    async def sleeper(self, stop: asyncio.Event) -> None:
        clock = time.perf_counter
        while not stop.is_set():
            due = clock() + 0.001
            await asyncio.sleep(0.001)
            if not self.paused:
                self.lags.append((due, clock() - due))


NAMED_S = 0.0005


def _what(handle: asyncio.Handle) -> str:
    """Name what a loop step ran: a task's coroutine and where it stands, or the callback."""
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        where = (
            f" at {frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}" if frame else ""
        )
        return f"task {getattr(coro, '__qualname__', coro)}{where}"
    return repr(handle)[:160]


def _longest(
    series: Sequence[tuple[float, float]], windows: Sequence[tuple[float, float]]
) -> float:
    """Return the longest entry (start, duration) overlapping any window, in ms (0 if none).

    `series` is in time order, its entries never overlap.
    """
    best = 0.0
    for lo, hi in windows:
        # The entry that overlaps lo began before it: start one entry before.
        i = max(bisect.bisect_left(series, (lo,)) - 1, 0)
        while i < len(series) and series[i][0] <= hi:
            t, d = series[i]
            if t + d >= lo:
                best = max(best, d)
            i += 1
    return 1e3 * best


def summarize(
    rec: Recorder, times: dict[str, float], spans: list[tuple[float, float]], window_s: float
) -> dict[str, Any]:
    """Return each marked subagent's figures, and the same over windows that overlap none."""
    out: dict[str, Any] = {}
    taken: list[tuple[float, float]] = []
    for label, (_, end) in (("first", spans[0]), ("later", spans[1]), ("normal", spans[0])):
        cause, seen = times[label], times[label + "_result"]
        # Within its run: what the process does between the runs is no failure's.
        windows = [(cause, min(cause + window_s, end)), (max(cause, seen - window_s), seen)]
        taken += windows
        out[label] = {
            "lag_ms": _longest(rec.lags, windows),
            "step_ms": _longest(rec.steps, windows),
            "cpu_ms": _longest(rec.cpu, windows),
            "gc_ms": 1e3
            * sum(d for g, d in rec.gcs for lo, hi in windows if g <= hi and g + d >= lo),
            "result_after_ms": (seen - cause) * 1e3,
            "longest": sorted(
                (
                    (round(d * 1e3, 3), rec.named.get(t, ""))
                    for t, d in rec.steps
                    if d > NAMED_S and any(t <= hi and t + d >= lo for lo, hi in windows)
                ),
                reverse=True,
            )[:4],
        }
    quiet: dict[str, list[float]] = {"lag_ms": [], "step_ms": [], "cpu_ms": []}
    series = {"lag_ms": rec.lags, "step_ms": rec.steps, "cpu_ms": rec.cpu}
    for start, end in spans:
        lo = start
        while lo + window_s <= end:
            hi = lo + window_s
            if not any(lo <= b and hi >= a for a, b in taken):
                for fig, values in quiet.items():
                    values.append(_longest(series[fig], [(lo, hi)]))
            lo = hi
    out["baseline"] = {"windows": len(quiet["lag_ms"])} | {k: _spread(v) for k, v in quiet.items()}
    return out


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values) or [0.0]
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
    }


# --- one run (in a process that has not failed yet) --------------------------------------


async def _warm_up(impl: str) -> None:
    """Run a few subagents with no failure: imports and caches are not the failure's."""
    STATE.update(kind="none", times={})
    model = ScriptedModel(latency=0.0)
    await RUNNERS[impl](list(range(1000, 1000 + WARMUP_N)), model, 4)


async def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    impl, kind, n, mc = spec["impl"], spec["kind"], spec["n"], spec["mc"]
    if spec.get("warm_up", True):
        await _warm_up(impl)
    STATE.update(kind=kind, times={}, inject_ms=spec.get("inject_ms", 0.0))
    model = ScriptedModel(latency=spec["latency"])
    spans: list[tuple[float, float]] = []
    stop = asyncio.Event()
    with Recorder() as rec:
        sleeper = asyncio.ensure_future(rec.sleeper(stop))
        for labels in RUN_LABELS:  # the same run twice: the first failure, then a later one
            STATE["labels"] = labels
            rec.paused = True
            await asyncio.sleep(0)  # the step that saw the last run end ends here, not below
            gc.collect()
            await asyncio.sleep(0.01)
            rec.paused = False
            start = time.perf_counter()
            statuses = await RUNNERS[impl](list(range(1, n + 1)), model, mc)
            spans.append((start, time.perf_counter()))
            others = {i: s for i, s in statuses.items() if i != FAILING and s != "ok"}
            if statuses[FAILING] != WANT[kind] or others:
                msg = (
                    f"{impl} {kind}: item {FAILING} ended {statuses[FAILING]} (want "
                    f"{WANT[kind]}), others {others}"
                )
                raise AssertionError(msg)
        stop.set()
        await sleeper
    times = dict(STATE["times"])
    return {
        "impl": impl,
        "kind": kind,
        "n": n,
        "mc": mc,
        "pid": os.getpid(),
        "walls_s": [b - a for a, b in spans],
        **summarize(rec, times, spans, spec["window_ms"] / 1e3),
    }


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario in this process, which must not have failed yet; return its figures.

    `spec`: impl (`fanfold`, `raw`), kind (`tool`, `model`, `timeout`), n, mc, latency
    (s), window_ms; optional warm_up (default true), inject_ms (the control's sleep).
    """
    return asyncio.run(_measure(spec))


def _forked(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warm up once here, then run each spec in a forked child of this process."""
    impls = {s["impl"] for s in specs}
    for impl in sorted(impls):
        asyncio.run(_warm_up(impl))
    out = []
    for spec in specs:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its first failure is the one measured
            os.close(read)
            code = 0
            try:
                text = json.dumps(measure({**spec, "warm_up": False}))
            except BaseException as exc:  # noqa: BLE001 - handed to the parent
                text, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}), 1
            with os.fdopen(write, "w") as f:
                f.write(text)
            os._exit(code)
        os.close(write)
        with os.fdopen(read) as f:
            text = f.read()
        os.waitpid(pid, 0)
        result = json.loads(text)
        if "error" in result:
            msg = f"forked run {spec} failed: {result['error']}"
            raise RuntimeError(msg)
        out.append(result)
    return out


# --- the parent ------------------------------------------------------------------------


def _child(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Run `payload` (`{"specs": [...], "fork": bool}`) in a fresh interpreter."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(payload)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        msg = f"child failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        raise RuntimeError(msg)
    result: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def collect(plan: dict[str, Any] | str, say: Any, *, inject_ms: float = 0.0) -> dict[str, Any]:
    """Run every scenario `runs` times (raw: `raw_runs`); return the figures.

    `plan`: a plan, or the name of one (`quick`, `full`), as `run.py` passes it.

    Scenarios take turns, so a noisy moment on the machine does not land on one only.
    """
    plan = PLANS[plan] if isinstance(plan, str) else plan
    common = {k: plan[k] for k in ("n", "mc", "latency", "window_ms")} | {"inject_ms": inject_ms}
    runs: list[dict[str, Any]] = []
    for impl, kinds, times in (
        ("fanfold", plan["scenarios"], plan["runs"]),
        ("raw", plan["raw_scenarios"], plan["raw_runs"]),
    ):
        specs = [{**common, "impl": impl, "kind": k} for _ in range(times) for k in kinds]
        if not specs:
            continue
        say(f"stall: {impl}, {len(specs)} runs ({plan['isolation']})")
        if plan["isolation"] == "fork":
            runs += _child({"specs": specs, "fork": True})
        else:
            for spec in specs:
                runs += _child({"specs": [spec], "fork": False})
    return {"plan": plan, "inject_ms": inject_ms, "runs": runs, "summary": summary(runs)}


FIGURES = ("cpu_ms", "lag_ms", "step_ms")


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return one row per (implementation, scenario): medians over its runs."""
    rows = []
    for impl in ("fanfold", "raw"):
        for kind in ("tool", "model", "timeout"):
            mine = [r for r in runs if r["impl"] == impl and r["kind"] == kind]
            if not mine:
                continue
            row: dict[str, Any] = {"impl": impl, "kind": kind, "runs": len(mine)}
            for fig in FIGURES:
                for label in ("first", "later", "normal"):
                    row[f"{label}_{fig}"] = statistics.median(r[label][fig] for r in mine)
                for part in ("median", "p90"):
                    row[f"base_{part}_{fig}"] = statistics.median(
                        r["baseline"][fig][part] for r in mine
                    )
                # Paired within each process: its first failure against its own later one.
                row[f"first_minus_later_{fig}"] = statistics.median(
                    r["first"][fig] - r["later"][fig] for r in mine
                )
                row[f"first_all_{fig}"] = [round(r["first"][fig], 2) for r in mine]
                row[f"later_all_{fig}"] = [round(r["later"][fig], 2) for r in mine]
            row["result_after_ms"] = statistics.median(r["first"]["result_after_ms"] for r in mine)
            rows.append(row)
    return rows


def _stall_ok(row: dict[str, Any]) -> bool:
    return bool(row["first_cpu_ms"] <= max(GOAL_FLOOR_MS, GOAL_RATIO * row["later_cpu_ms"]))


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Return target 7: Fanfold's first failure against a later one, every scenario.

    The figure is the longest loop step's CPU time in the failure's windows (median
    over the processes): how long the loop could run nothing else, whatever else the
    shared machine ran meanwhile (wall-clock lag moves with the other tenants).
    """
    rows = [r for r in data["summary"] if r["impl"] == "fanfold"]
    if not rows:
        return []
    worst = max(rows, key=lambda r: r["first_cpu_ms"] / max(r["later_cpu_ms"], 1e-9))
    detail = "; ".join(
        f"{r['kind']} {r['first_cpu_ms']:.2f} / {r['later_cpu_ms']:.2f} ms" for r in rows
    )
    p = data["plan"]
    return [
        {
            "id": "7",
            "target": f"first failure's loop stall vs a later failure's (N={p['n']}, "
            f"mc={p['mc']}, {worst['runs']} processes per scenario)",
            "detail": f"longest loop step (CPU) first / later: {detail}",
            "value": worst["first_cpu_ms"] / max(worst["later_cpu_ms"], 1e-9),
            "goal": f"<= max({GOAL_FLOOR_MS:g} ms, {GOAL_RATIO:g}x later)",
            "verdict": "PASS" if all(_stall_ok(r) for r in rows) else "MISS",
        }
    ]


COLS = ["implementation", "scenario", "runs", "step CPU first / later / normal"]
COLS += ["step CPU baseline p50 / p90", "lag first / later / normal"]
COLS += ["lag baseline p50 / p90", "first - later: CPU, lag", "result after"]


def _three(row: dict[str, Any], fig: str) -> str:
    return " / ".join(f"{row[f'{label}_{fig}']:.2f}" for label in ("first", "later", "normal"))


def report(data: dict[str, Any]) -> str:
    """Return the figures as Markdown (a section of `run.py`'s report)."""
    from run import table

    p = data["plan"]
    rows = [
        [
            r["impl"],
            r["kind"],
            r["runs"],
            _three(r, "cpu_ms"),
            f"{r['base_median_cpu_ms']:.2f} / {r['base_p90_cpu_ms']:.2f}",
            _three(r, "lag_ms"),
            f"{r['base_median_lag_ms']:.2f} / {r['base_p90_lag_ms']:.2f}",
            f"{r['first_minus_later_cpu_ms']:+.2f}, {r['first_minus_later_lag_ms']:+.2f}",
            f"{r['result_after_ms']:.0f}",
        ]
        for r in data["summary"]
    ]
    control = (
        f"; control: the first failure burns {data['inject_ms']:g} ms of CPU more"
        if data["inject_ms"]
        else ""
    )
    return "\n".join(
        [
            f"## The first failure's loop stall (target 7; N={p['n']}, mc={p['mc']}, "
            f"{p['latency'] * 1e3:g} ms calls, {p['window_ms']:g} ms windows, "
            f"{p['isolation']}ed processes{control}; ms, medians over the processes)",
            "",
            table(COLS, rows),
            "",
            "step CPU: the longest loop callback in the failure's windows (from its cause, and "
            "up to its task's result being seen), as CPU time of the loop's thread; lag: the "
            "largest wake-up delay of a 1 ms sleeper there (wall clock: it moves with the "
            "machine's other load); normal: a subagent with no failure at the same moment; "
            "baseline: windows of the same width with none of them; first - later: paired "
            "within each process; result after: from the first failure's cause to its "
            "task's result being seen.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the command line; measure (or be one child)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="forked processes, ~20 s")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--control", type=float, default=0.0, metavar="MS",
        help="check the method: the first failure burns MS of CPU more (a stall to show)",
    )  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        payload = json.loads(args.child)
        if payload["fork"]:
            print(json.dumps(_forked(payload["specs"])))
        else:
            print(json.dumps([measure(s) for s in payload["specs"]]))
        return 0
    import run as bench_run

    mode = "quick" if args.quick else "full"
    started, say = bench_run.stopwatch()
    info = bench_run.machine()
    data = collect(PLANS[mode], say, inject_ms=args.control)
    doc = bench_run.document(mode, info, started, targets(data), data)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    m = doc["machine"]
    print(
        f"First-failure stall ({mode} run), {m['date']}: {m['nproc']} cores, Python "
        f"{m['python']}, langgraph {m['langgraph']}, langchain-core {m['langchain_core']}, git "
        f"{m['git']}; load {m['load_before']} before, {doc['load_after']} after; "
        f"{doc['elapsed_s']:.0f} s\n\n"
        + bench_run.targets_table(doc["targets"])
        + "\n\n"
        + report(data)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
