"""Delegation: nested fan-outs under one run-wide limit, with a depth guard."""

from __future__ import annotations

from fanfold import RunSettings, Task, arun, execute_tasks_parallel
from tests.fakes import TaskScript, TaskScriptedModel


def _scripts(parents: int, children: int, latency: float = 0.03) -> dict[str, TaskScript]:
    scripts: dict[str, TaskScript] = {}
    for p in range(1, parents + 1):
        subtasks = [f"part {c} of p{p}" for c in range(1, children + 1)]
        scripts[f"p{p}"] = TaskScript(latency=latency, call=("delegate", {"tasks": subtasks}))
        for c in range(1, children + 1):
            scripts[f"p{p}.{c}"] = TaskScript(latency=latency)
    return scripts


async def test_nested_fan_out_shares_one_run_wide_limit() -> None:
    model = TaskScriptedModel(scripts=_scripts(3, 3))
    tasks = [Task(id=f"p{p}", description=f"big job {p}") for p in range(1, 4)]
    settings = RunSettings(max_depth=2, start_jitter_s=0)
    results = await execute_tasks_parallel(tasks, model=model, max_concurrency=3, settings=settings)
    assert [r.status for r in results] == ["ok"] * 3
    # 3 parents x 3 children, each child a subagent of its own: LangGraph alone would
    # allow 3 x 3 = 9 model calls at once; the run-wide limit holds them to 3.
    assert model.recorder.peak <= 3
    assert model.recorder.peak >= 2  # it really ran in parallel
    children = {f"p{p}.{c}" for p in range(1, 4) for c in range(1, 4)}
    assert children <= set(model.recorder.calls)
    for r in results:
        assert [s.task_id for s in r.subtasks] == [f"{r.task_id}.{c}" for c in range(1, 4)]
        assert all(s.status == "ok" for s in r.subtasks)
        # Parent's two calls plus each child's one, 15 tokens a call.
        assert r.usage.total_tokens == 2 * 15 + 3 * 15
        # The parent's model saw every child's output.
        assert f"output of {r.task_id}.3" in r.output
    # Children are offered no `delegate`: the depth limit leaves it out.
    assert "delegate" in model.recorder.tools["p1"]
    assert "delegate" not in model.recorder.tools["p1.1"]


async def test_run_tokens_include_delegated_work() -> None:
    model = TaskScriptedModel(
        scripts=_scripts(1, 2), plan={"tasks": [{"id": "p1", "description": "big"}]}
    )
    out = await arun("x", settings=RunSettings(model=model, max_depth=2))
    # planner + parent (2 calls) + 2 children + synthesizer, 15 tokens each.
    assert out.metrics.tokens.total_tokens == 15 * 6
    assert [s.task_id for s in out.results[0].subtasks] == ["p1.1", "p1.2"]


async def test_past_the_depth_limit_delegate_is_refused() -> None:
    model = TaskScriptedModel(scripts=_scripts(1, 2))
    results = await execute_tasks_parallel(
        [Task(id="p1", description="big")], model=model, settings=RunSettings()
    )
    (result,) = results
    # max_depth=1 (the default): not offered, and a call to it is an unknown tool.
    assert "delegate" not in model.recorder.tools["p1"]
    assert result.status == "ok" and result.tool_errors == 1
    assert "unknown tool `delegate`" in result.output
    assert "p1.1" not in model.recorder.calls
    assert result.subtasks == []
