"""The `fanfold` command: runs, reports, and flags derived from the RunSettings declaration.

Helpers shared by the other `test_cli_*` modules live here: `fanfold()` runs the
command in a subprocess (`python -m fanfold`), `check_failure()` checks the one-line
failure contract.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fanfold.graphs import cli
from fanfold.graphs.checkpoint import open_checkpointer
from fanfold.graphs.orchestrator import compile_orchestrator
from fanfold.nodes.context import RunSettings, setting_flags

ROOT = Path(__file__).resolve().parent.parent

SEVEN_NEW = {
    "planner_model": "--planner-model",
    "max_steps": "--max-steps",
    "max_tasks": "--max-tasks",
    "tool_timeout_s": "--tool-timeout",
    "request_timeout_s": "--request-timeout",
    "start_jitter_s": "--start-jitter",
    "perspectives": "--perspectives",
}
OLD_FLAGS = [
    "--model",
    "--max-concurrency",
    "--task-timeout",
    "--policy",
    "--max-retries",
    "--rps",
    "--max-tokens",
    "--max-wall-time",
    "--max-task-tokens",
    "--max-rounds",
    "--max-depth",
    "--workspace",
    "--approve",
    "--checkpoint",
    "--thread-id",
    "--json",
]


def fanfold(
    *args: str,
    timeout: float = 60,
    stdin: str | None = None,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m fanfold ARGS` without any OPENAI_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.pop("FANFOLD_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", "fanfold", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
    )


def failure_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("fanfold: ")]


def check_failure(
    proc: subprocess.CompletedProcess[str], code: int, error_type: str, *, as_json: bool = True
) -> tuple[str, dict[str, Any] | None]:
    """Check a failed command: its exit code, one `fanfold: ` line, no traceback, the document.

    Returns the failure line and the `--json` document.
    """
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in failure_lines(proc.stderr) if "warning:" not in line]
    assert len(lines) == 1, proc.stderr
    doc: dict[str, Any] | None = None
    if as_json:
        doc = json.loads(proc.stdout)
        assert set(doc) == {"answer", "status", "plan", "results", "metrics", "error"}
        assert doc["status"] == "failed"
        assert set(doc["error"]) == {"type", "message", "exception"}
        assert doc["error"]["type"] == error_type
    return lines[0], doc


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


# --- runs ------------------------------------------------------------------------------


def test_run_json_prints_the_documented_document() -> None:
    proc = fanfold(
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
    assert doc["status"] == "ok" and doc["error"] is None
    assert doc["answer"].startswith("[demo model]")
    assert doc["metrics"]["peak_concurrency"] == 2
    calc = next(r for r in doc["results"] if "calculator -> 360" in r["output"])
    assert calc["tool_calls"] == 1
    # Progress on stderr: a start and a finish line per task.
    for t in doc["plan"]["tasks"]:
        assert f"start  {t['id']} " in proc.stderr
        assert f"finish {t['id']} ok" in proc.stderr
    assert "offline demo model" in proc.stderr
    assert not failure_lines(proc.stderr)


def test_demo_runs_offline_and_prints_a_report() -> None:
    proc = fanfold("demo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[demo model] Answer to:")
    assert "status=ok" in proc.stdout and "peak_concurrency=" in proc.stdout
    assert "plan: 7 tasks in 3 generations" in proc.stderr


def test_demo_json_has_parallel_work() -> None:
    proc = fanfold("demo", "--json", "--max-concurrency", "5")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    _check_document(doc)
    assert doc["metrics"]["peak_concurrency"] == 5
    assert doc["metrics"]["task_time_s"] > 0


def test_task_timeout_settles_into_timed_out_results() -> None:
    proc = fanfold(
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


# --- flags from the declaration ----------------------------------------------------------


def _option_strings(parser: Any) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def test_the_setting_flags_are_exactly_the_declared_ones() -> None:
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    declared = {f.name for f in setting_flags().values()}
    assert set(SEVEN_NEW.values()) <= declared
    own = {"--help", "--json", "--no-live", "--checkpoint"}
    temporal = {"--temporal", "--task-queue"}
    assert _option_strings(subs.choices["run"]) == declared | own | temporal | {
        "--thread-id",
        "--plan",
    }
    assert _option_strings(subs.choices["demo"]) == declared | own | temporal | {"--thread-id"}
    assert _option_strings(subs.choices["worker"]) == {
        "--help",
        "--role",
        "--max-activities",
        *temporal,
    }
    assert _option_strings(subs.choices["resume"]) == declared | own
    assert _option_strings(subs.choices["rerun"]) == declared | own | {"--only"}
    # Every field a command-line user could set has a flag: only Python objects may lack one.
    assert set(RunSettings.model_fields) - set(setting_flags()) <= {
        "tools",
        "kinds",
        "tool_registry",
    }


@pytest.mark.parametrize("command", ["run", "demo", "resume", "rerun"])
def test_help_shows_every_declared_flag_with_its_description_and_default(command: str) -> None:
    proc = fanfold(command, "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    for name, flag in setting_flags().items():
        assert flag.name in text, flag.name
        if flag.metavar:
            assert f"{flag.name} {flag.metavar}" in text
        info = RunSettings.model_fields[name]
        description = " ".join((info.description or "").split()).replace("null", "none")
        assert description[:40] in text, (name, description)
    for old in OLD_FLAGS:
        if command not in ("resume", "rerun") or old != "--thread-id":
            assert old in text
    if command in ("resume", "rerun"):
        assert "(default: the saved run's)" in text
    else:
        model = cli.DEMO_MODEL if command == "demo" else "demo"
        assert f"(default: {model})" in text
        assert "(default: 8)" in text and "(default: optimist,skeptic,engineer)" in text
    assert "exit codes:" in text and "3 the model server" in text


async def _saved_settings(location: str, thread_id: str) -> dict[str, Any]:
    async with open_checkpointer(location) as saver:
        graph = compile_orchestrator(checkpointer=saver)
        snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        settings: dict[str, Any] = snapshot.values["settings"]
        return settings


def test_the_seven_new_flags_reach_the_run(tmp_path: Path) -> None:
    location = str(tmp_path / "runs.sqlite")
    proc = fanfold(
        "run",
        "alpha, beta",
        "--model",
        "demo:latency=0",
        "--planner-model",
        "demo:latency=0.01",
        "--max-steps",
        "1",
        "--max-tasks",
        "4",
        "--tool-timeout",
        "5",
        "--request-timeout",
        "7.5",
        "--start-jitter",
        "0",
        "--perspectives",
        "skeptic, engineer",
        "--checkpoint",
        location,
        "--thread-id",
        "seven",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    saved = asyncio.run(_saved_settings(location, "seven"))
    assert {k: saved[k] for k in SEVEN_NEW} == {
        "planner_model": "demo:latency=0.01",
        "max_steps": 1,
        "max_tasks": 4,
        "tool_timeout_s": 5.0,
        "request_timeout_s": 7.5,
        "start_jitter_s": 0.0,
        "perspectives": ["skeptic", "engineer"],
    }
    # --max-steps 1: the researchers call a tool first, so they hit the step bound.
    doc = json.loads(proc.stdout)
    errors = {r["task_id"]: (r["error"] or {}).get("type") for r in doc["results"]}
    assert errors["t1"] == errors["t2"] == "MaxStepsExceeded"
    # --max-tasks 3: the same plan (4 tasks) is now too large.
    small = fanfold("run", "alpha, beta", "--max-tasks", "3", "--json")
    line, small_doc = check_failure(small, 2, "PlanError")
    assert "4 tasks exceed max_tasks=3" in line
    # --tool-timeout none: an optional number takes `none`.
    none = fanfold("run", "alpha", "--tool-timeout", "none", "--model", "demo:latency=0")
    assert none.returncode == 0, none.stderr


def test_resume_keeps_the_saved_settings_and_overrides_only_the_flags_given() -> None:
    args = cli.build_parser().parse_args(["resume", "t", "--checkpoint", "x", "--max-steps", "4"])
    saved = RunSettings(model="demo:latency=0.3", max_concurrency=3, max_steps=9).to_json()
    settings = cli._settings(cli.setting_overrides(args), saved)
    assert (settings.model, settings.max_concurrency, settings.max_steps) == (
        "demo:latency=0.3",
        3,
        4,
    )
    assert settings.approve_plan is False  # a switch not given keeps the saved value


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--max-concurrency", "0", "--max-concurrency must be an integer >= 1, got 0"),
        ("--max-concurrency", "true", "--max-concurrency must be an integer >= 1, got 'true'"),
        ("--max-concurrency", "2.5", "--max-concurrency must be an integer >= 1, got '2.5'"),
        ("--max-retries", "nan", "--max-retries must be an integer >= 0 or none, got 'nan'"),
        ("--max-steps", "abc", "--max-steps must be an integer >= 1, got 'abc'"),
        ("--max-tasks", "-1", "--max-tasks must be an integer >= 1, got -1"),
        ("--task-timeout", "nan", "--task-timeout must be a number > 0 or none, got nan"),
        ("--task-timeout", "inf", "--task-timeout must be a number > 0 or none, got inf"),
        ("--request-timeout", "-inf", "--request-timeout must be a number > 0 or none, got -inf"),
        ("--tool-timeout", "0", "--tool-timeout must be a number > 0 or none, got 0.0"),
        ("--start-jitter", "NaN", "--start-jitter must be a number >= 0 and <= 60, got nan"),
        ("--start-jitter", "none", "--start-jitter must be a number >= 0 and <= 60, got 'none'"),
        ("--rps", "false", "--rps must be a number >= 0.001 or none, got 'false'"),
        ("--max-tokens", "1e3", "--max-tokens must be an integer >= 1 or none, got '1e3'"),
        ("--max-wall-time", "soon", "--max-wall-time must be a number > 0 or none, got 'soon'"),
        ("--policy", "quorum:0", "--policy must be one of settle, fail_fast or quorum:K"),
        ("--perspectives", ",", "--perspectives must be a non-empty list of known agent kind"),
        ("--model", "nosuch:model", "--model must be a model spec"),
        ("--planner-model", "", "--planner-model must be a model spec"),
        ("--workspace", "/no/such/folder", "--workspace must be an existing folder or none"),
    ],
)
def test_a_bad_flag_value_is_one_line_naming_the_flag(
    flag: str, value: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["run", "x", f"{flag}={value}", "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith("fanfold: ")
    assert needle in captured.err
    doc = json.loads(captured.out)
    assert doc["status"] == "failed" and doc["error"]["type"] == "BadInput"
    assert needle in doc["error"]["message"]


def test_every_bad_flag_is_named_on_the_one_line() -> None:
    proc = fanfold(
        "run", "x", "--max-concurrency", "0", "--max-steps", "many", "--rps", "inf", "--json"
    )
    line, doc = check_failure(proc, 2, "BadInput")
    assert re.fullmatch(
        r"fanfold: --max-concurrency must be .*, got 0; --max-steps must be .*, got 'many'; "
        r"--rps must be .*, got inf",
        line,
    ), line
    assert "Traceback" not in proc.stderr
