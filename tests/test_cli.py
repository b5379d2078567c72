"""The `fanfold` command in a subprocess: the demo and `run --json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _fanfold(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run(
        [sys.executable, "-m", "fanfold", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )


def _check_document(doc: dict[str, Any]) -> None:
    assert set(doc) >= {"answer", "status", "plan", "results", "metrics"}
    tasks = doc["plan"]["tasks"]
    assert tasks and all({"id", "description", "depends_on"} <= set(t) for t in tasks)
    assert [r["task_id"] for r in doc["results"]] == [t["id"] for t in tasks]
    for r in doc["results"]:
        assert r["status"] in {"ok", "failed", "timed_out", "cancelled", "skipped"}
        datetime.fromisoformat(r["started_at"])
        datetime.fromisoformat(r["ended_at"])
        assert set(r["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    assert doc["metrics"]["peak_concurrency"] >= 1
    assert doc["metrics"]["tasks"] == len(tasks)


def test_run_json_prints_the_documented_document() -> None:
    proc = _fanfold(
        "run",
        "Compare tea, coffee and cocoa; estimate 3 * 120 cups",
        "--model",
        "demo:latency=0.05",
        "--max-concurrency",
        "2",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    _check_document(doc)
    assert doc["status"] == "ok"
    assert doc["answer"].startswith("[demo model]")
    assert doc["metrics"]["peak_concurrency"] == 2
    calc = next(r for r in doc["results"] if "calculator -> 360" in r["output"])
    assert calc["tool_calls"] == 1
    # Progress on stderr: a start and a finish line per task.
    for t in doc["plan"]["tasks"]:
        assert f"start  {t['id']} " in proc.stderr
        assert f"finish {t['id']} ok" in proc.stderr
    assert "offline demo model" in proc.stderr


def test_demo_runs_offline_and_prints_a_report() -> None:
    proc = _fanfold("demo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[demo model] Answer to:")
    assert "status=ok" in proc.stdout and "peak_concurrency=" in proc.stdout
    assert "plan: 7 tasks in 3 generations" in proc.stderr


def test_demo_json_has_parallel_work() -> None:
    proc = _fanfold("demo", "--json", "--max-concurrency", "5")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    _check_document(doc)
    assert doc["metrics"]["peak_concurrency"] == 5
    assert doc["metrics"]["task_time_s"] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "x", "--model", "nosuch:model"], "unknown model spec `nosuch:model`"),
        (["run", "x", "--max-concurrency", "0"], "`max_concurrency` must be an int >= 1"),
        (["run", "x", "--model", "openai:gpt-4o-mini"], "needs OPENAI_API_KEY"),
    ],
)
def test_bad_settings_exit_2_with_a_clear_message(args: list[str], needle: str) -> None:
    proc = _fanfold(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_task_timeout_settles_into_timed_out_results() -> None:
    proc = _fanfold(
        "run", "alpha, beta", "--model", "demo:latency=0.3", "--task-timeout", "0.1", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    statuses = {r["task_id"]: r["status"] for r in doc["results"]}
    assert statuses == {
        "t1": "timed_out",
        "t2": "timed_out",
        "compare": "skipped",
        "report": "skipped",
    }
    assert doc["status"] == "partial"


def test_fail_fast_exits_1_with_the_finished_results() -> None:
    proc = _fanfold(
        "run",
        "alpha, beta",
        "--model",
        "demo:latency=0.3",
        "--task-timeout",
        "0.1",
        "--policy",
        "fail_fast",
        "--json",
    )
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["status"] == "failed"
    assert doc["error"]["type"] == "TaskFailedError"
    assert doc["results"] and doc["results"][0]["status"] == "timed_out"
    assert "under fail_fast" in proc.stderr
