"""Every subagent's runs are attributable by any LangChain callback handler."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.outputs import LLMResult

from fanfold import RunSettings, arun
from tests.fakes import TaskScript, TaskScriptedModel


class Recorder(AsyncCallbackHandler):
    """Records chat-model and tool runs with their names, tags, metadata and tokens."""

    def __init__(self) -> None:
        self.model_runs: dict[UUID, dict[str, Any]] = {}
        self.tool_runs: list[dict[str, Any]] = []
        self.tokens: dict[str, int] = defaultdict(int)

    async def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, **kw: Any
    ) -> None:
        self.model_runs[run_id] = {
            "name": kw.get("name"),
            "tags": kw.get("tags") or [],
            "metadata": kw.get("metadata") or {},
        }

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kw: Any) -> None:
        run = self.model_runs[run_id]
        task = run["metadata"].get("fanfold_task_id", "<none>")
        for gen in response.generations[0]:
            usage = getattr(gen.message, "usage_metadata", None) or {}  # type: ignore[attr-defined]
            self.tokens[task] += usage.get("total_tokens", 0)

    async def on_tool_start(
        self, serialized: Any, input_str: str, *, run_id: UUID, **kw: Any
    ) -> None:
        self.tool_runs.append(
            {
                "name": kw.get("name") or serialized.get("name"),
                "tags": kw.get("tags") or [],
                "metadata": kw.get("metadata") or {},
            }
        )


async def test_subagent_runs_carry_name_tags_and_metadata() -> None:
    plan = {
        "tasks": [
            {"id": "a", "description": "x", "kind": "analyst", "tools": ["calculator"]},
            {"id": "b", "description": "y", "kind": "researcher", "tools": ["calculator"]},
            {"id": "c", "description": "z", "kind": "general", "depends_on": ["a"]},
        ]
    }
    scripts = {
        "a": TaskScript(expression="2 + 2"),
        "b": TaskScript(expression="3 * 3"),
        "c": TaskScript(),
    }
    model = TaskScriptedModel(scripts=scripts, plan=plan)
    rec = Recorder()
    out = await arun(
        "x", settings=RunSettings(model=model, max_concurrency=1), config={"callbacks": [rec]}
    )
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in rec.model_runs.values():
        if "fanfold_task_id" in run["metadata"]:
            by_task[run["metadata"]["fanfold_task_id"]].append(run)
    assert set(by_task) == {"a", "b", "c"}
    for task_id, runs in by_task.items():
        kind = next(t["kind"] for t in plan["tasks"] if t["id"] == task_id)
        for run in runs:
            assert run["name"] == f"subagent:{task_id}"
            assert "fanfold" in run["tags"] and kind in run["tags"]
            assert run["metadata"]["fanfold_depth"] == 1
    # a and b are sent in the first window, c (which needs a) in the second.
    assert [by_task[t][0]["metadata"]["fanfold_round"] for t in ("a", "b", "c")] == [1, 1, 2]
    # Tokens per subagent, as a callback handler sees them, equal each result's usage.
    for r in out.results:
        assert rec.tokens[r.task_id] == r.usage.total_tokens
    tools = [t for t in rec.tool_runs if t["name"] == "calculator"]
    assert {t["metadata"]["fanfold_task_id"] for t in tools} == {"a", "b"}
    assert all("fanfold" in t["tags"] for t in tools)
