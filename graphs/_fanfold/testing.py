"""Test helpers for your own Fanfold tests: a task-keyed fake model, a node runtime.

`TaskScriptedModel` answers each subagent by the task id in its conversation, never
by call order (parallel subagents call in any order), plans and re-plans from a
script, and fails loudly (`ScriptError`) when asked anything its script does not
cover. `node_runtime` gives a node called on its own the runtime a run would.

A task's `TaskScript` says how long each call takes, whether it succeeds, fails or
hangs, which tools it asks for on which turn (or that it never stops asking), and
which errors its first calls raise (transient faults, to test retries). The planner
gets `planner_replies` in order (whole replies, broken ones included, to test the
repair round), then `plan`. The `Recorder` keeps what the fake saw.

Example:
    model = TaskScriptedModel(
        plan={"tasks": [{"id": "a", "description": "x"}, {"id": "b", "description": "y"}]},
        scripts={"a": TaskScript(latency=0.01), "b": TaskScript(behaviour="raise")},
    )
    out = await arun("anything", settings=RunSettings(model=model))
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.runtime import Runtime
from langgraph.types import StreamWriter
from pydantic import ConfigDict, Field

from fanfold.nodes.context import RunSettings
from fanfold.nodes.prompts import RESULTS_HEADER
from fanfold.nodes.scope import ScopedControl

TASK_RE = re.compile(r"^Task (\S+) \(", re.MULTILINE)

Behaviour = Literal["ok", "raise", "hang", "loop"]

ToolCallScript = tuple[str, dict[str, Any]]
"""One tool call: the tool's name and its arguments."""

REPLY_USAGE: UsageMetadata = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
"""The usage every reply of `TaskScriptedModel` reports."""


@dataclass
class TaskScript:
    """What the fake does for one task.

    `behaviour`: `ok` answers (after the tool calls scripted below); `raise` raises a
    `RuntimeError` after `latency`; `hang` never answers (until cancelled); `loop`
    asks for the first turn's tool calls again on every turn and never answers, as a
    model stuck in a tool loop does (a run's `max_steps` ends it).

    Tool calls come in turns, one reply each: `turns`, or as a one-turn shorthand
    `call` (any tool) or `expression` (a calculator call, made only when the
    calculator is bound). The turn a call is in is the number of tool-calling replies
    already in the conversation, so parallel subagents never depend on call order;
    once every turn is done, the task answers with what its tools returned.
    """

    latency: float = 0.01
    behaviour: Behaviour = "ok"
    expression: str | None = None  # a calculator call before answering
    call: ToolCallScript | None = None  # any tool call before answering
    turns: list[list[ToolCallScript]] = field(default_factory=list)
    """Tool calls per turn before answering; one turn may ask for several tools."""
    errors: list[BaseException] = field(default_factory=list)
    """Raised by the task's first calls, one per call, at once (no latency) and before
    anything else, e.g. transient faults to test retries. Counted in `Recorder.raised`,
    not in `Recorder.calls`; the script itself is never changed."""

    def __post_init__(self) -> None:
        if self.turns and (self.call is not None or self.expression is not None):
            raise ValueError("script `turns`, or the one-turn `call` / `expression`: not both")


class ModelCall(NamedTuple):
    """One planner or synthesizer call the fake answered: its messages and bound tools."""

    messages: list[BaseMessage]
    tools: list[str]


@dataclass
class Recorder:
    """What the fake saw: concurrency, calls and prompts per task, planner and synthesizer calls."""

    in_flight: int = 0
    peak: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    first_start: dict[str, float] = field(default_factory=dict)
    last_end: dict[str, float] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    tools: dict[str, list[str]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    raised: dict[str, int] = field(default_factory=dict)
    """Per task: how many of its scripted `errors` were raised."""
    tool_results: dict[str, list[ToolMessage]] = field(default_factory=dict)
    """Per task: the tool messages in the conversation of its latest call."""
    planner_calls: list[ModelCall] = field(default_factory=list)
    """Every planning call in order (the repair round's and re-planning's too)."""
    synthesizer_calls: list[ModelCall] = field(default_factory=list)
    """Every synthesizer call, in order."""


class ScriptError(AssertionError):
    """The fake was asked something its script does not cover."""


def _text(m: BaseMessage) -> str:
    """Return a message's text: content blocks (an MCP tool's reply) as their text."""
    if isinstance(m.content, str):
        return m.content
    if all(isinstance(b, dict) and b.get("type") == "text" for b in m.content):
        return "".join(str(b["text"]) for b in m.content if isinstance(b, dict))
    return json.dumps(m.content)


class AsyncFakeModel(BaseChatModel):
    """Base of the test fakes: binds tools as OpenAI schemas and is async only."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return type(self).__name__

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kw: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kw)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise ScriptError("the fake is async only: nodes must stay async")


def tool_names(kwargs: dict[str, Any]) -> list[str]:
    """Return the names of the tools bound to a fake's call."""
    return [t["function"]["name"] for t in kwargs.get("tools") or []]


class TaskScriptedModel(AsyncFakeModel):
    """Answers by task id found in the conversation, never by call order."""

    scripts: dict[str, TaskScript]
    plan: dict[str, Any] | None = None
    """The `Plan` arguments the planner gets (once `planner_replies` are used up)."""
    planner_replies: list[dict[str, Any] | AIMessage] = Field(default_factory=list)
    """The planner's first replies, one per call in order, each used once: `Plan`
    arguments, or a whole reply as a provider returns it (prose, a JSON plan in its
    text, an invalid tool call), to test how the planner repairs bad output."""
    extensions: list[dict[str, Any]] = Field(default_factory=list)
    """Re-plans, in the order the (sequential) re-planning rounds ask for them."""
    planner_latency: float = 0.0
    """Seconds each planning and re-planning call takes (to test budgets spent there)."""
    recorder: Recorder = Field(default_factory=Recorder)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = tool_names(kwargs)
        first = next((_text(m) for m in messages if isinstance(m, HumanMessage)), "")
        rec = self.recorder
        if "PlanExtension" in tools or "Plan" in tools:
            await asyncio.sleep(self.planner_latency)
        if "PlanExtension" in tools:
            rec.planner_calls.append(ModelCall(list(messages), tools))
            if not self.extensions:
                raise ScriptError("asked to re-plan but no extension is scripted")
            ext = self.extensions.pop(0)
            return self._reply(AIMessage("", tool_calls=[_call("PlanExtension", ext, "x")]))
        if "Plan" in tools:
            rec.planner_calls.append(ModelCall(list(messages), tools))
            return self._reply(self._plan_reply(len(rec.planner_calls)))
        if RESULTS_HEADER in first:
            rec.synthesizer_calls.append(ModelCall(list(messages), tools))
            ids = re.findall(r"^\[(\S+) (\w+)\]", first.split(RESULTS_HEADER)[1], re.M)
            return self._reply(AIMessage("answer: " + ", ".join(f"{i}={s}" for i, s in ids)))
        match = TASK_RE.search(first)
        if not match or match.group(1) not in self.scripts:
            raise ScriptError(f"no script for this conversation: {first[:120]!r}")
        task_id = match.group(1)
        script = self.scripts[task_id]
        raised = rec.raised.get(task_id, 0)
        if raised < len(script.errors):
            rec.raised[task_id] = raised + 1
            raise script.errors[raised]
        rec.calls[task_id] = rec.calls.get(task_id, 0) + 1
        rec.prompts[task_id] = first
        rec.tools[task_id] = tools
        done = [m for m in messages if isinstance(m, ToolMessage)]
        rec.tool_results[task_id] = done
        rec.first_start.setdefault(task_id, time.monotonic())
        rec.in_flight += 1
        rec.peak = max(rec.peak, rec.in_flight)
        try:
            if script.behaviour == "hang":
                await asyncio.sleep(3600)
            await asyncio.sleep(script.latency)
            if script.behaviour == "raise":
                raise RuntimeError(f"scripted failure for {task_id}")
        except asyncio.CancelledError:
            rec.cancelled.add(task_id)
            raise
        finally:
            rec.in_flight -= 1
            rec.last_end[task_id] = time.monotonic()
        turns = _tool_turns(script, tools)
        turn = sum(1 for m in messages if isinstance(m, AIMessage) and m.tool_calls)
        if script.behaviour == "loop":
            if not turns:
                raise ScriptError(f"task `{task_id}` is scripted to loop but has no tool to call")
            return self._reply(_tool_calls(turns[0], f"{task_id}-{turn}"))
        if turn < len(turns):
            return self._reply(_tool_calls(turns[turn], f"{task_id}-{turn}"))
        if turn > len(turns):
            raise ScriptError(f"task `{task_id}` went past its script ({len(turns)} turns)")
        tool_part = " ".join(_text(m) for m in done)
        return self._reply(AIMessage(f"output of {task_id}: {tool_part}".strip()))

    def _plan_reply(self, n: int) -> AIMessage:
        if self.planner_replies:
            reply = self.planner_replies.pop(0)
            if isinstance(reply, AIMessage):
                return reply.model_copy()
            return AIMessage("", tool_calls=[_call("Plan", reply, "p")])
        if self.plan is None:
            raise ScriptError(f"asked for a plan (call {n}) but none is scripted")
        return AIMessage("", tool_calls=[_call("Plan", self.plan, "p")])

    def _reply(self, message: AIMessage) -> ChatResult:
        message.usage_metadata = REPLY_USAGE.copy()
        return ChatResult(generations=[ChatGeneration(message=message)])


def _tool_turns(script: TaskScript, tools: list[str]) -> list[list[ToolCallScript]]:
    if script.turns:
        return script.turns
    if script.call is not None:
        return [[script.call]]
    if script.expression and "calculator" in tools:
        return [[("calculator", {"expression": script.expression})]]
    return []


def _tool_calls(calls: list[ToolCallScript], prefix: str) -> AIMessage:
    calls_out = [_call(name, args, f"{prefix}-{i}") for i, (name, args) in enumerate(calls)]
    return AIMessage("", tool_calls=calls_out)


def _call(name: str, args: dict[str, Any], call_id: str) -> Any:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def node_runtime(
    settings: RunSettings | None = None, *, writer: StreamWriter | None = None
) -> Runtime[RunSettings]:
    """Return the runtime a node gets in a run: these settings, a run scope of its own.

    Nodes called with the same runtime share one run scope, as the nodes of one run do.
    """
    return Runtime(
        context=settings or RunSettings(),
        stream_writer=writer or (lambda _: None),
        control=ScopedControl(),
    )
