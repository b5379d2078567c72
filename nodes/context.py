"""Run settings: the one typed object a run may set, declared once.

The declaration below gives everything else: validation with messages that name
the field and its CLI flag, the coercion of the dicts HTTP and Studio send, the
context schema Studio shows (minimums, descriptions), and the command line's flags
(each field's `Flag`; `fanfold.graphs.cli` builds its parser from them).

Settings are plain values: numbers, names, model specs. A Python caller may also
pass objects (a chat model, tools, a tool registry); those stay in process and are
left out of `to_json()`. Nothing run-scoped lives here: a run's limits, budgets and
caches are in its `RunScope` (`fanfold.nodes.scope`).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic.fields import FieldInfo

from fanfold.nodes.errors import SettingProblem, SettingsError
from fanfold.nodes.kinds import BUILTIN_KINDS, DEFAULT_PERSPECTIVES, AgentKind
from fanfold.nodes.models import SPEC_FORMS, check_model_spec
from fanfold.tools import ToolRegistry, default_registry
from fanfold.tools.mcp import DEFAULT_MCP_TTL_S, check_mcp_servers
from fanfold.tools.workspace import make_workspace_tools

Policy = str
"""`settle`, `fail_fast` or `quorum:K` (K >= 1)."""
_QUORUM = re.compile(r"^quorum:([1-9][0-9]*)$")


def quorum_of(policy: str) -> int | None:
    """Return K for `quorum:K`, else `None`."""
    match = _QUORUM.match(policy)
    return int(match.group(1)) if match else None


def check_policy(policy: str) -> str:
    """Return the policy when it is valid.

    Raises:
        ValueError: naming the valid forms.
    """
    if policy in ("settle", "fail_fast") or quorum_of(policy) is not None:
        return policy
    msg = "one of settle, fail_fast or quorum:K (K >= 1)"
    raise ValueError(msg)


DEFAULT_MAX_CONCURRENCY = 8


@dataclass(frozen=True)
class Flag:
    """The command-line flag of a setting (metadata on its field)."""

    name: str
    """The flag, e.g. `--max-concurrency`."""
    metavar: str | None = None
    """What the value is called in `--help`, e.g. `N`; None for a switch."""
    form: Literal["value", "switch", "list", "file"] = "value"
    """`value`: one value; `switch`: present means true; `list`: comma-separated names;
    `file`: the path of a JSON file holding the value."""


# Numbers are strict: a bool, a string, NaN or infinity is refused where a number belongs.
Count = Annotated[int, Field(ge=1, strict=True)]
Count0 = Annotated[int, Field(ge=0, strict=True)]
Seconds = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
Seconds0 = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]
Rate = Annotated[float, Field(ge=0.001, strict=True, allow_inf_nan=False)]
"""Requests per second: at least one per 1000 s (a smaller rate only hangs the run)."""
Jitter = Annotated[float, Field(ge=0, le=60, strict=True, allow_inf_nan=False)]

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
    tuple[BaseTool | str, ...],
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "string", "pattern": "^[\\w.]+:[\\w.]+$"},
            "description": "extra tools by import path, `package.module:name` (a tool or a "
            "list of tools); Python callers may also pass tool objects",
        }
    ),
]
_TOOL_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
RegistryRef = Annotated[
    ToolRegistry | None, WithJsonSchema({"type": "null", "description": "Python only"})
]
McpServers = Annotated[
    dict[str, dict[str, Any]] | None,
    WithJsonSchema(
        {
            "type": ["object", "null"],
            "additionalProperties": {"type": "object"},
            "description": "MCP servers by name: stdio `{command, args, env}` or HTTP "
            "`{url, headers}`, as langchain-mcp-adapters' MultiServerMCPClient takes them",
        }
    ),
]


class RunSettings(BaseModel):
    """Everything a run may set. It is the graphs' `context_schema`.

    Frozen: derive changed settings with `replace(...)`, which validates again.
    Invalid values raise `SettingsError` (a `ValueError`) naming the field, its
    CLI flag, what is allowed and what was given.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        arbitrary_types_allowed=True,
        use_attribute_docstrings=True,
    )

    model: Annotated[ModelRef, Flag("--model", "SPEC")] = "demo"
    """Model for subagents: a spec such as `openai:gpt-4o-mini` or `demo`, or a chat model."""
    planner_model: Annotated[OptionalModelRef, Flag("--planner-model", "SPEC")] = None
    """Model for the planner and the synthesizer; null means `model`."""
    max_concurrency: Annotated[Count, Flag("--max-concurrency", "N")] = DEFAULT_MAX_CONCURRENCY
    """Most subagents running at once, and most model calls in flight. Where the run's
    config also sets `max_concurrency`, the smaller value wins."""
    task_timeout_s: Annotated[Seconds | None, Flag("--task-timeout", "S")] = 120.0
    """Per-task timeout in seconds when a task sets none; null: no timeout."""
    policy: Annotated[
        str,
        WithJsonSchema({"type": "string", "pattern": "^(settle|fail_fast|quorum:[1-9][0-9]*)$"}),
        Flag("--policy", "settle|fail_fast|quorum:K"),
    ] = "settle"
    """`settle`: failures become results, the run goes on; `fail_fast`: the first failure
    stops the run; `quorum:K`: stop once K tasks succeeded, fail once K is out of reach."""
    approve_plan: Annotated[bool, Field(strict=True), Flag("--approve", form="switch")] = False
    """Stop after planning until the plan is accepted, edited or rejected (an interrupt)."""
    tool_timeout_s: Annotated[Seconds | None, Flag("--tool-timeout", "S")] = 30.0
    """Timeout of one tool call in seconds; a timed-out call is an error the model sees."""
    perspectives: Annotated[
        tuple[str, ...], Field(min_length=1), Flag("--perspectives", "KIND,...", form="list")
    ] = tuple(DEFAULT_PERSPECTIVES)
    """Agent kinds the `perspectives` graph asks, each given the whole request (known
    kinds: the built-ins and `kinds`). Used by that graph only (Python, Studio); the
    orchestrator, which `fanfold run` runs, saves it with the run's settings."""
    max_rounds: Annotated[Count, Flag("--max-rounds", "N")] = 1
    """Planning rounds: after a plan's tasks are done the planner may add tasks, until
    this many rounds; 1 means no re-planning."""
    max_depth: Annotated[Count, Flag("--max-depth", "N")] = 1
    """Nesting limit: 1, subagents cannot delegate; 2, they may spawn one level of
    sub-tasks through the `delegate` tool; and so on."""
    max_tasks: Annotated[Count, Flag("--max-tasks", "N")] = 50
    """Largest plan accepted."""
    max_steps: Annotated[Count, Flag("--max-steps", "N")] = 12
    """Most model calls one subagent may make before it is stopped."""
    retry_budget_s: Annotated[Seconds0, Flag("--retry-budget", "S")] = 60.0
    """How long one model call keeps retrying transient faults (429, 5xx, timeout,
    dropped or malformed response), from its first attempt; never other errors. A retry
    that would start after this, or after its task's timeout, is not made: the call
    fails with its last fault. 0: no retries."""
    max_retries: Annotated[Count0 | None, Flag("--max-retries", "N")] = None
    """At most this many retries of one model call, within the retry budget; null: as
    many as the budget allows."""
    request_timeout_s: Annotated[Seconds | None, Flag("--request-timeout", "S")] = 60.0
    """Timeout of one model request in seconds; a timed-out request is a transient fault."""
    requests_per_second: Annotated[Rate | None, Flag("--rps", "R")] = None
    """One shared limit on model requests per second for the whole run; null: none."""
    start_jitter_s: Annotated[Jitter, Flag("--start-jitter", "S")] = 0.02
    """Each subagent of the first window waits a random 0..this many seconds before its
    first model call."""
    max_total_tokens: Annotated[Count | None, Flag("--max-tokens", "N")] = None
    """Token budget of the run; when spent, the run stops with `budget_exceeded`."""
    max_wall_time_s: Annotated[Seconds | None, Flag("--max-wall-time", "S")] = None
    """Wall-time budget of the run in seconds; when spent, the run stops with
    `budget_exceeded`."""
    max_task_tokens: Annotated[Count | None, Flag("--max-task-tokens", "N")] = None
    """Token budget of each task; a task past it fails with `BudgetExceeded`."""
    workspace: Annotated[str | None, Field(min_length=1), Flag("--workspace", "DIR")] = None
    """A folder the workspace file tools (list, read, grep, write) are confined to;
    null: no file tools."""
    tools: Annotated[ToolList, Flag("--tools", "MODULE:NAME,...", form="list")] = ()
    """Extra tools, added to the built-ins (same name: yours wins): tool objects, or import
    paths `package.module:name` naming a tool or a list of tools, imported where the run
    executes (so they survive JSON: a saved, resumed or remote run finds them again)."""
    kinds: tuple[AgentKind, ...] = ()
    """Extra agent kinds, added to the built-ins (same name: yours wins)."""
    tool_registry: RegistryRef = None
    """A registry to use instead of the built-ins plus `tools` (share one across runs to
    keep its providers' cache); `tools` are added to it. Python only."""
    mcp_servers: Annotated[McpServers, Flag("--mcp", "FILE", form="file")] = None
    """MCP servers whose tools the run offers, as `langchain-mcp-adapters`'
    `MultiServerMCPClient` takes them (`{"name": {"command": ..., "args": [...]}}` for
    stdio, `{"name": {"url": ...}}` for streamable HTTP; a `{"mcpServers": ...}` file as
    other clients write it also works). One session per server for the whole run. Not
    saved with a run (configs may hold secrets): pass them again to resume."""
    mcp_ttl_s: Annotated[Seconds, Flag("--mcp-ttl", "S")] = DEFAULT_MCP_TTL_S
    """How long the MCP servers' tool lists are cached before they are listed again."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise settings_error(exc) from None
        known = self.agent_kinds()
        unknown = [p for p in self.perspectives if p not in known]
        if unknown:
            what = f"{requirement('perspectives')} (unknown: {unknown}; known: {sorted(known)})"
            flag = flag_of("perspectives")
            raise SettingsError([SettingProblem("perspectives", flag, what, self.perspectives)])

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> RunSettings:
        """Validate `obj` (settings, or a dict of them); invalid values raise `SettingsError`."""
        if isinstance(obj, Mapping) and not kwargs:
            return cls(**obj)
        return super().model_validate(obj, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes, **kwargs: Any) -> RunSettings:  # type: ignore[override]
        """Validate settings from JSON; invalid values raise `SettingsError`."""
        data = json.loads(json_data)
        if not isinstance(data, dict) or kwargs:
            return super().model_validate_json(json_data, **kwargs)
        return cls(**data)

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> RunSettings:
        """Return a copy; changed values are validated as in `replace`."""
        copy = super().model_copy(deep=deep)
        return copy.replace(**update) if update else copy

    @field_validator("model", "planner_model")
    @classmethod
    def _model_spec(cls, value: str | BaseChatModel | None) -> str | BaseChatModel | None:
        if isinstance(value, str):
            check_model_spec(value)
        return value

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        return check_policy(value)

    @field_validator("tools")
    @classmethod
    def _tool_specs(cls, value: tuple[BaseTool | str, ...]) -> tuple[BaseTool | str, ...]:
        for item in value:
            if isinstance(item, str) and not _TOOL_SPEC.match(item):
                msg = f"`{item}` is not an import path `package.module:name`"
                raise ValueError(msg)
        return value

    @field_validator("mcp_servers")
    @classmethod
    def _mcp_servers(cls, value: dict[str, dict[str, Any]] | None) -> dict[str, Any] | None:
        return None if value is None else check_mcp_servers(value)

    @field_validator("workspace")
    @classmethod
    def _workspace(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_dir():
            msg = "an existing folder"
            raise ValueError(msg)
        return value

    def replace(self, **changes: Any) -> RunSettings:
        """Return a copy with `changes` applied, validated like a new object.

        Raises:
            SettingsError: a changed value is invalid.
        """
        return RunSettings(**{**dict(self), **changes})

    def to_json(self) -> dict[str, Any]:
        """Return the settings that survive JSON: model specs, tool import paths, limits.

        Tool objects, registries and chat-model instances are Python objects and are
        left out (as are kinds that carry one); a resumed run gets them from its caller.
        """
        out: dict[str, Any] = {}
        for name, value in self:
            if name in ("tool_registry", "mcp_servers") or isinstance(value, BaseChatModel):
                continue  # objects stay in process; MCP configs may hold secrets
            if name == "tools":
                value = [t for t in value if isinstance(t, str)]  # objects stay in process
            elif name == "kinds":
                value = [
                    k.model_dump(mode="json")
                    for k in value
                    if not isinstance(k.model, BaseChatModel)
                ]
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out

    def agent_kinds(self) -> dict[str, AgentKind]:
        """Return the agent kinds this run knows."""
        return {**BUILTIN_KINDS, **{k.name: k for k in self.kinds}}

    def as_config(self, **configurable: Any) -> RunnableConfig:
        """Return a run config with `max_concurrency` at its top level."""
        config: RunnableConfig = {"max_concurrency": self.max_concurrency}
        if configurable:
            config["configurable"] = dict(configurable)
        return config


def concurrency(settings: RunSettings, config: RunnableConfig) -> tuple[int, int | None]:
    """Return the run's subagent limit and LangGraph's own (None: LangGraph has none).

    The limit is the smallest `max_concurrency` set anywhere: the run's settings
    (its context, as Studio sets it), the top level of the run config (where
    LangGraph reads it), or `configurable` (where LangGraph ignores it).

    Raises:
        SettingsError: a config value that is not an integer >= 1.
    """
    graph_limit = _config_limit(config.get("max_concurrency"), "config")
    nested = _config_limit(
        (config.get("configurable") or {}).get("max_concurrency"), "configurable"
    )
    limit = min(v for v in (settings.max_concurrency, graph_limit, nested) if v is not None)
    return limit, graph_limit


def check_config(config: RunnableConfig | None, *, owner: str = "run") -> None:
    """Refuse a config whose `max_concurrency` LangGraph could not use.

    `owner`: whose config it is, for the message (`run`, `graph`).

    Raises:
        SettingsError: a `max_concurrency` (top level or configurable) that is not an
            integer >= 1 (LangGraph would hang on 0).
    """
    if config:
        top, nested = f"{owner}'s config", f"{owner}'s configurable"
        _config_limit(config.get("max_concurrency"), top)
        _config_limit((config.get("configurable") or {}).get("max_concurrency"), nested)


def _config_limit(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problem = SettingProblem(
            "max_concurrency", None, f"an integer >= 1 (in the {where})", value
        )
        raise SettingsError([problem])
    return value


def build_registry(settings: RunSettings) -> ToolRegistry:
    """Return the tools a run may hand out: the registry, file tools, extra tools.

    A layer over a shared `tool_registry`, so the shared one keeps its cache.
    """
    base = settings.tool_registry if settings.tool_registry is not None else default_registry()
    extra = [tool for item in settings.tools for tool in _tools_of(item)]
    if settings.workspace is not None:
        extra = make_workspace_tools(settings.workspace) + extra
    return base.merged(extra) if extra else base


def _tools_of(item: BaseTool | str) -> list[BaseTool]:
    """Return the tools a `tools` entry stands for (an import path is imported here).

    Raises:
        SettingsError: the path does not import, or names no tool.
    """
    if isinstance(item, BaseTool):
        return [item]
    module_name, _, attr = item.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except Exception as exc:  # noqa: BLE001 - importing runs the module's code: anything goes
        raise _tool_problem(item, f"an importable tool ({type(exc).__name__}: {exc})") from None
    tools = list(found) if isinstance(found, list | tuple) else [found]
    if not tools or not all(isinstance(t, BaseTool) for t in tools):
        raise _tool_problem(item, "an import path of a LangChain tool or a list of tools")
    return tools


def _tool_problem(item: str, what: str) -> SettingsError:
    return SettingsError([SettingProblem("tools", flag_of("tools"), what, item)])


def flag_of(name: str) -> Flag | None:
    """Return a setting's command-line flag, if it has one."""
    info = RunSettings.model_fields.get(name)
    return _flag(info) if info is not None else None


def _flag(info: FieldInfo) -> Flag | None:
    return next((m for m in info.metadata if isinstance(m, Flag)), None)


def setting_flags() -> dict[str, Flag]:
    """Return every setting that has a command-line flag, by field name, in order."""
    out: dict[str, Flag] = {}
    for name, info in RunSettings.model_fields.items():
        flag = _flag(info)
        if flag is not None:
            out[name] = flag
    return out


def requirement(name: str) -> str:
    """Return what a setting accepts, in words (`an integer >= 1`, `a number > 0 or none`)."""
    info = RunSettings.model_fields[name]
    if name in _WORDS_BY_NAME:
        return _WORDS_BY_NAME[name]
    kinds: list[str] = []
    bounds: list[str] = []
    optional = False
    for part in plain_types(info.annotation):
        if part is type(None):
            optional = True
        else:
            kinds.append(_WORDS.get(part, f"a {getattr(part, '__name__', part)}"))
    for m in [*info.metadata, *_metadata(info.annotation)]:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(m, attr, None)
            if bound is not None:
                bounds.append(f"{op} {bound:g}")
    text = " or ".join(dict.fromkeys(kinds))
    if bounds:
        text += " " + " and ".join(dict.fromkeys(bounds))
    return text + (" or none" if optional else "")


_WORDS: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
}
_WORDS_BY_NAME = {
    "model": f"a model spec ({SPEC_FORMS}) or a chat model",
    "planner_model": f"a model spec ({SPEC_FORMS}), a chat model or none",
    "policy": "one of settle, fail_fast or quorum:K (K >= 1)",
    "tools": "a list of LangChain tools or import paths `package.module:name`",
    "kinds": "a list of agent kinds (AgentKind, or dicts with name and system_prompt)",
    "perspectives": "a non-empty list of known agent kind names",
    "tool_registry": "a ToolRegistry or none",
    "workspace": "an existing folder or none",
    "mcp_servers": "MCP server connections by name",
}


def plain_types(annotation: Any) -> list[Any]:
    """Return the plain types a (possibly Annotated, possibly union) annotation allows."""
    if get_origin(annotation) is Annotated:
        return plain_types(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return [p for arg in get_args(annotation) for p in plain_types(arg)]
    origin = get_origin(annotation)
    return [origin if origin is not None else annotation]


def _metadata(annotation: Any) -> list[Any]:
    """Return the constraint objects inside an annotation (an Optional's inner bounds)."""
    out: list[Any] = []
    if get_origin(annotation) is Annotated:
        for m in annotation.__metadata__:
            out.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        out.extend(_metadata(get_args(annotation)[0]))
    elif get_origin(annotation) in (Union, UnionType):
        for arg in get_args(annotation):
            out.extend(_metadata(arg))
    return out


def settings_error(exc: ValidationError) -> SettingsError:
    """Turn pydantic's report into one `SettingsError` naming each field and its flag."""
    problems: list[tuple[str, str, Any]] = []
    seen: set[str] = set()
    for e in exc.errors():
        loc = e["loc"]
        name = str(loc[0]) if loc else "settings"
        if name in seen:
            continue  # a union reports each branch; one line per field is enough
        seen.add(name)
        if e["type"] == "extra_forbidden":
            problems.append((name, "", e.get("input")))
            continue
        if name not in RunSettings.model_fields:
            problems.append((name, str(e["msg"]), e.get("input")))
            continue
        if e["type"] == "value_error" and name in ("model", "planner_model", "mcp_servers"):
            # The spec checker says what is wrong; pydantic prefixes "Value error, ".
            what = str(e["msg"]).removeprefix("Value error, ")
            if name == "mcp_servers":
                what = f"{requirement(name)} ({what})"
        else:
            what = requirement(name)
        if len(loc) > 1 and name in ("kinds", "tools", "perspectives"):
            where = ".".join(str(p) for p in loc[1:])
            what = f"{what} ({where}: {e['msg']})"
        given = e.get("input")
        if name == "mcp_servers":
            given = _names_only(given)  # a server's env or headers may hold a token
        problems.append((name, what, given))
    known = tuple(RunSettings.model_fields)
    return SettingsError(
        [SettingProblem(n, flag_of(n), what, v, () if what else known) for n, what, v in problems]
    )


def _names_only(value: Any) -> Any:
    """Return MCP server configs as their names alone, for an error message."""
    if isinstance(value, Mapping):
        inner = value.get("mcpServers") if set(value) == {"mcpServers"} else value
        if isinstance(inner, Mapping):
            return {str(k)[:60]: "..." for k in list(inner)[:20]}
    return f"<{type(value).__name__}>"


def settings_of(context: RunSettings | dict[str, Any] | None) -> RunSettings:
    """Return run settings from a node's `runtime.context` (a dict when sent over HTTP).

    Raises:
        SettingsError: a dict with an invalid or unknown setting.
        TypeError: the context is neither settings nor a dict.
    """
    if context is None:
        return DEFAULT_SETTINGS  # immutable: a run's state lives in its RunScope
    if isinstance(context, RunSettings):
        return context
    if isinstance(context, dict):
        return RunSettings(**context)
    msg = f"run context must be RunSettings or a dict, got `{type(context).__name__}`"
    raise TypeError(msg)


DEFAULT_SETTINGS = RunSettings()
"""The settings of a run given no context (Studio's default): every default."""
