"""Run llmock, a third-party OpenAI-compatible mock server, as a subprocess for tests.

llmock (https://pypi.org/project/llmock/, not written here) is started with its own CLI,
`python -m llmock.cli serve`, bound to 127.0.0.1 on a free port, so `ChatOpenAI` talks to
a real, independent server over HTTP:

    with run_llmock(reply="Here is the plan: ...", tool_mode="off") as server:
        model = ChatOpenAI(model="x", base_url=server.base_url, api_key="not-needed")

What llmock offers, and how this helper uses it (llmock 0.2.2):

- `--tool-mode off`: offered tools are never called, whatever `tool_choice` says; every
  answer is text. (`auto`, its default, calls the best-matching offered tool until a tool
  result comes back, and honours `tool_choice` "none" / "required" / a named tool.)
- A fixed reply text has no CLI flag or config key. It is a scripted behaviour posted to
  the control API once the server is up: `POST /_llmock/scenario` with
  `{"behaviors": [{"type": "reply", "text": "...", "times": null}]}` (`times: null` makes
  it permanent). A scripted reply wins over tool mode and structured output.
- `behaviors`: any other llmock behaviour, as its JSON form, queued before the fixed reply
  (each fires on the first `times` requests it matches, e.g.
  `{"type": "fail", "status": 429, "retry_after": 0.1, "times": 2}`,
  `{"type": "delay", "seconds": 1}`, `{"type": "stream_fault", "kind": "truncate"}`,
  `{"type": "reply", "text": "first answer only"}`, or a scripted tool call:
  `{"type": "reply", "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}`).
  `LLMockProcess.script()` queues more while it runs (after the fixed reply, see there).
  A client can also force one status per request with the header `x-llmock-force-status`.
- `response_style` (static, hello, echo, varied) picks the unscripted text;
  `latency_ms` delays every answer; `extra_args` passes any other `llmock serve` flag
  (e.g. `["--error-rate", "500=0.2"]`, `["--rpm", "60"]`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, Literal

import httpx
import pytest

ToolMode = Literal["auto", "off"]
ResponseStyle = Literal["static", "hello", "echo", "varied"]

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 3


class LLMockStartError(RuntimeError):
    """llmock did not answer in time, or exited during startup."""


@dataclasses.dataclass(frozen=True)
class LLMockProcess:
    """A running llmock subprocess.

    Attributes:
        base_url: what `ChatOpenAI(base_url=...)` wants, e.g. `http://127.0.0.1:PORT/v1`.
        root_url: the server's root, e.g. `http://127.0.0.1:PORT` (`/health`, `/_llmock/...`).
        pid: the subprocess's pid.
        port: the port it listens on.
    """

    base_url: str
    root_url: str
    pid: int
    port: int
    fixed_reply: str | None = None

    def script(self, *behaviors: Mapping[str, Any]) -> None:
        """Queue llmock behaviours (their JSON form) through its control API.

        They go to the end of llmock's queue. A request takes, per kind, the first
        behaviour that matches it, so with a `fixed_reply` (permanent, matching every
        request) a later `reply` behaviour would never fire: that raises ValueError.
        Pass such replies to `run_llmock(behaviors=...)` instead, which queues them first.
        """
        if self.fixed_reply is not None and any(b.get("type") == "reply" for b in behaviors):
            msg = "a reply scripted after the fixed reply never fires: use run_llmock(behaviors=)"
            raise ValueError(msg)
        _admin(self.root_url, "POST", "/_llmock/scenario", {"behaviors": list(behaviors)})

    def requests(self) -> list[dict[str, Any]]:
        """Every chat/provider request llmock served so far, oldest first."""
        data = _admin(self.root_url, "GET", "/_llmock/requests")
        records: list[dict[str, Any]] = data["requests"]
        return records


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago: bind to port 0 and let the OS choose."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _admin(
    root_url: str, method: str, path: str, payload: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    # trust_env=False: never route a loopback call through a proxy from the environment.
    with httpx.Client(base_url=root_url, timeout=10.0, trust_env=False) as client:
        response = client.request(method, path, json=payload)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


def _command(
    port: int,
    *,
    tool_mode: ToolMode,
    response_style: ResponseStyle | None,
    latency_ms: int | None,
    extra_args: Sequence[str],
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "llmock.cli",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--tool-mode",
        tool_mode,
        "--log-level",
        "warning",
    ]
    if response_style is not None:
        command += ["--response-style", response_style]
    if latency_ms is not None:
        command += ["--latency-ms", str(latency_ms)]
    return command + list(extra_args)


def _environment() -> dict[str, str]:
    # llmock reads LLMOCK_* variables too: drop inherited ones so only our flags count.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOCK_")}
    env["NO_COLOR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _read(stream: IO[bytes]) -> str:
    stream.flush()
    stream.seek(0)
    return stream.read().decode("utf-8", errors="replace")


def _stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the server by its own pid: terminate, wait, then kill."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=timeout)


def _wait_until_up(
    process: subprocess.Popen[bytes], root_url: str, stderr: IO[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            if process.poll() is not None:
                msg = f"llmock exited with code {process.returncode}:\n{_read(stderr)}"
                raise LLMockStartError(msg)
            try:
                health = client.get(f"{root_url}/health")
                # llmock's own answer, from our process (not whoever else holds the port).
                if health.status_code == 200 and "version" in health.json():
                    if process.poll() is None:
                        return
            except (httpx.TransportError, ValueError):
                pass
            if time.monotonic() > deadline:
                msg = f"llmock did not answer within {timeout}s; its stderr:\n{_read(stderr)}"
                raise LLMockStartError(msg)
            time.sleep(0.05)


@contextlib.contextmanager
def run_llmock(
    *,
    reply: str | None = None,
    tool_mode: ToolMode = "off",
    response_style: ResponseStyle | None = None,
    behaviors: Sequence[Mapping[str, Any]] = (),
    latency_ms: int | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = STARTUP_TIMEOUT_S,
    port: int | None = None,
) -> Iterator[LLMockProcess]:
    """Start llmock on 127.0.0.1 on a free port; stop it (by its pid) on exit.

    Args:
        reply: if set, every chat answer is exactly this text (unless an earlier
            `behaviors` entry matches the request first).
        tool_mode: `off` always answers in text; `auto` calls offered tools.
        response_style: llmock's text for unscripted answers.
        behaviors: llmock behaviours (JSON form), queued before `reply`.
        latency_ms: a delay before every answer.
        extra_args: more `llmock serve` flags.
        startup_timeout: how long to wait for `/health` to answer.
        port: listen on this port (a server started again where one was killed);
            None: a free port.

    Yields:
        The running server; its `base_url` goes to `ChatOpenAI(base_url=...)`.

    Raises:
        LLMockStartError: it exited or stayed silent during startup (with its stderr).
    """
    scripted = list(behaviors)
    if reply is not None:
        scripted.append({"type": "reply", "text": reply, "times": None})
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        fixed = port
        for attempt in range(_PORT_ATTEMPTS):
            port = fixed or free_port()
            command = _command(
                port,
                tool_mode=tool_mode,
                response_style=response_style,
                latency_ms=latency_ms,
                extra_args=extra_args,
            )
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=_environment()
            )
            root_url = f"http://{HOST}:{port}"
            try:
                _wait_until_up(process, root_url, stderr, startup_timeout)
            except LLMockStartError as exc:
                _stop(process)
                # Someone took the port between free_port() and llmock's bind: try another.
                taken = "address already in use" in str(exc).lower()
                if taken and fixed is None and attempt + 1 < _PORT_ATTEMPTS:
                    stderr.seek(0)
                    stderr.truncate()
                    continue
                raise
            break
        try:
            server = LLMockProcess(
                base_url=f"{root_url}/v1", root_url=root_url, pid=process.pid, port=port
            )
            if scripted:
                server.script(*scripted)
            server = dataclasses.replace(server, fixed_reply=reply)
            yield server
        finally:
            _stop(process)


def llmock_fixture(
    *, scope: Literal["function", "module", "session"] = "function", **config: Any
) -> Callable[..., Iterator[LLMockProcess]]:
    """A pytest fixture that runs `run_llmock(**config)` around each test (or `scope`).

    In a test module: `text_llm = llmock_fixture(reply="done", tool_mode="off")`, then
    `def test_x(text_llm: LLMockProcess) -> None: ...`.
    """

    def fixture() -> Iterator[LLMockProcess]:
        with run_llmock(**config) as server:
            yield server

    return pytest.fixture(scope=scope)(fixture)
