"""The two subagent shapes: one node (`task` granularity) and a subgraph (`step`).

They run the same step functions, so they must give the same results and events.
"""

from __future__ import annotations

from typing import Any

import pytest

from fanfold import RunSettings, arun
from fanfold.graphs.orchestrator import compile_orchestrator
from fanfold.nodes.domain import Plan, SubagentResult
from tests.fakes import TaskScript, TaskScriptedModel, dag_plan, scripts_for

SAME = ("task_id", "status", "output", "error", "attempts", "usage", "tool_calls", "tool_errors")


def _plan() -> dict[str, Any]:
    plan = dag_plan(8)
    extra = [
        {"id": "bad_tool", "description": "calls a tool it may not use", "tools": ["calculator"]},
        {"id": "boom", "description": "its model call fails", "tools": []},
        {"id": "after_boom", "description": "needs boom", "depends_on": ["boom"], "tools": []},
    ]
    plan["tasks"].extend(extra)
    return plan


def _scripts(plan: dict[str, Any]) -> dict[str, TaskScript]:
    return scripts_for(
        plan,
        bad_tool=TaskScript(call=("write_file", {"path": "x", "content": "y"})),
        boom=TaskScript(behaviour="raise"),
        after_boom=TaskScript(),
    )


async def _run(granularity: str) -> tuple[list[SubagentResult], list[dict[str, Any]], Any]:
    plan = _plan()
    model = TaskScriptedModel(scripts=_scripts(plan))
    events: list[dict[str, Any]] = []
    graph = compile_orchestrator(
        synthesize_answer=False,
        checkpoint_granularity=granularity,  # type: ignore[arg-type]
    )
    settings = RunSettings(model=model, max_retries=0, max_concurrency=4)
    out = await arun(
        "", settings=settings, plan=Plan.model_validate(plan), graph=graph, on_event=events.append
    )
    return out.results, events, model.recorder


def _view(r: SubagentResult) -> dict[str, Any]:
    data = r.model_dump(include=set(SAME))
    if data["error"]:
        data["error"].pop("traceback", None)
    return data


async def test_one_node_and_subgraph_give_the_same_results_and_events() -> None:
    node_results, node_events, node_rec = await _run("task")
    graph_results, graph_events, graph_rec = await _run("step")

    assert [_view(r) for r in node_results] == [_view(r) for r in graph_results]
    by_id = {r.task_id: r for r in node_results}
    # The cases the loop must get right, each of which the subgraph also shows.
    assert by_id["t01"].status == "ok" and by_id["t01"].tool_calls == 1
    assert "1007" in by_id["t01"].output  # the tool's answer reached the model
    assert by_id["bad_tool"].tool_errors == 1 and by_id["bad_tool"].status == "ok"
    assert "unknown tool" in by_id["bad_tool"].output
    assert by_id["boom"].status == "failed" and by_id["boom"].error is not None
    assert by_id["after_boom"].status == "skipped"
    assert node_rec.calls == graph_rec.calls  # the same model calls per task

    def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return sorted((e["fanfold"], e.get("task_id", "")) for e in events if "task_id" in e)

    assert kinds(node_events) == kinds(graph_events)
    assert ("task_started", "t01") in kinds(node_events)


@pytest.mark.parametrize(("granularity", "subgraphs"), [("task", 0), ("step", 1)])
def test_only_step_granularity_embeds_a_subgraph(granularity: str, subgraphs: int) -> None:
    graph = compile_orchestrator(checkpoint_granularity=granularity)  # type: ignore[arg-type]
    assert len(list(graph.get_subgraphs())) == subgraphs
    assert "subagent" in graph.get_graph().nodes
