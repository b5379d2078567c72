"""Run names, tags and metadata so any callback handler can attribute work per subagent."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from fanfold.nodes.domain import Task

TAG = "fanfold"


def subagent_config(task: Task, *, round_: int = 1, depth: int = 1) -> RunnableConfig:
    """Return the config every model and tool call of one subagent runs with.

    LangSmith, or any LangChain callback handler, then sees `run_name`
    `subagent:<task id>`, tags `fanfold` and the agent kind, and metadata with the
    task id, round and depth on each of the subagent's runs, with no extra code.
    """
    return {
        "run_name": f"subagent:{task.id}",
        "tags": [TAG, task.kind],
        "metadata": {
            "fanfold_task_id": task.id,
            "fanfold_kind": task.kind,
            "fanfold_round": round_,
            "fanfold_depth": depth,
        },
    }
