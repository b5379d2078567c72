"""Target 6: model calls over real HTTP to a local OpenAI-compatible server.

    python bench/http_bench.py                       # 1000 calls, mc=50, 20 ms, best of 2
    python bench/http_bench.py --n 300 --best-of 1 --impls httpx httpx2 chatopenai fanfold
    python bench/http_bench.py --profile fanfold     # cProfile of one run, CPU by layer
    python bench/http_bench.py --impls fanfold --setting start_jitter_s=0
    python bench/http_bench.py --latency 0.2 --n 500 # slower calls (not a target)

`bench/http_server.py` runs in a process of its own (so its CPU is not the
client's), and each client runs in child processes of its own:

- `httpx`: one `httpx.AsyncClient` (httpx 0.28, pool sized to mc),
  `asyncio.Semaphore(mc)`, POSTing the JSON body ChatOpenAI sends, parsing the reply;
- `httpx2`: the same on `httpx2.AsyncClient` (pydantic's fork of httpx, the one the
  openai SDK is built on);
- `chatopenai`: `ChatOpenAI(base_url=..., api_key="x", model="m", max_retries=0)`
  and `ainvoke` under `asyncio.Semaphore(mc)`: the client library's own cost;
- `fanfold`: `execute_tasks_parallel` with model spec `openai:m@<base_url>`,
  one task per call (`tools=[]`, so the server's `stop` answer ends the
  subagent after one call), `max_concurrency=mc`, default settings otherwise.

Diagnostic (not in run.py's table): `httpx-defaults`, `httpx` with httpx's
default pool limits (keep-alive 20, as Fanfold's client in `nodes/models.py` had
before it moved to the openai SDK's own client).

Every run starts from a fresh client (an empty connection pool), after a
warm-up, and the server's counters are reset before it: connections opened and
peak open are the server's counts for that run alone. Each run is checked: the
server saw exactly N chat requests, and every call got its own answer.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

IMPLS = ("httpx", "httpx2", "chatopenai", "fanfold", "httpx-defaults")
QUICK_IMPLS = ("httpx", "httpx2", "chatopenai", "fanfold")
"""What run.py --quick measures; the rest are diagnostics (why a figure is what it is)."""
RAW_IMPLS = ("httpx", "httpx2")
"""Raw clients: the throughput baseline is the faster of the two."""
MODEL = "m"
SERVER_START_TIMEOUT_S = 20.0
CHILD_TIMEOUT_S = 600.0


# --- the parent: server process, one child per implementation ----------------------------


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HttpServer:
    """`bench/http_server.py` in a process of its own, killed on exit."""

    def __init__(self, latency: float, port: int | None = None) -> None:
        self.latency = latency
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[str] | None = None
        self.log = tempfile.TemporaryFile(mode="w+")

    def __enter__(self) -> HttpServer:
        cmd = [sys.executable, str(HERE / "http_server.py"), "--port", str(self.port)]
        cmd += ["--latency", str(self.latency)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            line = self.proc.stdout.readline() if ready else ""
            if line.strip() == "ready":
                return self
            if left <= 0 or self.proc.poll() is not None or (ready and not line):
                msg = f"the HTTP server did not start: {self.errors()}"
                self.__exit__(None, None, None)
                raise RuntimeError(msg)

    def errors(self) -> str:
        """Return the tail of the server's stderr."""
        self.log.seek(0)
        return self.log.read()[-2000:]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def prompts() -> dict[str, str]:
    """Return the system prompt and task header Fanfold's subagents send (so all send the same)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # this checkout's library, as the children see it
    from fanfold.nodes.context import RunSettings
    from fanfold.nodes.prompts import TASK_HEADER

    return {
        "system": RunSettings().agent_kinds()["general"].system_prompt,
        "header": TASK_HEADER,
    }


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one implementation's measurement in a fresh interpreter; return its data."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        msg = f"child {spec['impl']} timed out after {CHILD_TIMEOUT_S:.0f}s:\n{err[-4000:]}"
        raise RuntimeError(msg) from None
    if proc.returncode != 0:
        msg = f"child {spec['impl']} failed:\n{out[-2000:]}\n{err[-4000:]}"
        raise RuntimeError(msg)
    return json.loads(out.strip().splitlines()[-1])


def measure(
    n: int = 1000,
    mc: int = 50,
    latency: float = 0.02,
    best_of: int = 2,
    warmup: int = 100,
    impls: tuple[str, ...] = IMPLS,
    settings: dict[str, Any] | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Start the server; run each implementation in children of its own; return the figures.

    The implementations take turns, `best_of` rounds of one child each (warm-up, then
    one measured run), so a noisy moment on the machine does not land on one of them
    only; each keeps its best wall time. `settings`: RunSettings overrides for Fanfold
    (default: none, its defaults).
    """
    texts = prompts()
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
    with HttpServer(latency) as server:
        for round_ in range(1, best_of + 1):
            for impl in impls:
                if say:
                    say(f"http: {impl}, {n} calls, mc={mc}, {latency * 1e3:.0f} ms, run {round_}")
                spec = {
                    "impl": impl,
                    "base_url": server.base_url,
                    "n": n,
                    "mc": mc,
                    "best_of": 1,
                    "warmup": min(warmup, n),
                    "settings": settings or {},
                    **texts,
                }
                runs[impl].append(run_child(spec))
        server_errors = server.errors()
    if server_errors.strip():
        msg = f"the HTTP server logged errors:\n{server_errors}"
        raise RuntimeError(msg)
    rows = {impl: best_run(impl_runs) for impl, impl_runs in runs.items()}
    return {
        "n": n,
        "mc": mc,
        "latency_s": latency,
        "best_of": best_of,
        "rows": rows,
        "ratios": ratios(rows, mc),
    }


def best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the run with the best wall time, with every run's wall time and connections."""
    best = dict(min(runs, key=lambda r: r["wall_s"]))
    best["runs"] = sum(r["runs"] for r in runs)
    for key in ("all_wall_s", "all_connections_opened", "all_peak_open"):
        best[key] = [x for r in runs for x in r[key]]
    return best


def ratios(rows: dict[str, dict[str, Any]], mc: int) -> dict[str, Any]:
    """Return the target ratios: throughput against the raw clients, connections against mc + 2.

    `<impl>/raw` is against the faster raw client (`baseline`); `<impl>/<raw>` against each.
    """
    out: dict[str, Any] = {"connection_limit": mc + 2}
    raws = {k: rows[k]["calls_per_s"] for k in RAW_IMPLS if k in rows}
    if not raws:
        return out
    best = max(raws, key=lambda k: raws[k])
    out["baseline"] = best
    for impl, row in rows.items():
        out[f"{impl}/raw"] = row["calls_per_s"] / raws[best]
        for raw, calls_per_s in raws.items():
            if raw != impl:
                out[f"{impl}/{raw}"] = row["calls_per_s"] / calls_per_s
    return out


# --- one child: one implementation -------------------------------------------------------


def control(base_url: str, path: str, method: str = "GET") -> dict[str, Any]:
    """Call the server's /stats or /reset on a connection of its own (blocking)."""
    root = base_url.rsplit("/v1", 1)[0]
    req = urllib.request.Request(root + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - our own 127.0.0.1 server
        return json.loads(resp.read())


def wait_idle(base_url: str, timeout_s: float = 5.0) -> int:
    """Wait until the server holds no client connection (the last run's pool closed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        open_now = control(base_url, "/stats")["open_now"]
        if open_now == 0 or time.monotonic() > deadline:
            return open_now
        time.sleep(0.02)


class Runner:
    """One implementation: `open` a fresh client, `run` n calls, `close` the client."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.base_url: str = spec["base_url"]
        self.mc: int = spec["mc"]
        self.system: str = spec["system"]
        self.header: str = spec["header"]
        self.settings: dict[str, Any] = spec.get("settings") or {}

    def user(self, i: int) -> str:
        """Return the task message for call `i` (as Fanfold's `brief` writes it)."""
        return self.header.format(id=f"t{i}", kind="general", description=f"item-{i}")

    def expected(self, i: int) -> str:
        """Return the answer call `i` must get: the server echoes the last message."""
        return "echo: " + self.user(i)

    async def open(self) -> None:
        raise NotImplementedError

    def prepare(self, n: int) -> Callable[[], Awaitable[list[str]]]:
        """Build the inputs (outside the timed region); return the timed coroutine factory."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class RawHttpx(Runner):
    """One httpx.AsyncClient, a semaphore, the JSON body ChatOpenAI sends."""

    def __init__(self, spec: dict[str, Any], *, sized_pool: bool, module: str = "httpx") -> None:
        super().__init__(spec)
        self.sized_pool = sized_pool
        self.module = module
        self.client: Any = None

    async def open(self) -> None:
        import importlib

        httpx = importlib.import_module(self.module)
        limits = (
            httpx.Limits(max_connections=self.mc, max_keepalive_connections=self.mc)
            if self.sized_pool
            else httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's
        )
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            limits=limits,
            timeout=60.0,
            headers={"authorization": "Bearer x"},
        )

    def prepare(self, n: int) -> Callable[[], Awaitable[list[str]]]:
        # Key order and values as ChatOpenAI's `_get_request_payload` builds them.
        bodies = [
            {
                "model": MODEL,
                "stream": False,
                "messages": [
                    {"content": self.system, "role": "system"},
                    {"content": self.user(i), "role": "user"},
                ],
            }
            for i in range(1, n + 1)
        ]
        sem = asyncio.Semaphore(self.mc)
        client = self.client

        async def one(body: dict[str, Any]) -> str:
            async with sem:
                resp = await client.post("/chat/completions", json=body)
                resp.raise_for_status()
                data = resp.json()
            choice = data["choices"][0]
            if choice["finish_reason"] != "stop" or "usage" not in data:
                msg = f"unexpected reply {data}"
                raise AssertionError(msg)
            return choice["message"]["content"]

        async def start() -> list[str]:
            return list(await asyncio.gather(*(one(b) for b in bodies)))

        return start

    async def close(self) -> None:
        await self.client.aclose()


class BareChatOpenAI(Runner):
    """ChatOpenAI with its defaults (max_retries=0), ainvoke under a semaphore."""

    model: Any = None

    async def open(self) -> None:
        from langchain_openai import ChatOpenAI

        self.model = ChatOpenAI(base_url=self.base_url, api_key="x", model=MODEL, max_retries=0)

    def prepare(self, n: int) -> Callable[[], Awaitable[list[str]]]:
        from langchain_core.messages import HumanMessage, SystemMessage

        convs = [[SystemMessage(self.system), HumanMessage(self.user(i))] for i in range(1, n + 1)]
        sem = asyncio.Semaphore(self.mc)
        model = self.model

        async def one(messages: list[Any]) -> str:
            async with sem:
                reply = await model.ainvoke(messages)
            if reply.response_metadata.get("finish_reason") != "stop":
                msg = f"unexpected reply {reply!r}"
                raise AssertionError(msg)
            return reply.content

        async def start() -> list[str]:
            return list(await asyncio.gather(*(one(c) for c in convs)))

        return start

    async def close(self) -> None:
        # langchain-openai shares one default httpx client per base URL (lru_cache):
        # close it and forget it, so the next run starts with an empty pool.
        from langchain_openai.chat_models import _client_utils

        await self.model.root_async_client._client.aclose()
        _client_utils._cached_async_httpx_client.cache_clear()


class Fanfold(Runner):
    """`execute_tasks_parallel`, one task (one model call) per item, default settings."""

    @property
    def spec(self) -> str:
        return f"openai:{MODEL}@{self.base_url}"

    async def open(self) -> None:
        from fanfold.nodes.models import load_chat_model

        load_chat_model(self.spec)  # built here, cached for this loop: not in the timed run

    def prepare(self, n: int) -> Callable[[], Awaitable[list[str]]]:
        from fanfold import RunSettings, Task, execute_tasks_parallel

        tasks = [Task(id=f"t{i}", description=f"item-{i}", tools=[]) for i in range(1, n + 1)]
        settings = RunSettings(**self.settings) if self.settings else None

        async def start() -> list[str]:
            results = await execute_tasks_parallel(
                tasks, model=self.spec, tools=[], max_concurrency=self.mc, settings=settings
            )
            bad = [(r.task_id, r.status, r.error) for r in results if r.status != "ok"]
            if bad:
                msg = f"{len(bad)} tasks did not end ok, e.g. {bad[:3]}"
                raise AssertionError(msg)
            return [r.output for r in results]

        return start

    async def close(self) -> None:
        from fanfold.nodes.models import aclose_models

        await aclose_models()


def make_runner(spec: dict[str, Any]) -> Runner:
    """Return the runner of `spec['impl']`."""
    impl = spec["impl"]
    if impl in ("httpx", "httpx-defaults"):
        return RawHttpx(spec, sized_pool=impl == "httpx")
    if impl == "httpx2":
        return RawHttpx(spec, sized_pool=True, module="httpx2")
    if impl == "chatopenai":
        return BareChatOpenAI(spec)
    if impl == "fanfold":
        return Fanfold(spec)
    msg = f"unknown implementation `{impl}`; known: {IMPLS}"
    raise ValueError(msg)


async def timed_run(runner: Runner, n: int, profiler: Any = None) -> dict[str, Any]:
    """Run n calls from a fresh client and a reset server; check them; return the figures."""
    await runner.open()
    start = runner.prepare(n)
    open_before = wait_idle(runner.base_url)
    control(runner.base_url, "/reset", "POST")
    gc.collect()
    if profiler is not None:
        profiler.enable()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    answers = await start()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if profiler is not None:
        profiler.disable()
    server = control(runner.base_url, "/stats")
    await runner.close()
    wrong = [i for i, a in enumerate(answers, start=1) if a != runner.expected(i)]
    if len(answers) != n or wrong:
        msg = f"{len(wrong)} wrong answers of {len(answers)}, e.g. call {wrong[:3]}"
        raise AssertionError(msg)
    if server["chat_requests"] != n or server["bad_requests"]:
        msg = f"the server saw {server['chat_requests']} chat requests for {n} calls: {server}"
        raise AssertionError(msg)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "calls_per_s": n / wall,
        "cpu_per_call_ms": cpu / n * 1e3,
        "cpu_share": cpu / wall,
        "connections_opened": server["connections_opened"],
        "peak_open": server["peak_open"],
        "open_before": open_before,
        "chat_requests": server["chat_requests"],
        "streamed": server["streamed"],
        "server_peak_in_flight": server["peak_in_flight"],
        "request_bytes_per_call": server["request_bytes"] / n,
        "server_cpu_s": server["cpu_s"],
    }


async def measure_impl(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then the best (by wall) of `best_of` checked runs of `n` calls."""
    runner = make_runner(spec)
    await timed_run(runner, spec["warmup"])
    runs = [await timed_run(runner, spec["n"]) for _ in range(spec["best_of"])]
    best = min(runs, key=lambda r: r["wall_s"])
    out: dict[str, Any] = {
        "impl": spec["impl"],
        **best,
        "runs": len(runs),
        "all_wall_s": [r["wall_s"] for r in runs],
        "all_connections_opened": [r["connections_opened"] for r in runs],
        "all_peak_open": [r["peak_open"] for r in runs],
    }
    if spec["impl"].startswith("fanfold"):
        from fanfold.nodes.context import RunSettings

        s = RunSettings(**spec.get("settings") or {})
        keep = ("start_jitter_s", "request_timeout_s", "max_retries", "requests_per_second")
        out["settings"] = {k: v for k, v in s.to_json().items() if k in keep}
        out["settings"]["task_timeout_s"] = None  # execute_tasks_parallel's default
    return out


async def profile_impl(spec: dict[str, Any], top: int, dump: str | None = None) -> None:
    """Profile one run of `n` calls with cProfile (in this process) and print where CPU went."""
    import cProfile
    import io
    import pstats

    from diagnose import by_package

    runner = make_runner(spec)
    await timed_run(runner, spec["warmup"])
    prof = cProfile.Profile()
    stats = await timed_run(runner, spec["n"], profiler=prof)
    n = spec["n"]
    if dump:
        prof.dump_stats(dump)
    print(
        f"{spec['impl']}: {n} calls, mc={spec['mc']}, under cProfile: wall {stats['wall_s']:.2f} s,"
        f" CPU {stats['cpu_s']:.2f} s, connections {stats['connections_opened']}"
    )
    out = io.StringIO()
    ps = pstats.Stats(prof, stream=out)
    print("CPU by layer (cumulative time of each layer's entry point), ms per call:")
    for name, secs in layers(ps):
        print(f"  {secs / n * 1e3:7.3f}  {name}")
    print("own time by package, ms per call:")
    for name, secs in by_package(ps):
        print(f"  {secs / n * 1e3:7.3f}  {name}")
    ps.sort_stats("tottime").print_stats(top)
    ps.sort_stats("cumulative").print_stats(top)
    print(out.getvalue())


def cumulative(stats: Any, path: str, function: str) -> float:
    """Return the cumulative seconds of every profiled function `function` in a file `path`."""
    return sum(
        row[3]
        for (filename, _, name), row in stats.stats.items()
        if name == function and filename.endswith(path)
    )


def layers(stats: Any) -> list[tuple[str, float]]:
    """Split a profile of model calls into layers, from the socket up, by entry points.

    HTTP client: `AsyncClient.send` (httpx or httpx2). openai SDK: its raw-response
    wrapper around `create` and `parse`, less the HTTP client. LangChain model call:
    `BaseChatModel._agenerate_with_cache` (langchain-openai's `_agenerate` and
    below), less both. The rest: everything outside the model call (LangGraph, Fanfold's
    nodes, callbacks, the event loop, the garbage collector).
    """
    total = sum(row[2] for row in stats.stats.values())
    http = cumulative(stats, "httpx/_client.py", "send")
    http += cumulative(stats, "httpx2/_client.py", "send")
    sdk = cumulative(stats, "openai/_legacy_response.py", "wrapped")
    sdk += cumulative(stats, "openai/_legacy_response.py", "parse")
    model = cumulative(
        stats, "langchain_core/language_models/chat_models.py", "_agenerate_with_cache"
    )
    if not model:  # raw clients: no model layer
        return [("HTTP client", http), ("the rest", total - http), ("total", total)]
    return [
        ("HTTP client (httpx / httpx2 AsyncClient.send)", http),
        ("openai SDK (request building, response parsing)", sdk - http),
        ("LangChain model call (_agenerate_with_cache less the SDK)", model - sdk),
        ("outside the model call (LangGraph, Fanfold, callbacks, loop, GC)", total - model),
        ("total", total),
    ]


# --- report --------------------------------------------------------------------------------

COLS = ["client", "wall s", "calls/s", "vs best raw", "connections opened", "peak open"]
COLS += ["CPU s", "CPU ms/call", "CPU / wall", "server CPU s"]


def table_rows(doc: dict[str, Any]) -> list[list[Any]]:
    """Return one row per implementation for the Real HTTP table."""
    rows = []
    for impl, r in doc["rows"].items():
        vs = doc["ratios"].get(f"{impl}/raw")
        opened = "/".join(str(c) for c in r["all_connections_opened"])
        peak = "/".join(str(c) for c in r["all_peak_open"])
        rows.append(
            [impl, r["wall_s"], r["calls_per_s"], vs, opened, peak]
            + [r["cpu_s"], r["cpu_per_call_ms"], r["cpu_share"], r["server_cpu_s"]]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Parse the command line; measure (or profile, or be one child)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="calls per run")
    parser.add_argument("--mc", type=int, default=50, help="concurrency")
    parser.add_argument("--latency", type=float, default=0.02, help="server seconds per call")
    parser.add_argument("--best-of", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument(
        "--setting", action="append", default=[], metavar="KEY=VALUE",
        help="a RunSettings override for Fanfold (JSON value), e.g. start_jitter_s=0",
    )  # fmt: skip
    parser.add_argument("--profile", choices=IMPLS, help="cProfile one run of this client")
    parser.add_argument("--top", type=int, default=25, help="rows of the profile to print")
    parser.add_argument("--dump", metavar="FILE", help="with --profile: also save the pstats file")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(measure_impl(json.loads(args.child)))))
        return 0
    settings = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.setting)}
    if args.profile:
        sys.path[:0] = [str(HERE), str(ROOT)]
        with HttpServer(args.latency) as server:
            spec = {
                "impl": args.profile,
                "base_url": server.base_url,
                "n": args.n,
                "mc": args.mc,
                "warmup": min(args.warmup, args.n),
                "settings": settings,
                **prompts(),
            }
            asyncio.run(profile_impl(spec, args.top, args.dump))
        return 0
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    doc = measure(
        args.n, args.mc, args.latency, args.best_of, args.warmup, tuple(args.impls), settings, say
    )
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    from run import table

    print(
        f"Real HTTP: {doc['n']} calls, mc={doc['mc']}, server latency "
        f"{doc['latency_s'] * 1e3:.0f} ms, best of {doc['best_of']}; connection limit mc + 2 = "
        f"{doc['ratios']['connection_limit']}"
    )
    print(table(COLS, table_rows(doc)))
    if "fanfold" in doc["rows"]:
        print(f"fanfold settings: {doc['rows']['fanfold']['settings']}")
    return 0


if __name__ == "__main__":
    sys.path[:0] = [str(HERE), str(ROOT)]
    sys.exit(main())
