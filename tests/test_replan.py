"""Re-planning: later rounds add tasks that build on earlier results, bounded by max_rounds."""

from __future__ import annotations

import pytest

from fanfold import PlanError, RunSettings, arun
from tests.fakes import TaskScript, TaskScriptedModel

FIRST = {"tasks": [{"id": "a", "description": "first"}, {"id": "b", "description": "second"}]}


async def test_a_second_round_builds_on_the_first_and_the_planner_then_finishes() -> None:
    model = TaskScriptedModel(
        scripts={k: TaskScript() for k in ("a", "b", "c")},
        plan=FIRST,
        extensions=[
            {"tasks": [{"id": "c", "description": "combine", "depends_on": ["a", "b"]}]},
            {"tasks": [], "rationale": "done"},
        ],
    )
    events: list[dict] = []
    out = await arun("x", settings=RunSettings(model=model, max_rounds=5), on_event=events.append)
    assert out.plan is not None
    assert [(t.id, t.round) for t in out.plan.tasks] == [("a", 1), ("b", 1), ("c", 2)]
    assert [(r.task_id, r.status) for r in out.results] == [("a", "ok"), ("b", "ok"), ("c", "ok")]
    # The round-2 task saw the round-1 results it depends on.
    assert "[a] output of a" in model.recorder.prompts["c"]
    assert "[b] output of b" in model.recorder.prompts["c"]
    assert model.extensions == []  # asked twice: once to add `c`, once more, then it finished
    assert out.answer == "answer: a=ok, b=ok, c=ok"
    assert [e["tasks"] for e in events if e["fanfold"] == "plan_ready"] == [2, 3]


async def test_max_rounds_stops_a_planner_that_always_adds_work() -> None:
    extensions = [
        {"tasks": [{"id": f"more{i}", "description": "more", "depends_on": ["a"]}]}
        for i in range(5)
    ]
    scripts = {k: TaskScript() for k in ("a", "b", "more0", "more1", "more2")}
    model = TaskScriptedModel(scripts=scripts, plan=FIRST, extensions=extensions)
    out = await arun("x", settings=RunSettings(model=model, max_rounds=3))
    assert out.plan is not None
    assert [(t.id, t.round) for t in out.plan.tasks] == [
        ("a", 1),
        ("b", 1),
        ("more0", 2),
        ("more1", 3),
    ]
    assert len(model.extensions) == 3  # rounds 2 and 3 only


async def test_default_is_one_round_no_replanning() -> None:
    model = TaskScriptedModel(scripts={"a": TaskScript(), "b": TaskScript()}, plan=FIRST)
    out = await arun("x", settings=RunSettings(model=model))  # no extension scripted: never asked
    assert [r.task_id for r in out.results] == ["a", "b"]


async def test_a_reused_id_gets_a_repair_round_then_plan_error() -> None:
    reused = {"tasks": [{"id": "a", "description": "again"}]}
    model = TaskScriptedModel(
        scripts={"a": TaskScript(), "b": TaskScript()}, plan=FIRST, extensions=[reused, reused]
    )
    with pytest.raises(PlanError, match="duplicate task ids"):
        await arun("x", settings=RunSettings(model=model, max_rounds=2))


async def test_a_stopped_run_does_not_replan() -> None:
    scripts = {"a": TaskScript(behaviour="raise"), "b": TaskScript()}
    model = TaskScriptedModel(scripts=scripts, plan=FIRST, extensions=[])
    out = await arun("x", settings=RunSettings(model=model, max_rounds=2, policy="quorum:1"))
    # Quorum met by b: the run stops; asking for more tasks would be wasted.
    assert out.status == "ok"
    assert [r.task_id for r in out.results] == ["a", "b"]
