"""Run settings: the one typed object a run may set, with every default here."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import WithJsonSchema

from nodes.kinds import BUILTIN_KINDS, AgentKind
from tools import ToolRegistry, default_registry

Policy = Literal["settle", "fail_fast"]
POLICIES: tuple[Policy, ...] = ("settle", "fail_fast")

DEFAULT_MAX_CONCURRENCY = 8

# Objects a Python caller may pass; over HTTP (Studio) only their JSON-able form exists.
ModelRef = Annotated[
    str | BaseChatModel,
    WithJsonSchema(
        {"type": "string", "description": "model spec, e.g. `demo` or `openai:gpt-4o-mini`"}
    ),
]
OptionalModelRef = Annotated[
    str | BaseChatModel | None,
    WithJsonSchema({"type": ["string", "null"], "description": "model spec; null: `model`"}),
]
ToolList = Annotated[
    list[BaseTool], WithJsonSchema({"type": "array", "description": "extra tools (Python only)"})
]
KindList = Annotated[
    list[AgentKind], WithJsonSchema({"type": "array", "description": "extra agent kinds"})
]


@dataclass
class RunSettings:
    """Everything a run may set. It is the graphs' `context_schema`.

    `max_concurrency` is not read by any node: LangGraph takes it from the top
    level of the run config. `as_config()` puts it there; in Studio, set it in the
    run's config, not in its context.
    """

    model: ModelRef = "demo"
    """Model for subagents: a spec such as `openai:gpt-4o-mini` or `demo`, or a chat model."""
    planner_model: OptionalModelRef = None
    """Model for the planner and the synthesizer; `None` means `model`."""
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    """Most subagents running at once (applied through the run config)."""
    task_timeout_s: float | None = 120.0
    """Per-task timeout when a task sets none; `None` means no timeout."""
    policy: Policy = "settle"
    """`settle`: failures become results and the run goes on; `fail_fast`: the first stops it."""
    max_tasks: int = 50
    """Largest plan accepted."""
    max_steps: int = 12
    """Most model calls one subagent may make before it is stopped."""
    tools: ToolList = field(default_factory=list)
    """Extra tools, added to the built-ins (same name: yours wins)."""
    kinds: KindList = field(default_factory=list)
    """Extra agent kinds, added to the built-ins (same name: yours wins)."""

    def __post_init__(self) -> None:
        self.kinds = [
            k if isinstance(k, AgentKind) else AgentKind.model_validate(k) for k in self.kinds
        ]
        if self.policy not in POLICIES:
            msg = f"`policy` must be one of {POLICIES}, got `{self.policy}`"
            raise ValueError(msg)
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            msg = f"`max_concurrency` must be an int >= 1, got `{self.max_concurrency}`"
            raise ValueError(msg)
        if self.task_timeout_s is not None and self.task_timeout_s <= 0:
            msg = f"`task_timeout_s` must be > 0 or None, got `{self.task_timeout_s}`"
            raise ValueError(msg)
        if self.max_tasks < 1 or self.max_steps < 1:
            msg = f"`max_tasks`, `max_steps` must be >= 1: {self.max_tasks}, {self.max_steps}"
            raise ValueError(msg)

    def registry(self) -> ToolRegistry:
        """Return the tools this run may hand out."""
        reg = default_registry()
        return reg.merged(self.tools) if self.tools else reg

    def agent_kinds(self) -> dict[str, AgentKind]:
        """Return the agent kinds this run knows."""
        return {**BUILTIN_KINDS, **{k.name: k for k in self.kinds}}

    def as_config(self, **configurable: Any) -> RunnableConfig:
        """Return a run config with `max_concurrency` at its top level."""
        config: RunnableConfig = {"max_concurrency": self.max_concurrency}
        if configurable:
            config["configurable"] = dict(configurable)
        return config


def settings_of(context: RunSettings | dict[str, Any] | None) -> RunSettings:
    """Return run settings from a node's `runtime.context` (a dict when sent over HTTP)."""
    if context is None:
        return RunSettings()
    if isinstance(context, RunSettings):
        return context
    if isinstance(context, dict):
        known = {f.name for f in fields(RunSettings)}
        unknown = sorted(set(context) - known)
        if unknown:
            msg = f"unknown run setting(s) {unknown}; known: {sorted(known)}"
            raise ValueError(msg)
        return RunSettings(**context)
    msg = f"run context must be RunSettings or a dict, got `{type(context).__name__}`"
    raise TypeError(msg)
