"""Test helpers for your own Fanfold tests: a task-keyed fake model, a node runtime.

`TaskScriptedModel` answers each subagent by the task id in its conversation, never
by call order (parallel subagents call in any order), plans and re-plans from a
script, and fails loudly (`ScriptError`) when asked anything its script does not
cover. `node_runtime` gives a node called on its own the runtime a run would.

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
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.runtime import Runtime
from langgraph.types import StreamWriter
from pydantic import ConfigDict, Field

from fanfold.nodes.context import RunSettings
from fanfold.nodes.prompts import RESULTS_HEADER
from fanfold.nodes.scope import ScopedControl

TASK_RE = re.compile(r"^Task (\S+) \(", re.MULTILINE)

Behaviour = Literal["ok", "raise", "hang"]


@dataclass
class TaskScript:
    """What the fake does for one task."""

    latency: float = 0.01
    behaviour: Behaviour = "ok"
    expression: str | None = None  # a calculator call before answering
    call: tuple[str, dict[str, Any]] | None = None  # any tool call before answering


@dataclass
class Recorder:
    """What the fake saw: concurrency, calls and prompts per task."""

    in_flight: int = 0
    peak: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    first_start: dict[str, float] = field(default_factory=dict)
    last_end: dict[str, float] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    tools: dict[str, list[str]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)


class ScriptError(AssertionError):
    """The fake was asked something its script does not cover."""


def _text(m: BaseMessage) -> str:
    return m.content if isinstance(m.content, str) else json.dumps(m.content)


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
    extensions: list[dict[str, Any]] = Field(default_factory=list)
    """Re-plans, in the order the (sequential) re-planning rounds ask for them."""
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
        if "PlanExtension" in tools:
            if not self.extensions:
                raise ScriptError("asked to re-plan but no extension is scripted")
            ext = self.extensions.pop(0)
            return self._reply(AIMessage("", tool_calls=[_call("PlanExtension", ext, "x")]))
        if "Plan" in tools:
            if self.plan is None:
                raise ScriptError("asked for a plan but none is scripted")
            return self._reply(AIMessage("", tool_calls=[_call("Plan", self.plan, "p")]))
        if RESULTS_HEADER in first:
            ids = re.findall(r"^\[(\S+) (\w+)\]", first.split(RESULTS_HEADER)[1], re.M)
            return self._reply(AIMessage("answer: " + ", ".join(f"{i}={s}" for i, s in ids)))
        match = TASK_RE.search(first)
        if not match or match.group(1) not in self.scripts:
            raise ScriptError(f"no script for this conversation: {first[:120]!r}")
        task_id = match.group(1)
        script = self.scripts[task_id]
        rec = self.recorder
        rec.calls[task_id] = rec.calls.get(task_id, 0) + 1
        rec.prompts[task_id] = first
        rec.tools[task_id] = tools
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
        done = [m for m in messages if isinstance(m, ToolMessage)]
        if script.call is not None and not done:
            name, args = script.call
            return self._reply(AIMessage("", tool_calls=[_call(name, args, task_id)]))
        if script.expression and "calculator" in tools and not done:
            args = {"expression": script.expression}
            return self._reply(AIMessage("", tool_calls=[_call("calculator", args, task_id)]))
        tool_part = " ".join(_text(m) for m in done)
        return self._reply(AIMessage(f"output of {task_id}: {tool_part}".strip()))

    def _reply(self, message: AIMessage) -> ChatResult:
        message.usage_metadata = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        return ChatResult(generations=[ChatGeneration(message=message)])


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
