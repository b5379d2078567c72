"""Every way the `fanfold` command can fail: one line on stderr, a distinct exit code,
and with `--json` a document on stdout, whatever happened.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fanfold.graphs import cli
from tests.llmock_server import free_port
from tests.test_cli import ROOT, check_failure, failure_lines, fanfold

SLOW_DEMO = "demo:latency=0.3"


def test_the_exit_codes_are_documented_in_help() -> None:
    proc = fanfold("--help")
    assert proc.returncode == 0
    for code, what in cli.EXIT_CODES:
        assert f"{code:<4} {what}" in proc.stdout
    assert [c for c, _ in cli.EXIT_CODES] == [0, 1, 2, 3, 4, 130, 141]


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    proc = fanfold("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"fanfold {version('fanfold')}"


# --- exit 0 and 1 ------------------------------------------------------------------------


def test_exit_0_when_the_run_finishes_even_partly() -> None:
    proc = fanfold("run", "alpha, beta", "--model", SLOW_DEMO, "--task-timeout", "0.1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "partial"
    assert not failure_lines(proc.stderr)


def test_exit_1_under_fail_fast_with_the_finished_results() -> None:
    proc = fanfold(
        "run",
        "alpha, beta",
        "--model",
        SLOW_DEMO,
        "--task-timeout",
        "0.1",
        "--policy",
        "fail_fast",
        "--json",
    )
    line, doc = check_failure(proc, 1, "TaskFailed")
    assert doc is not None
    assert doc["results"] and doc["results"][0]["status"] == "timed_out"
    assert "under fail_fast" in line and "--policy settle" in line
    assert doc["error"]["exception"] == "fanfold.TaskFailedError"


def test_exit_1_when_the_quorum_is_out_of_reach() -> None:
    proc = fanfold(
        "run",
        "alpha, beta",
        "--model",
        SLOW_DEMO,
        "--task-timeout",
        "0.1",
        "--policy",
        "quorum:2",
        "--json",
    )
    line, doc = check_failure(proc, 1, "QuorumUnreachable")
    assert doc is not None and {r["status"] for r in doc["results"]} >= {"timed_out"}
    assert "quorum" in line


def test_exit_1_without_json_prints_the_finished_results() -> None:
    proc = fanfold(
        "run", "alpha, beta", "--model", SLOW_DEMO, "--task-timeout", "0.1", "--policy", "fail_fast"
    )
    check_failure(proc, 1, "TaskFailed", as_json=False)
    assert "timed_out" in proc.stdout and "status=failed" in proc.stdout


# --- exit 2 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["run", "x", "--max-concurrency", "0"],
            "--max-concurrency must be an integer >= 1, got 0",
        ),
        (["run", "x", "--model", "nosuch:model"], "unknown provider `nosuch`"),
        (["run", "x", "--model", "openai:gpt-4o-mini"], "needs OPENAI_API_KEY"),
        (["run"], "needs a REQUEST (what to do, in words) or --plan FILE.json"),
        (["run", "x", "--max-concurency", "3"], "did you mean --max-concurrency?"),
        (["run", "x", "--max-concurrency"], "argument --max-concurrency: expected one argument"),
        (["run", "x", "--policy"], "see `fanfold run --help`"),
        (["resume", "t1"], "required: --checkpoint"),
        ([], "name a command: run, resume, rerun or demo"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_exit_2_for_bad_input_in_one_line(args: list[str], needle: str) -> None:
    proc = fanfold(*args, "--json")
    line, doc = check_failure(proc, 2, "BadInput")
    assert needle in line
    assert doc is not None and needle in doc["error"]["message"]
    without_json = fanfold(*args)
    check_failure(without_json, 2, "BadInput", as_json=False)
    assert without_json.stdout == ""


def test_exit_2_for_an_unknown_thread_id(tmp_path: Path) -> None:
    location = tmp_path / "runs.sqlite"
    sqlite3.connect(location).close()  # an empty SQLite file: no run in it
    proc = fanfold("resume", "nosuch", "--checkpoint", str(location), "--json")
    line, _ = check_failure(proc, 2, "BadInput")
    assert f"no run with thread id `nosuch` in `{location}`" in line


def test_resume_with_a_missing_file_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "sub" / "missing.sqlite"
    proc = fanfold("resume", "t1", "--checkpoint", str(missing), "--json")
    line, _ = check_failure(proc, 2, "BadInput")
    assert f"checkpoint file `{missing}` does not exist" in line
    assert not missing.exists() and not missing.parent.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("what", ["folder", "not a database"])
def test_exit_2_for_a_checkpoint_that_is_no_sqlite_file(tmp_path: Path, what: str) -> None:
    location = tmp_path
    if what == "not a database":
        location = tmp_path / "notes.txt"
        location.write_text("just some notes, not a database\n" * 200)
    before = location.read_bytes() if location.is_file() else None
    proc = fanfold("run", "x", "--checkpoint", str(location), "--json")
    line, _ = check_failure(proc, 2, "BadInput")
    assert str(location) in line
    if before is not None:
        assert location.read_bytes() == before  # left as it was


# --- exit 3 ------------------------------------------------------------------------------


def test_exit_3_when_the_model_server_is_unreachable() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    proc = fanfold(
        "run",
        "x",
        "--model",
        f"openai:m@http://127.0.0.1:{port}/v1",
        "--max-retries",
        "0",
        "--json",
    )
    line, doc = check_failure(proc, 3, "Unreachable")
    assert f"cannot reach the model server at http://127.0.0.1:{port}" in line
    assert doc is not None and doc["error"]["exception"] is not None
    assert time.monotonic() - started < 30
    assert len(proc.stderr.splitlines()) <= 3  # not 187 lines


def test_exit_3_when_the_checkpoint_database_is_unreachable() -> None:
    port = free_port()
    url = f"postgresql://postgres:secret@127.0.0.1:{port}/fanfold"
    proc = fanfold("run", "x", "--checkpoint", url, "--json")
    line, doc = check_failure(proc, 3, "Unreachable")
    assert "cannot reach the checkpoint database" in line
    assert "secret" not in proc.stderr and doc is not None and "secret" not in json.dumps(doc)


def test_exit_3_when_the_sqlite_checkpoint_cannot_be_opened(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = fanfold("run", "x", "--checkpoint", str(blocker / "runs.sqlite"), "--json")
    line, _ = check_failure(proc, 3, "Unreachable")
    assert "cannot open the checkpoint" in line


# --- warnings, pipes, Ctrl-C -------------------------------------------------------------


def test_thread_id_without_checkpoint_warns_that_nothing_is_saved() -> None:
    proc = fanfold("run", "alpha", "--model", "demo:latency=0", "--thread-id", "t1", "--json")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in failure_lines(proc.stderr) if "warning:" in line]
    assert len(warnings) == 1
    assert "--thread-id without --checkpoint saves nothing" in warnings[0]
    assert "add --checkpoint" in warnings[0]
    assert "thread: t1" not in proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok"


def test_a_closed_stdout_ends_quietly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanfold", "run", "alpha", "--model", "demo:latency=0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head -0` would
    with proc.stderr:
        stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == cli.EXIT_BROKEN_PIPE
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert "BrokenPipe" not in stderr


def _read_until(proc: subprocess.Popen[bytes], needle: str, timeout: float = 30) -> str:
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, seen
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 65536).decode()
            assert chunk, f"stderr closed before {needle!r}: {seen}"
            seen += chunk
    return seen


def interrupt(
    args: list[str], wait_for: str, stdin: Any = subprocess.DEVNULL
) -> tuple[int, str, str]:
    """Start the command, send SIGINT once `wait_for` is on stderr; return code and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanfold", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    try:
        before = _read_until(proc, wait_for)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out.decode(), before + err.decode()


def test_ctrl_c_exits_130_in_one_line_and_the_run_resumes(tmp_path: Path) -> None:
    location = str(tmp_path / "runs.sqlite")
    code, out, err = interrupt(
        [
            "run",
            "alpha, beta",
            "--model",
            "demo:latency=1",
            "--checkpoint",
            location,
            "--thread-id",
            "ctrl-c",
            "--json",
        ],
        "start  t1",
    )
    assert code == 130, err
    assert "Traceback" not in err
    lines = failure_lines(err)
    assert lines == [
        f"fanfold: interrupted; continue with `fanfold resume ctrl-c --checkpoint {location}`"
    ]
    doc = json.loads(out)
    assert doc["status"] == "failed" and doc["error"]["type"] == "RunStopped"

    resumed = fanfold("resume", "ctrl-c", "--checkpoint", location, "--model", "demo:latency=0")
    assert resumed.returncode == 0, resumed.stderr
    assert "status=ok tasks=4" in resumed.stdout
