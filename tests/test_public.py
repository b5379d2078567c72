"""What users see: the public imports, the drawn graphs, langgraph.json."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
from langgraph.graph.state import CompiledStateGraph

import fanfold

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = Path(__file__).parent / "snapshots"


def test_public_names_import() -> None:
    from fanfold import Task, execute_task, execute_tasks_parallel
    from fanfold.graphs.orchestrator import build_orchestrator

    assert callable(build_orchestrator) and callable(execute_task)
    assert callable(execute_tasks_parallel) and Task(id="a", description="b").kind == "general"
    for name in fanfold.__all__:
        assert getattr(fanfold, name) is not None


def _check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("FANFOLD_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; FANFOLD_UPDATE_SNAPSHOTS=1 rewrites it"


def test_orchestrator_mermaid_shows_the_fan_out() -> None:
    from fanfold.graphs.orchestrator import graph

    text = graph.get_graph().draw_mermaid()
    assert "planner --> approve;" in text
    assert "approve -. &nbsp;fan-out&nbsp; .-> subagent;" in text
    assert "approve -. &nbsp;rejected&nbsp; .-> __end__;" in text
    assert "reducer -. &nbsp;fan-out&nbsp; .-> subagent;" in text
    assert "subagent --> reducer;" in text
    _check_snapshot("orchestrator.mmd", text)


def test_subagent_mermaid_is_a_react_loop() -> None:
    from fanfold.graphs.subagent import graph

    text = graph.get_graph().draw_mermaid()
    assert "act -.-> run_tools;" in text and "run_tools --> act;" in text
    _check_snapshot("subagent.mmd", text)


def test_every_graph_in_langgraph_json_is_compiled() -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    assert {"orchestrator", "subagent"} <= set(config["graphs"])
    for name, ref in config["graphs"].items():
        module, _, attr = ref.partition(":")
        assert module.startswith("fanfold."), ref  # the installed name, not a file path
        obj = getattr(importlib.import_module(module), attr)
        assert isinstance(obj, CompiledStateGraph), name
        assert obj.name == name


@pytest.mark.parametrize("name", ["orchestrator", "subagent"])
def test_graph_schemas_are_json(name: str) -> None:
    module = importlib.import_module(f"graphs.{name}")
    graph = module.graph
    assert graph.get_input_jsonschema()["type"] == "object"
    assert graph.get_output_jsonschema()["type"] == "object"
    assert "model" in graph.get_context_jsonschema()["properties"]


def test_draw_png_with_the_graphviz_extra_or_a_clear_import_error() -> None:
    from fanfold.graphs.orchestrator import graph

    try:
        import pygraphviz  # noqa: F401
    except ImportError:
        # Without the optional `graphviz` extra LangGraph says what is missing.
        with pytest.raises(ImportError, match="pygraphviz"):
            graph.get_graph().draw_png()
        return
    png = graph.get_graph().draw_png()
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG") and len(png) > 10_000
