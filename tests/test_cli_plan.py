"""Plans on the command line: `--plan FILE` runs a given plan without the planner;
`--approve` shows the plan, and says why an edit or an answer is refused.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fanfold import Plan, RunSettings, arun
from tests.test_cli import check_failure, failure_lines, fanfold
from tests.test_cli_failures import interrupt

LIST_PLAN: list[Any] = [
    {"id": "math", "description": "estimate 6 * 7", "kind": "analyst"},
    "Summarise tea",
    {"id": "both", "description": "Compare the two", "depends_on": ["math", "t2"]},
]
OBJECT_PLAN = {
    "tasks": [
        {"id": "a", "description": "estimate 2 * 21", "kind": "analyst"},
        {"id": "b", "description": "Write it up", "kind": "writer", "depends_on": ["a"]},
    ],
    "rationale": "one sum, then a note",
}


def _calls(log: Path) -> Counter[str]:
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return Counter(json.loads(line)["who"] for line in lines)


# --- --plan ------------------------------------------------------------------------------


def test_plan_file_with_a_task_list_runs_without_the_planner(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(LIST_PLAN))
    log = tmp_path / "calls.jsonl"
    proc = fanfold("run", "--plan", str(plan), "--model", f"demo:latency=0,log={log}", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "ok"
    assert [t["id"] for t in doc["plan"]["tasks"]] == ["math", "t2", "both"]
    assert doc["plan"]["tasks"][1]["description"] == "Summarise tea"
    assert [r["task_id"] for r in doc["results"]] == ["math", "t2", "both"]
    assert "calculator -> 42" in doc["results"][0]["output"]
    calls = _calls(log)
    assert calls["planner"] == 0 and calls["synthesizer"] == 1
    assert "plan: 3 tasks in 2 generations" in proc.stderr


def test_plan_file_with_a_plan_object_and_a_request(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(OBJECT_PLAN))
    proc = fanfold("run", "Note the sum", "--plan", str(plan), "--model", "demo:latency=0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[demo model] Answer to: Note the sum")
    assert "status=ok tasks=2" in proc.stdout
    # Without a request, the plan's rationale says what the run is for.
    alone = fanfold("run", "--plan", str(plan), "--model", "demo:latency=0", "--json")
    assert alone.returncode == 0, alone.stderr
    doc = json.loads(alone.stdout)
    assert doc["answer"].startswith("[demo model] Answer to: one sum, then a note")
    assert doc["plan"]["rationale"] == "one sum, then a note"


@pytest.mark.parametrize(
    ("content", "error_type", "needle"),
    [
        (None, "BadInput", "plan file `{path}` does not exist"),
        ("folder", "BadInput", "plan file `{path}` is a folder"),
        ('{"tasks": [', "BadInput", "plan file `{path}` is not valid JSON"),
        ('{"steps": []}', "BadInput", 'must hold a JSON task list or a plan object {"tasks"'),
        ("42", "BadInput", "must hold a JSON task list"),
        ("[]", "BadInput", "is not a valid plan: the plan has no tasks"),
        (
            '[{"id": "a", "description": "x", "depends_on": ["a"]}]',
            "BadInput",
            "is not a valid plan: task `a` depends on itself",
        ),
        ('[{"id": "a"}]', "BadInput", "is not a valid plan: tasks.0.description: Field required"),
        (
            '[{"id": "a", "description": "x", "kind": "wizard"}]',
            "PlanError",
            "the plan in `{path}` is invalid: task `a` has unknown agent kind `wizard`",
        ),
    ],
)
def test_a_bad_plan_file_is_exit_2_naming_the_file(
    tmp_path: Path, content: str | None, error_type: str, needle: str
) -> None:
    path = tmp_path / "plan.json"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    proc = fanfold("run", "--plan", str(path), "--json")
    line, doc = check_failure(proc, 2, error_type)
    assert needle.replace("{path}", str(path)) in line
    assert doc is not None and doc["results"] == []


# --- --approve ---------------------------------------------------------------------------


def _approve(stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return fanfold(
        "run", "tea, coffee", "--model", "demo:latency=0", "--approve", *extra, stdin=stdin
    )


def test_a_refused_edit_says_why_and_is_asked_again(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "x", "description": "a", "depends_on": ["ghost"]}]))
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"id": "solo", "description": "estimate 6 * 7"}]))
    proc = _approve(f"e {bad}\ne {good}\n", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (
        "the edited plan was refused: task `x` depends on unknown task(s) ['ghost']" in proc.stderr
    )
    assert proc.stderr.count("accept, reject [reason] or edit FILE.json?") == 2
    assert [r["task_id"] for r in json.loads(proc.stdout)["results"]] == ["solo"]


def test_a_missing_or_broken_edit_file_is_asked_again_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("[{not json")
    missing = tmp_path / "missing.json"
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"tasks": [{"id": "solo", "description": "estimate 6 * 7"}]}))
    answers = f"maybe\ne\ne {missing}\ne {broken}\ne {good}\n"
    proc = _approve(answers, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and not failure_lines(proc.stderr)
    assert "`maybe` is no answer" in proc.stderr
    assert "edit needs a file: e FILE.json" in proc.stderr
    assert f"plan file `{missing}` does not exist; answer again" in proc.stderr
    assert f"plan file `{broken}` is not valid JSON" in proc.stderr
    assert proc.stderr.count("accept, reject [reason] or edit FILE.json?") == 5
    assert [r["task_id"] for r in json.loads(proc.stdout)["results"]] == ["solo"]


def test_the_rejection_reason_is_printed() -> None:
    proc = _approve("r too costly today\n")
    assert proc.returncode == 0, proc.stderr
    assert "plan rejected: too costly today" in proc.stderr
    assert proc.stdout.startswith("plan rejected: too costly today")
    assert "status=rejected" in proc.stdout
    as_json = _approve("r too costly\n", "--json")
    doc = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and doc["status"] == "rejected"
    assert doc["error"] == {"type": "PlanRejected", "message": "too costly", "exception": None}


def test_no_answer_rejects_the_plan() -> None:
    proc = _approve("", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["error"]["message"] == "no answer on stdin"


def test_three_refused_edits_end_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "a", "description": "x", "depends_on": ["a"]}]))
    proc = _approve(f"e {bad}\n" * 3, "--json")
    line, _ = check_failure(proc, 2, "PlanError")
    assert "the edited plan is still invalid: task `a` depends on itself" in line
    assert proc.stderr.count("the edited plan was refused") == 2


def test_ctrl_c_at_the_approval_prompt_exits_130_and_resume_asks_again(tmp_path: Path) -> None:
    location = str(tmp_path / "runs.sqlite")
    code, out, err = interrupt(
        ["run", "tea, coffee", "--model", "demo:latency=0", "--approve"]
        + ["--checkpoint", location, "--thread-id", "ask"],
        "edit FILE.json?",
        stdin=subprocess.PIPE,  # open, never written: the prompt waits
    )
    assert code == 130, err
    assert failure_lines(err) == [
        f"fanfold: interrupted; continue with `fanfold resume ask --checkpoint {location}`"
    ]
    assert "Traceback" not in err and "Fatal Python error" not in err
    # The run waits at the approval in the checkpoint: resume shows the plan and asks.
    resumed = fanfold("resume", "ask", "--checkpoint", location, "--json", stdin="a\n")
    assert resumed.returncode == 0, resumed.stderr
    assert "t1 (researcher): tea" in resumed.stderr and "edit FILE.json? a" in resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["status"] == "ok" and len(doc["results"]) == 4


# --- the Python API: handler(plan) still works, handler(plan, problems=...) is told why -----


async def test_a_handler_that_takes_problems_is_told_why_an_edit_was_refused() -> None:
    seen: list[list[str]] = []
    answers: list[Any] = [
        {"action": "edit", "tasks": [{"id": "x", "description": "a", "depends_on": ["ghost"]}]},
        "accept",
    ]

    def review(plan: Plan, problems: list[str] | None = None) -> Any:
        seen.append(list(problems or []))
        return answers.pop(0)

    settings = RunSettings(model="demo:latency=0", approve_plan=True)
    out = await arun("tea, coffee", settings=settings, on_approval=review)
    assert out.status == "ok"
    assert seen[0] == []
    assert len(seen[1]) == 1 and "depends on unknown task(s) ['ghost']" in seen[1][0]

    plain: list[Plan] = []

    def old_style(plan: Plan) -> str:  # one argument, as before
        plain.append(plan)
        return "accept"

    assert (await arun("tea", settings=settings, on_approval=old_style)).status == "ok"
    assert len(plain) == 1


def test_a_plan_file_nested_too_deeply_is_bad_input(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    proc = fanfold("run", "--plan", str(deep), "--json")
    line, doc = check_failure(proc, 2, "BadInput")
    assert "nests too deeply" in line and "Traceback" not in proc.stderr
