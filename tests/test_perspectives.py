"""The perspectives preset: the same request to several kinds, merged with attribution."""

from __future__ import annotations

import json
from pathlib import Path

from fanfold import RunSettings
from fanfold.graphs.perspectives import compile_perspectives
from fanfold.nodes.kinds import AgentKind
from tests.fakes import TaskScript, TaskScriptedModel

ROOT = Path(__file__).resolve().parent.parent


async def test_three_kinds_answer_in_parallel_and_the_answer_keeps_who_said_what() -> None:
    graph = compile_perspectives()
    scripts = {k: TaskScript(latency=0.05) for k in ("optimist", "skeptic", "engineer")}
    model = TaskScriptedModel(scripts=scripts)
    out = await graph.ainvoke(
        {"request": "Should we rewrite it in Rust?"},
        context=RunSettings(model=model, start_jitter_s=0),
    )
    assert [t.id for t in out["plan"].tasks] == ["optimist", "skeptic", "engineer"]
    assert all(t.description == "Should we rewrite it in Rust?" for t in out["plan"].tasks)
    assert model.recorder.peak == 3  # all three at once
    assert out["views"] == {k: f"output of {k}:" for k in ("optimist", "skeptic", "engineer")}
    # The fake's merge lists each perspective with its status: attribution survives.
    assert out["answer"] == "answer: optimist=ok, skeptic=ok, engineer=ok"
    # Each perspective ran with its own kind's system prompt.
    for kind in ("optimist", "skeptic", "engineer"):
        assert f"Task {kind} ({kind}):" in model.recorder.prompts[kind]


async def test_custom_perspectives_and_the_demo_model() -> None:
    graph = compile_perspectives()
    lawyer = AgentKind(name="lawyer", system_prompt="You weigh legal risk.", tools=[])
    settings = RunSettings(
        model="demo:latency=0.01", kinds=[lawyer], perspectives=["skeptic", "lawyer"]
    )
    out = await graph.ainvoke({"request": "Ship on Friday?"}, context=settings)
    assert list(out["views"]) == ["skeptic", "lawyer"]
    assert out["views"]["skeptic"].startswith("[demo model] As the skeptic:")
    assert "- skeptic (ok):" in out["answer"] and "- lawyer (ok):" in out["answer"]


def test_perspectives_is_served_to_studio() -> None:
    graphs = json.loads((ROOT / "langgraph.json").read_text())["graphs"]
    assert graphs["perspectives"] == "fanfold.graphs.perspectives:graph"
