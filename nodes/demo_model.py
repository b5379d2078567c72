"""An offline, deterministic chat model that shows Fanfold's real mechanics with no key.

It is a demo, not an LLM: it writes plans by splitting the request, calls the
tools it is given (a calculator for arithmetic, text statistics otherwise) and
answers from what the tools returned. Every answer it writes starts with
`[demo model]`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from fanfold.nodes.prompts import INPUTS_HEADER, REQUEST_HEADER, RESULTS_HEADER

DEMO_LABEL = "[demo model]"
DEFAULT_DEMO_LATENCY_S = 0.05
MAX_DEMO_PARTS = 40

# Linear on any text: a match starts only where a digit run does, and no quantifier
# gives back what it took (with `\d+`, each of N digits started a scan to the run's
# end: 200 KB of digits took minutes).
_ARITH = re.compile(r"(?<!\d)\d++(?:\.\d++)?(?:\s*+[-+*/x×^]\s*+\(?\d++(?:\.\d++)?\)?)+")
_SPLIT = re.compile(r";|,|\band\b|\bversus\b|\bvs\.?(?=\s)", re.IGNORECASE)
_TASK = re.compile(r"^Task (\S+) \(([^)]*)\): (.*)$", re.MULTILINE)
_INPUT = re.compile(r"^\[(\S+?)(?: (\w+))?\] (.*)$", re.MULTILINE)


_STANCES = {
    "optimist": "the upside is real if the first step is small and measured.",
    "skeptic": "the costs and risks are likely underestimated; ask what fails first.",
    "engineer": "it is feasible in stages; estimate the work before committing.",
}


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)


def _tool_names(tools: Sequence[dict[str, Any]] | None) -> list[str]:
    return [t["function"]["name"] for t in tools or []]


_HANDLED = frozenset({"calculator", "text_stats", "current_time", "delegate"})
"""Tools the demo model has its own rules for; any other it calls when a task names it."""
_LISTED_TOOL = re.compile(r"^- ([A-Za-z0-9_-]+): ", re.MULTILINE)


def _named(text: str, tools: Sequence[str]) -> list[str]:
    """Return the tools (other than those with rules of their own) `text` names, in order."""
    found = []
    for name in tools:
        if name in _HANDLED:
            continue
        hit = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)
        if hit:
            found.append((hit.start(), name))
    return [name for _, name in sorted(found)]


def demo_plan(request: str, tools: Sequence[str] = ()) -> dict[str, Any]:
    """Return the plan the demo model writes for a request, as plain data.

    A part that names one of `tools` (the tools the planning prompt lists) gets that
    tool; arithmetic the calculator; anything else text statistics.
    """
    parts = [p.strip(" .?!:") for p in _SPLIT.split(request)]
    parts = [p for p in parts if len(p) > 2][:MAX_DEMO_PARTS] or [request.strip() or "the request"]
    tasks: list[dict[str, Any]] = []
    for i, part in enumerate(parts, start=1):
        arithmetic = bool(_ARITH.search(part))
        named = _named(part, tools)
        tasks.append(
            {
                "id": f"t{i}",
                "description": part,
                "kind": "analyst" if arithmetic else "researcher",
                "depends_on": [],
                "tools": named or (["calculator"] if arithmetic else ["text_stats"]),
            }
        )
    ids = [t["id"] for t in tasks]
    if len(tasks) > 1:
        tasks.append(
            {
                "id": "compare",
                "description": f"Compare and weigh the findings on: {request.strip()}",
                "kind": "analyst",
                "depends_on": ids,
                "tools": ["text_stats"],
            }
        )
        tasks.append(
            {
                "id": "report",
                "description": "Write a short report from the comparison",
                "kind": "writer",
                "depends_on": ["compare"],
                "tools": [],
            }
        )
    return {
        "tasks": tasks,
        "rationale": f"{len(parts)} parts run in parallel, then a comparison and a report",
    }


def demo_extension(prompt: str) -> dict[str, Any]:
    """Return the demo's re-plan: one follow-up check after the last task, once."""
    found = re.search(r"^Existing task ids: (.*)$", prompt, re.MULTILINE)
    ids = [i.strip() for i in found.group(1).split(",")] if found else []
    if not ids or "followup" in ids:
        return {"tasks": [], "rationale": "the results answer the request"}
    task = {
        "id": "followup",
        "description": "Check the findings so far for gaps",
        "kind": "analyst",
        "depends_on": [ids[-1]],
        "tools": ["text_stats"],
    }
    return {"tasks": [task], "rationale": "one check of the findings"}


def _demo_args(function: dict[str, Any], name: str, description: str) -> dict[str, Any]:
    """Return arguments for a tool a task names, from its JSON schema and the task's text.

    Numbers in the text fill numeric parameters in order; a string parameter gets the
    text after the tool's name (a second one the same); booleans are false, lists empty.
    Parameters that are not required are left out.
    """
    params = function.get("parameters") or {}
    props: dict[str, Any] = params.get("properties") or {}
    required = params.get("required") or []
    numbers = iter(re.findall(r"-?\d+(?:\.\d+)?", description))
    after = re.split(rf"(?<![\w-]){re.escape(name)}(?![\w-])", description, maxsplit=1)[-1]
    text = after.strip(" :,-") or description
    args: dict[str, Any] = {}
    for key in required:
        kind = (props.get(key) or {}).get("type")
        if kind in ("integer", "number"):
            raw = next(numbers, "0")
            value = float(raw)
            args[key] = int(value) if kind == "integer" else value
        elif kind == "boolean":
            args[key] = False
        elif kind == "array":
            args[key] = []
        elif kind == "object":
            args[key] = {}
        else:
            args[key] = text
    return args


def burn_cpu(seconds: float) -> None:
    """Keep the calling thread busy until it has used `seconds` of CPU (hashing)."""
    if seconds <= 0:
        return
    end = time.thread_time() + seconds
    digest = hashlib.sha256()
    while time.thread_time() < end:
        for _ in range(200):
            digest.update(b"fanfold demo cpu burn")


def _task_of(messages: list[BaseMessage]) -> str | None:
    """Return the id of the task a subagent's messages are about, if they are one's."""
    first_user = next((_text(m) for m in messages if isinstance(m, HumanMessage)), "")
    task = _TASK.search(first_user)
    return task.group(1) if task else None


class DemoFault(RuntimeError):
    """A call the demo model was told to fail (`demo:fail=t2`)."""


class DemoChatModel(BaseChatModel):
    """A deterministic offline model that plans, calls tools and answers."""

    latency: float = DEFAULT_DEMO_LATENCY_S
    """Seconds each call takes, so the parallelism is visible."""
    log: str | None = None
    """A file to append one JSON line to per call (`{"who": ..., "pid": ...}`), to count calls."""
    fail: list[str] = Field(default_factory=list)
    """Task ids whose every call fails (`DemoFault`): a failure to watch a policy or a rerun."""
    hang: list[str] = Field(default_factory=list)
    """Task ids whose every call never answers (until cancelled): a timeout to watch."""
    cpu: float = 0.0
    """Seconds of CPU each call burns in the calling thread (a busy loop that holds the
    event loop too), on top of `latency`: CPU-heavy subagents, to watch workers scale."""

    @property
    def _llm_type(self) -> str:
        return "fanfold-demo"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools the way provider models do: as OpenAI tool schemas."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        burn_cpu(self.cpu)
        time.sleep(self.latency)
        return self._result(messages, kwargs.get("tools"))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await self._hang_if_told(messages)
        burn_cpu(self.cpu)
        await asyncio.sleep(self.latency)
        return self._result(messages, kwargs.get("tools"))

    async def _hang_if_told(self, messages: list[BaseMessage]) -> None:
        if self.hang and _task_of(messages) in self.hang:
            await asyncio.Event().wait()  # until cancelled (a task's timeout)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Stream the same reply word by word.

        LangChain streams when a handler asks, as LangGraph's `messages` stream mode
        does. Half the latency passes before the first word, the other half is spread
        over the rest.
        """
        await self._hang_if_told(messages)
        burn_cpu(self.cpu)
        await asyncio.sleep(self.latency / 2)
        message = self._result(messages, kwargs.get("tools")).generations[0].message
        assert isinstance(message, AIMessage)
        words = re.findall(r"\S+\s*|\s+", _text(message)) or [""]
        pause = self.latency / 2 / max(1, len(words))
        calls = [
            {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
            for i, c in enumerate(message.tool_calls)
        ]
        for i, word in enumerate(words):
            last = i == len(words) - 1
            chunk = AIMessageChunk(
                content=word,
                tool_call_chunks=calls if last else [],
                usage_metadata=message.usage_metadata if last else None,
                chunk_position="last" if last else None,
            )
            if run_manager is not None and word:
                await run_manager.on_llm_new_token(word, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)
            if not last:
                await asyncio.sleep(pause)

    def _result(
        self, messages: list[BaseMessage], tools: Sequence[dict[str, Any]] | None
    ) -> ChatResult:
        if self.log:
            self._log(messages, tools)
        if self.fail and (tid := _task_of(messages)) in self.fail:
            msg = f"the demo model fails every call of task `{tid}` (fail=...)"
            raise DemoFault(msg)
        message = self._respond(messages, tools or [])
        prompt = sum(_tokens(_text(m)) for m in messages)
        out = _tokens(_text(message) + json.dumps(message.tool_calls))
        message.usage_metadata = UsageMetadata(
            input_tokens=prompt, output_tokens=out, total_tokens=prompt + out
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _log(self, messages: list[BaseMessage], tools: Sequence[dict[str, Any]] | None) -> None:
        first_user = next((_text(m) for m in messages if isinstance(m, HumanMessage)), "")
        task = _TASK.search(first_user)
        names = _tool_names(tools)
        who = task.group(1) if task else ("planner" if "Plan" in names else "synthesizer")
        line = json.dumps({"who": who, "pid": os.getpid(), "t": time.time()})
        with open(str(self.log), "a", encoding="utf-8") as fh:  # noqa: ASYNC230 - one short line
            fh.write(line + "\n")

    def _respond(self, messages: list[BaseMessage], schemas: Sequence[dict[str, Any]]) -> AIMessage:
        tools = _tool_names(schemas)
        first_user = next((_text(m) for m in messages if isinstance(m, HumanMessage)), "")
        if "PlanExtension" in tools:
            args = demo_extension(first_user)
            return AIMessage(
                content="", tool_calls=[{"name": "PlanExtension", "args": args, "id": "ext_1"}]
            )
        if "Plan" in tools:
            system = next((_text(m) for m in messages if isinstance(m, SystemMessage)), "")
            listed = _LISTED_TOOL.findall(system.split("Tools:", 1)[-1])
            args = demo_plan(first_user, listed)
            return AIMessage(
                content="", tool_calls=[{"name": "Plan", "args": args, "id": "plan_1"}]
            )
        tool_results = [m for m in messages if isinstance(m, ToolMessage)]
        task = _TASK.search(first_user)
        if tools and not tool_results and task:
            calls = self._tool_calls(task.group(3), first_user, schemas)
            if calls:
                return AIMessage(content="", tool_calls=calls)
        return AIMessage(content=self._answer(first_user, task, tool_results))

    def _tool_calls(
        self, description: str, prompt: str, schemas: Sequence[dict[str, Any]]
    ) -> list[Any]:
        tools = _tool_names(schemas)
        by_name = {t["function"]["name"]: t["function"] for t in schemas}
        calls: list[dict[str, Any]] = [
            {"name": name, "args": _demo_args(by_name[name], name, description), "id": f"n{i}"}
            for i, name in enumerate(_named(description, tools))
        ]
        if calls:
            return calls  # the task names its tools: call those
        if "calculator" in tools:
            for i, m in enumerate(_ARITH.finditer(description)):
                expr = m.group(0).replace("x", "*").replace("×", "*")
                calls.append({"name": "calculator", "args": {"expression": expr}, "id": f"c{i}"})
        if "current_time" in tools and re.search(r"\b(time|date|today|now)\b", description, re.I):
            calls.append({"name": "current_time", "args": {}, "id": "now"})
        if not calls and "text_stats" in tools:
            inputs = prompt.split(INPUTS_HEADER, 1)[1] if INPUTS_HEADER in prompt else ""
            text = f"{description}\n{inputs}".strip()
            calls.append({"name": "text_stats", "args": {"text": text}, "id": "stats"})
        return calls

    def _answer(
        self, prompt: str, task: re.Match[str] | None, tool_results: list[ToolMessage]
    ) -> str:
        if tool_results and task:
            found = "; ".join(f"{m.name} -> {_text(m)}" for m in tool_results)
            return f"{DEMO_LABEL} {task.group(3)}: {found}"
        inputs = (
            _INPUT.findall(prompt.split(INPUTS_HEADER, 1)[-1]) if INPUTS_HEADER in prompt else []
        )
        if task and not inputs and task.group(2) in _STANCES:
            return f"{DEMO_LABEL} As the {task.group(2)}: {_STANCES[task.group(2)]}"
        if task:
            joined = " | ".join(f"{tid}: {text[:120]}" for tid, _, text in inputs)
            return f"{DEMO_LABEL} {task.group(3)} from {len(inputs)} input(s): {joined}"
        if RESULTS_HEADER in prompt:
            request = prompt.split("\n", 1)[0].removeprefix(REQUEST_HEADER.format(request=""))
            results = _INPUT.findall(prompt.split(RESULTS_HEADER, 1)[1])
            ok = sum(1 for _, status, _ in results if status == "ok")
            lines = [f"- {tid} ({status}): {text[:160]}" for tid, status, text in results]
            return (
                f"{DEMO_LABEL} Answer to: {request}\n"
                f"{ok} of {len(results)} tasks ended ok.\n" + "\n".join(lines)
            )
        return f"{DEMO_LABEL} {prompt[:200]}"
