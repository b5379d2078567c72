"""Run settings: the one typed object a run may set, with every default here."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from fanfold.nodes.kinds import BUILTIN_KINDS, DEFAULT_PERSPECTIVES, AgentKind
from fanfold.tools import ToolRegistry, default_registry
from fanfold.tools.workspace import make_workspace_tools

Policy = str
"""`settle`, `fail_fast` or `quorum:K` (K >= 1)."""
POLICIES: tuple[str, ...] = ("settle", "fail_fast", "quorum:K")
_QUORUM = re.compile(r"^quorum:([1-9][0-9]*)$")


def quorum_of(policy: str) -> int | None:
    """Return K for `quorum:K`, else `None`."""
    match = _QUORUM.match(policy)
    return int(match.group(1)) if match else None


def check_policy(policy: str) -> str:
    """Return the policy when it is valid.

    Raises:
        ValueError: naming the policy and the valid forms.
    """
    if policy in ("settle", "fail_fast") or quorum_of(policy) is not None:
        return policy
    msg = f"`policy` must be `settle`, `fail_fast` or `quorum:K` (K >= 1), got `{policy}`"
    raise ValueError(msg)


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
RegistryRef = Annotated[
    ToolRegistry | None, WithJsonSchema({"type": "null", "description": "Python only"})
]
KindList = Annotated[
    list[AgentKind], WithJsonSchema({"type": "array", "description": "extra agent kinds"})
]


@dataclass(eq=False)  # identity hash: a run's RunScope is keyed by its settings object
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
    policy: Annotated[
        str,
        WithJsonSchema({"type": "string", "pattern": "^(settle|fail_fast|quorum:[1-9][0-9]*)$"}),
    ] = "settle"
    """`settle`: failures become results, the run goes on; `fail_fast`: the first failure
    stops the run; `quorum:K`: stop once K tasks succeeded, fail once K is out of reach."""
    approve_plan: bool = False
    """Stop after planning until the plan is accepted, edited or rejected (an interrupt)."""
    tool_timeout_s: float | None = 30.0
    """Timeout of one tool call; a timed-out call is an error the model sees."""
    perspectives: list[str] = field(default_factory=lambda: list(DEFAULT_PERSPECTIVES))
    """Agent kinds the `perspectives` graph asks, each given the whole request."""
    max_rounds: int = 1
    """Planning rounds: after a plan's tasks are done the planner may add tasks, until
    this many rounds; 1 means no re-planning."""
    max_depth: int = 1
    """Nesting limit: 1, subagents cannot delegate; 2, they may spawn one level of
    sub-tasks through the `delegate` tool; and so on."""
    max_tasks: int = 50
    """Largest plan accepted."""
    max_steps: int = 12
    """Most model calls one subagent may make before it is stopped."""
    max_retries: int = 3
    """Retries of one model call on a transient fault (429, 5xx, timeout, dropped or
    malformed response); never on other errors."""
    request_timeout_s: float | None = 60.0
    """Timeout of one model request; a timed-out request counts as a transient fault."""
    requests_per_second: float | None = None
    """One shared limit on model requests per second for the whole run; `None`: none."""
    start_jitter_s: float = 0.02
    """Each subagent of the first window waits a random 0..start_jitter_s before its first call."""
    max_total_tokens: int | None = None
    """Token budget of the run; when spent, the run stops with `budget_exceeded`."""
    max_wall_time_s: float | None = None
    """Wall-time budget of the run; when spent, the run stops with `budget_exceeded`."""
    max_task_tokens: int | None = None
    """Token budget of each task; a task past it fails with `BudgetExceeded`."""
    tools: ToolList = field(default_factory=list)
    """Extra tools, added to the built-ins (same name: yours wins)."""
    kinds: KindList = field(default_factory=list)
    """Extra agent kinds, added to the built-ins (same name: yours wins)."""
    tool_registry: RegistryRef = None
    """A registry to use instead of the built-ins plus `tools` (share one across runs to
    keep its providers' cache); `tools` are added to it."""
    workspace: str | None = None
    """A folder the workspace file tools (list, read, grep, write) are confined to;
    `None`: no file tools."""
    # Per-object caches, not settings: left out of the JSON schema Studio shows.
    _registry: SkipJsonSchema[ToolRegistry | None] = field(
        default=None, init=False, repr=False, compare=False
    )
    _parent: SkipJsonSchema[RunSettings | None] = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.kinds = [
            k if isinstance(k, AgentKind) else AgentKind.model_validate(k) for k in self.kinds
        ]
        check_policy(self.policy)
        for name in ("max_total_tokens", "max_task_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                msg = f"`{name}` must be an int >= 1 or None, got `{value}`"
                raise ValueError(msg)
        for name in (
            "max_wall_time_s",
            "request_timeout_s",
            "requests_per_second",
            "tool_timeout_s",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:
                msg = f"`{name}` must be > 0 or None, got `{value}`"
                raise ValueError(msg)
        if self.max_retries < 0 or self.start_jitter_s < 0:
            msg = (
                f"`max_retries` and `start_jitter_s` must be >= 0, "
                f"got {self.max_retries} and {self.start_jitter_s}"
            )
            raise ValueError(msg)
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            msg = f"`max_concurrency` must be an int >= 1, got `{self.max_concurrency}`"
            raise ValueError(msg)
        if self.task_timeout_s is not None and self.task_timeout_s <= 0:
            msg = f"`task_timeout_s` must be > 0 or None, got `{self.task_timeout_s}`"
            raise ValueError(msg)
        if self.max_rounds < 1 or self.max_depth < 1:
            msg = f"`max_rounds`, `max_depth` must be >= 1: {self.max_rounds}, {self.max_depth}"
            raise ValueError(msg)
        if self.max_tasks < 1 or self.max_steps < 1:
            msg = f"`max_tasks`, `max_steps` must be >= 1: {self.max_tasks}, {self.max_steps}"
            raise ValueError(msg)

    @property
    def root(self) -> RunSettings:
        """Return the top-level run's settings (itself, unless this is a nested run's)."""
        return self._parent if self._parent is not None else self

    @property
    def is_nested(self) -> bool:
        """Tell whether these are the settings of a nested (delegated) fan-out."""
        return self._parent is not None

    def nested(self) -> RunSettings:
        """Return settings for a fan-out a subagent delegates.

        They share the top-level run's scope (limits, budgets, registry) and settle:
        a sub-task's failure is a result its parent's model reads, and the run's
        policy (fail_fast, quorum) counts top-level tasks only.
        """
        child = dataclasses.replace(self, policy="settle")
        child._parent = self.root
        child._registry = self.root.registry()
        return child

    def to_json(self) -> dict[str, Any]:
        """Return the settings that survive JSON: model specs (not instances), limits.

        Tools and chat-model instances are Python objects and are left out; a
        resumed run gets them from its caller again.
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("tools", "kinds", "tool_registry", "_registry", "_parent"):
                continue
            if f.name in ("model", "planner_model") and not (
                value is None or isinstance(value, str)
            ):
                continue
            out[f.name] = value
        return out

    def registry(self) -> ToolRegistry:
        """Return the tools this run may hand out (built once per settings object)."""
        if self._registry is None:
            base = self.tool_registry if self.tool_registry is not None else default_registry()
            extra = list(self.tools)
            if self.workspace is not None:
                extra = make_workspace_tools(self.workspace) + extra
            if extra:
                base = base.merged(extra)  # a layer: a shared registry keeps its cache
            self._registry = base
        return self._registry

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
        # One shared object, so a run started with no context (Studio's default)
        # still has one RunScope for all its nodes.
        return _DEFAULT_SETTINGS
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


_DEFAULT_SETTINGS = RunSettings()
