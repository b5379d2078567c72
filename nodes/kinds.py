"""Agent kinds: a named system prompt and default tools a task can ask for."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field


class AgentKind(BaseModel):
    """A kind of subagent the planner may assign tasks to."""

    name: str
    system_prompt: str
    tools: list[str] | None = Field(
        default=None, description="Default tool allow-list; null means every registered tool."
    )
    description: str = ""
    model: str | BaseChatModel | None = Field(
        default=None,
        description="Model spec (or chat model) for this kind's subagents; null: the run's.",
    )
    timeout_s: float | None = Field(
        default=None, gt=0, description="Timeout of this kind's tasks; null: the run's."
    )


_BASE = (
    "You are a focused subagent inside a larger plan. Do exactly your task, using "
    "your tools when they help, and answer with the result only: no preamble."
)

BUILTIN_KINDS: dict[str, AgentKind] = {
    k.name: k
    for k in [
        AgentKind(name="general", system_prompt=_BASE, description="Any self-contained task."),
        AgentKind(
            name="researcher",
            system_prompt=_BASE + " You gather facts and figures and state them plainly.",
            description="Collects facts and numbers on one question.",
        ),
        AgentKind(
            name="analyst",
            system_prompt=_BASE + " You compute, compare and weigh evidence from your inputs.",
            description="Compares or computes from other tasks' outputs.",
        ),
        AgentKind(
            name="writer",
            system_prompt=_BASE + " You write clear, structured prose from your inputs.",
            tools=[],
            description="Writes prose from other tasks' outputs; no tools.",
        ),
        AgentKind(
            name="optimist",
            system_prompt=_BASE + " You argue for the best realistic case: what could go right.",
            tools=[],
            description="A perspective: the case for.",
        ),
        AgentKind(
            name="skeptic",
            system_prompt=_BASE + " You argue the risks, costs and what could go wrong.",
            tools=[],
            description="A perspective: the case against.",
        ),
        AgentKind(
            name="engineer",
            system_prompt=_BASE + " You judge feasibility: effort, numbers, how to build it.",
            description="A perspective: what it takes.",
        ),
    ]
}

DEFAULT_PERSPECTIVES = ("optimist", "skeptic", "engineer")
