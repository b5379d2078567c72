"""Plan approval: accept, edit or reject the plan before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from fanfold import Plan, PlanError, RunSettings, arun
from fanfold.graphs.orchestrator import compile_orchestrator
from fanfold.nodes.approve import parse_decision

ROOT = Path(__file__).resolve().parent.parent
DEMO = RunSettings(model="demo:latency=0.01", approve_plan=True)


async def test_accept_runs_the_planned_tasks() -> None:
    seen: list[Plan] = []

    def decide(plan: Plan) -> str:
        seen.append(plan)
        return "accept"

    out = await arun("tea, coffee", settings=DEMO, on_approval=decide)
    assert [t.id for t in seen[0].tasks] == ["t1", "t2", "compare", "report"]
    assert [r.task_id for r in out.results] == ["t1", "t2", "compare", "report"]
    assert out.status == "ok" and len(seen) == 1


async def test_edit_replaces_the_plan_and_an_invalid_edit_is_asked_again() -> None:
    answers: list[Any] = [
        {"action": "edit", "tasks": [{"id": "x", "description": "a", "depends_on": ["ghost"]}]},
        {"action": "edit", "tasks": [{"id": "solo", "description": "estimate 6 * 7"}]},
    ]
    asked: list[Plan] = []

    async def decide(plan: Plan) -> Any:  # an async handler works too
        asked.append(plan)
        return answers.pop(0)

    out = await arun("tea, coffee", settings=DEMO, on_approval=decide)
    assert len(asked) == 2 and not answers
    assert [(r.task_id, r.output) for r in out.results] == [
        ("solo", "[demo model] estimate 6 * 7: calculator -> 42")
    ]
    assert out.plan is not None and [t.id for t in out.plan.tasks] == ["solo"]


async def test_reject_ends_the_run_without_running_anything() -> None:
    out = await arun(
        "tea, coffee",
        settings=DEMO,
        on_approval=lambda plan: {"action": "reject", "reason": "too broad"},
    )
    assert out.status == "rejected"
    assert out.results == [] and out.answer == ""
    assert out.error is not None and out.error.type == "PlanRejected"
    assert out.error.message == "too broad"


async def test_three_invalid_edits_raise_plan_error() -> None:
    bad = {"action": "edit", "tasks": [{"id": "a", "description": "x", "depends_on": ["a"]}]}
    with pytest.raises(PlanError, match="depends on itself"):
        await arun("tea, coffee", settings=DEMO, on_approval=lambda plan: bad)


async def test_approve_plan_needs_a_handler() -> None:
    with pytest.raises(ValueError, match="on_approval"):
        await arun("tea", settings=DEMO)


async def test_the_graph_itself_pauses_and_resumes_with_command() -> None:
    graph = compile_orchestrator(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "approval"}}
    paused = await graph.ainvoke({"request": "tea, coffee"}, config, context=DEMO)
    (interrupt,) = paused["__interrupt__"]
    assert [t["id"] for t in interrupt.value["plan"]["tasks"]] == ["t1", "t2", "compare", "report"]
    done = await graph.ainvoke(Command(resume="accept"), config, context=DEMO)
    assert [r.task_id for r in done["results"]] == ["t1", "t2", "compare", "report"]


async def test_a_second_run_on_a_thread_starts_clean() -> None:
    graph = compile_orchestrator(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "reused"}}
    settings = RunSettings(model="demo:latency=0.01")
    await graph.ainvoke({"request": "tea and coffee"}, config, context=settings)
    second = await graph.ainvoke({"request": "alpha, beta and gamma"}, config, context=settings)
    assert [t.description for t in second["plan"].tasks[:3]] == ["alpha", "beta", "gamma"]
    assert [r.task_id for r in second["results"]] == [t.id for t in second["plan"].tasks]
    assert "tea" not in second["answer"]
    # This run's tokens only: the same request on a fresh thread costs exactly as much.
    fresh = await graph.ainvoke(
        {"request": "alpha, beta and gamma"},
        {"configurable": {"thread_id": "fresh"}},
        context=settings,
    )
    assert second["metrics"].tokens == fresh["metrics"].tokens


@pytest.mark.parametrize(
    ("value", "action"),
    [
        (True, "accept"),
        ("accept", "accept"),
        ({"action": "accept"}, "accept"),
        (False, "reject"),
        ({"action": "reject", "reason": "r"}, "reject"),
        ({"action": "edit", "tasks": []}, "edit"),
    ],
)
def test_parse_decision_forms(value: Any, action: str) -> None:
    assert parse_decision(value)[0] == action


def test_parse_decision_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="unrecognised plan decision"):
        parse_decision({"action": "maybe"})


def _cli(stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fanfold",
            "run",
            "tea, coffee",
            "--approve",
            "--json",
            *extra,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_cli_approve_accept_reject_and_edit(tmp_path: Path) -> None:
    accepted = _cli("a\n")
    assert accepted.returncode == 0, accepted.stderr
    assert "t1 (researcher): tea" in accepted.stderr
    assert len(json.loads(accepted.stdout)["results"]) == 4

    rejected = _cli("r too costly\n")
    doc = json.loads(rejected.stdout)
    assert rejected.returncode == 0
    assert doc["status"] == "rejected" and doc["error"]["message"] == "too costly"

    edit = tmp_path / "plan.json"
    edit.write_text(json.dumps([{"id": "solo", "description": "estimate 6 * 7"}]))
    edited = _cli(f"what?\ne {edit}\n")
    doc = json.loads(edited.stdout)
    assert [r["task_id"] for r in doc["results"]] == ["solo"]
    assert edited.stderr.count("accept, reject") == 2  # the nonsense answer was asked again
