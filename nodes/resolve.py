"""How a task runs, resolved once: its model, tools, timeout and prompt.

The task says first, then its agent kind, then the run. `resolve_task` is the one
place that order is written; dispatch resolves each task as it sends it and the
subagent reads the result from its payload.
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from fanfold.nodes.context import RunSettings
from fanfold.nodes.delegation import DELEGATE, can_delegate
from fanfold.nodes.domain import Task
from fanfold.nodes.models import load_chat_model
from fanfold.nodes.state import TaskSpec

RUN_MODEL = "@run"
PLANNER_MODEL = "@planner"
KIND_MODEL = "@kind:"


def resolve_task(task: Task, settings: RunSettings, *, depth: int = 1) -> TaskSpec:
    """Return how `task` runs at `depth`: task, then kind, then run."""
    kinds = settings.agent_kinds()
    kind = kinds.get(task.kind) or kinds["general"]
    names = task.tools if task.tools is not None else kind.tools
    listed = [n for n in names if n != DELEGATE] if names is not None else None
    wants_delegate = names is None or DELEGATE in names
    if kind.model is not None:
        model = kind.model if isinstance(kind.model, str) else KIND_MODEL + kind.name
    else:
        model = settings.model if isinstance(settings.model, str) else RUN_MODEL
    timeout = next(
        (t for t in (task.timeout_s, kind.timeout_s) if t is not None), settings.task_timeout_s
    )
    return {
        "model": model,
        "tools": listed,
        "delegate": wants_delegate and can_delegate(settings, depth),
        "timeout_s": timeout,
        "system_prompt": kind.system_prompt,
    }


def model_of(ref: str, settings: RunSettings) -> BaseChatModel:
    """Return the chat model a resolved spec names (a spec, or an object of the settings).

    Raises:
        ValueError: an unknown spec, or a kind the settings do not hold.
    """
    if ref == RUN_MODEL:
        return load_chat_model(settings.model)
    if ref == PLANNER_MODEL:
        return load_chat_model(settings.planner_model or settings.model)
    if ref.startswith(KIND_MODEL):
        name = ref.removeprefix(KIND_MODEL)
        kind = settings.agent_kinds().get(name)
        if kind is None or kind.model is None:
            msg = f"the run's settings have no model for agent kind `{name}`"
            raise ValueError(msg)
        return load_chat_model(kind.model)
    return load_chat_model(ref)


def planner_model(settings: RunSettings) -> BaseChatModel:
    """Return the model that plans and writes the answer."""
    return model_of(PLANNER_MODEL, settings)
