"""The fake work every implementation does: a scripted chat model and one trivial tool.

A subagent for item `n` makes exactly three model calls: two that ask for the
`lookup` tool, then the answer. The model decides from the conversation alone
(how many tool results it holds), never from call order, so parallel
conversations cannot confuse it. Every call and tool call is counted, so the
benchmark can prove that each implementation did all of the work.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

MODEL_CALLS = 3
"""Model calls per subagent: two with a tool call, then the answer."""
TOOL_CALLS = MODEL_CALLS - 1
"""Tool calls per subagent."""
TOOL_NAME = "lookup"
SYSTEM = "You are a focused subagent. Use your tools, then answer with the result only."

ITEM_RE = re.compile(r"\bitem-(\d+)\b")


def prompt(item: int) -> str:
    """Return the task text for one item (every implementation uses it)."""
    return f"item-{item}"


def expected_answer(item: int) -> str:
    """Return the answer a subagent for `item` must end with."""
    outs = " ".join(f"v{item}.{step}" for step in range(TOOL_CALLS))
    return f"answer item-{item}: {outs}"


class ScriptError(AssertionError):
    """The fake was asked something its script does not cover."""


@dataclass
class Counts:
    """What the fake saw: calls, tool calls, subagents in flight."""

    model_calls: int = 0
    tool_calls: int = 0
    answers: int = 0
    in_flight: int = 0
    """Subagents between their first model call's start and their answer."""
    peak_in_flight: int = 0
    gate: asyncio.Event | None = field(default=None, repr=False)
    """Set once `FakeChatModel.gate` subagents are in flight."""
    release: asyncio.Event | None = field(default=None, repr=False)
    """When given, first calls wait for it too, after the gate (to look at the held state)."""

    def reset(self) -> None:
        """Zero every counter."""
        self.model_calls = self.tool_calls = self.answers = 0
        self.in_flight = self.peak_in_flight = 0
        self.gate = self.release = None

    def check(self, n: int, *, limit: int | None = None) -> None:
        """Fail loudly unless exactly `n` subagents did all their calls, within `limit`."""
        want = (MODEL_CALLS * n, TOOL_CALLS * n, n, 0)
        got = (self.model_calls, self.tool_calls, self.answers, self.in_flight)
        if got != want:
            msg = f"(model calls, tool calls, answers, in flight): want {want}, got {got}"
            raise AssertionError(msg)
        if limit is not None and self.peak_in_flight > limit:
            msg = f"{self.peak_in_flight} subagents in flight at once, over the limit {limit}"
            raise AssertionError(msg)


class AsyncFake(BaseChatModel):
    """What every scripted fake shares: async only, tools bound as JSON schemas."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kw: Any) -> Any:
        # What ChatOpenAI does too: convert every tool to its JSON schema on each bind.
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kw)

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise ScriptError("the fake is async only")


class FakeChatModel(AsyncFake):
    """A chat model that scripts a 3-call ReAct conversation per item.

    `latency` is the time each call takes (asyncio.sleep; 0 still yields to the
    loop), `latencies` overrides it per item. With `gate` set, every first call
    waits until `gate` subagents are in flight at once (for memory at a known
    width).
    """

    latency: float = 0.0
    latencies: dict[int, float] = Field(default_factory=dict)
    gate: int | None = None
    counts: Counts = Field(default_factory=Counts)

    @property
    def _llm_type(self) -> str:
        return "bench-fake"

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        names = [t["function"]["name"] for t in kwargs.get("tools") or []]
        if names != [TOOL_NAME]:
            raise ScriptError(f"want exactly the `{TOOL_NAME}` tool bound, got {names}")
        first = next((m.content for m in messages if isinstance(m, HumanMessage)), "")
        match = ITEM_RE.search(first if isinstance(first, str) else "")
        if match is None:
            raise ScriptError(f"no item in the conversation: {str(first)[:80]!r}")
        item = int(match.group(1))
        done = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
        c = self.counts
        c.model_calls += 1
        if not any(isinstance(m, AIMessage) for m in messages):
            c.in_flight += 1
            c.peak_in_flight = max(c.peak_in_flight, c.in_flight)
            if self.gate is not None:
                await self._wait_for_gate()
        await asyncio.sleep(self.latencies.get(item, self.latency))
        if len(done) < TOOL_CALLS:
            step = len(done)
            call = {
                "name": TOOL_NAME,
                "args": {"item": item, "step": step},
                "id": f"call-{item}-{step}",
                "type": "tool_call",
            }
            return _reply(AIMessage("", tool_calls=[call]))
        c.answers += 1
        c.in_flight -= 1
        return _reply(AIMessage(f"answer item-{item}: " + " ".join(done)))

    async def _wait_for_gate(self) -> None:
        c = self.counts
        if c.gate is None:
            c.gate = asyncio.Event()
        if c.in_flight >= (self.gate or 0):
            c.gate.set()
        try:
            await asyncio.wait_for(c.gate.wait(), timeout=300)
        except TimeoutError:
            msg = f"only {c.in_flight} of {self.gate} subagents ever ran at once"
            raise ScriptError(msg) from None
        if c.release is not None:
            await c.release.wait()


def _reply(message: AIMessage) -> ChatResult:
    message.usage_metadata = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    return ChatResult(generations=[ChatGeneration(message=message)])


def make_tool(counts: Counts) -> BaseTool:
    """Return the trivial async tool, counting its calls in `counts`."""

    @tool(TOOL_NAME)
    async def lookup(item: int, step: int) -> str:
        """Look up the value of an item at a step."""
        counts.tool_calls += 1
        return f"v{item}.{step}"

    return lookup


def check_answers(answers: dict[int, str], items: Sequence[int]) -> None:
    """Fail loudly unless every item got its own, complete answer."""
    wrong = [i for i in items if answers.get(i) != expected_answer(i)]
    if wrong or len(answers) != len(items):
        sample = {i: answers.get(i) for i in wrong[:3]}
        msg = f"{len(wrong)} wrong or missing answers of {len(items)}, e.g. {sample}"
        raise AssertionError(msg)
