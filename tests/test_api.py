"""The run API without a planner: execute_task and execute_tasks_parallel."""

from __future__ import annotations

import pytest
from langchain_core.tools import tool

from fanfold import (
    PlanError,
    RunSettings,
    Task,
    TaskFailedError,
    execute_task,
    execute_tasks_parallel,
)
from tests.fakes import TaskScript, TaskScriptedModel


async def test_strings_become_tasks_and_results_come_back_in_input_order() -> None:
    scripts = {f"t{i}": TaskScript(latency=0.05 - 0.01 * i) for i in range(1, 5)}
    model = TaskScriptedModel(scripts=scripts)
    results = await execute_tasks_parallel(
        ["first", "second", "third", "fourth"],
        model=model,
        max_concurrency=4,
        settings=RunSettings(start_jitter_s=0),
    )
    assert [r.task_id for r in results] == ["t1", "t2", "t3", "t4"]
    assert all(r.status == "ok" for r in results)
    assert model.recorder.peak == 4
    assert "first" in model.recorder.prompts["t1"]


async def test_task_objects_with_dependencies_and_custom_tools() -> None:
    @tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        return f"value-of-{key}"

    scripts = {"a": TaskScript(), "b": TaskScript()}
    model = TaskScriptedModel(scripts=scripts)
    tasks = [
        Task(id="a", description="x", tools=["lookup"]),
        Task(id="b", description="y", depends_on=["a"]),
    ]
    results = await execute_tasks_parallel(tasks, model=model, tools=[lookup])
    assert [r.status for r in results] == ["ok", "ok"]
    assert "[a] output of a" in model.recorder.prompts["b"]
    # Each subagent is offered only its allowed tools; `None` means every tool.
    assert model.recorder.tools["a"] == ["lookup"]
    assert model.recorder.tools["b"] == ["calculator", "current_time", "lookup", "text_stats"]


async def test_execute_task_returns_a_failed_result_instead_of_raising() -> None:
    model = TaskScriptedModel(scripts={"t1": TaskScript(behaviour="raise")})
    result = await execute_task("do it", model=model)
    assert result.status == "failed"
    assert result.error is not None and "scripted failure" in result.error.message
    assert result.ended_at is not None and result.started_at is not None


async def test_execute_task_times_out_into_a_result() -> None:
    model = TaskScriptedModel(scripts={"t1": TaskScript(behaviour="hang")})
    result = await execute_task("hang", model=model, task_timeout_s=0.2)
    assert result.status == "timed_out"
    assert result.error is not None and result.error.type == "TaskTimeout"


async def test_fail_fast_raises_with_finished_results() -> None:
    scripts = {"t1": TaskScript(latency=0.0), "t2": TaskScript(latency=0.05, behaviour="raise")}
    model = TaskScriptedModel(scripts=scripts)
    with pytest.raises(TaskFailedError) as info:
        await execute_tasks_parallel(["a", "b"], model=model, policy="fail_fast")
    assert [(r.task_id, r.status) for r in info.value.results] == [("t1", "ok"), ("t2", "failed")]


@pytest.mark.parametrize(
    ("tasks", "needle"),
    [
        ([Task(id="a", description="x", depends_on=["a"])], "depends on itself"),
        ([Task(id="a", description="x", depends_on=["zz"])], "unknown task"),
        ([Task(id="a", description="x", tools=["shell"])], "unknown tool"),
        ([], "no tasks"),
    ],
)
async def test_bad_tasks_raise_plan_error(tasks: list[Task], needle: str) -> None:
    model = TaskScriptedModel(scripts={})
    with pytest.raises(PlanError, match=needle):
        await execute_tasks_parallel(tasks, model=model)


async def test_items_must_be_tasks_or_strings() -> None:
    with pytest.raises(TypeError, match="must be a Task or a string"):
        await execute_tasks_parallel([42], model=TaskScriptedModel(scripts={}))  # type: ignore[list-item]
