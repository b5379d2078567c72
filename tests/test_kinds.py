"""Custom subagent kinds: prompt, model, tools and timeout, assigned by the planner."""

from __future__ import annotations

from fanfold import RunSettings, arun
from fanfold.nodes.kinds import AgentKind
from tests.fakes import TaskScript, TaskScriptedModel


async def test_the_planner_assigns_a_custom_kind_with_its_own_model_and_timeout() -> None:
    plan = {
        "tasks": [
            {"id": "facts", "description": "gather", "kind": "researcher"},
            {"id": "poem", "description": "write a poem", "kind": "poet", "depends_on": ["facts"]},
            {"id": "slow", "description": "hangs", "kind": "poet"},
        ]
    }
    main = TaskScriptedModel(scripts={"facts": TaskScript()}, plan=plan)
    poet_model = TaskScriptedModel(
        scripts={"poem": TaskScript(), "slow": TaskScript(behaviour="hang")}
    )
    poet = AgentKind(
        name="poet",
        system_prompt="You write short poems.",
        description="Writes verse.",
        tools=[],
        model=poet_model,
        timeout_s=0.3,
    )
    out = await arun("x", settings=RunSettings(model=main, kinds=[poet]))
    status = {r.task_id: r.status for r in out.results}
    assert status == {"facts": "ok", "poem": "ok", "slow": "timed_out"}
    # The poet's tasks ran on the poet's model, with no tools; the rest on the run's.
    assert set(poet_model.recorder.calls) == {"poem", "slow"}
    assert set(main.recorder.calls) == {"facts"}
    assert poet_model.recorder.tools["poem"] == []
    assert "[facts] output of facts" in poet_model.recorder.prompts["poem"]


async def test_the_planner_is_told_about_custom_kinds() -> None:
    plan = {"tasks": [{"id": "a", "description": "x", "kind": "poet"}]}
    model = TaskScriptedModel(scripts={"a": TaskScript()}, plan=plan)
    poet = AgentKind(name="poet", system_prompt="Verse.", description="Writes verse.")
    out = await arun("x", settings=RunSettings(model=model, kinds=[poet]))
    assert out.results[0].status == "ok"
    [(messages, _)] = model.recorder.planner_calls
    assert "- poet: Writes verse." in str(messages[0].content)
