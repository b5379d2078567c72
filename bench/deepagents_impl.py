"""deepagents (the peer row): a main deep agent whose `task` tool fans the items out.

The main agent's fake model (`LeadModel`) answers its first turn with one
AIMessage holding N `task` tool calls, one per item (description
`fake.prompt(item)`, subagent type `worker`), and its second turn with a short
answer. `worker` is a declarative deepagents `SubAgent` with `tools=[lookup]`
and the bench's fake model, so each subagent makes exactly the fake's 3 model
calls and 2 tool calls.

How deepagents 0.7.32 runs them: `create_deep_agent` (deepagents/graph.py) builds a
LangChain `create_agent` graph whose `SubAgentMiddleware`
(deepagents/middleware/subagents.py) adds the `task` tool; its coroutine `atask`
awaits `subagent.ainvoke(...)` (a compiled `create_agent` graph per subagent type)
and returns the subagent's last message as a `ToolMessage`. The main agent's
`model -> tools` edge (langchain/agents/factory.py, `_make_model_to_tools_edge`)
returns one `Send("tools", [tool_call])` per pending tool call, so each `task`
call is a Pregel task of its own in one superstep, and LangGraph's
`config={"max_concurrency": mc}` (a semaphore in langgraph/pregel/_executor.py,
`AsyncBackgroundExecutor`) bounds how many run at once. deepagents adds no limit
of its own, and no timeout.

deepagents gives every declarative subagent its default middleware (filesystem
tools, summarization, tool-call patching, prompt caching, unsupported content),
so a worker's model is bound to `lookup` and the filesystem tools (`ls`,
`read_file`, ...); `read_file` cannot be removed (`FilesystemMiddleware(tools=...)`
must list it). `WorkerModel` is the fake with every tool schema converted on each
bind, as before, but scripted on `lookup` alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from deepagents import create_deep_agent
from fake import SYSTEM, TOOL_NAME, AsyncFake, FakeChatModel, ScriptError, prompt
from langchain.agents.middleware import AgentMiddleware
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.graph.state import CompiledStateGraph
from pydantic import Field

SUBAGENT = "worker"
TASK_TOOL = "task"
CALL_PREFIX = "task-"
"""The main agent's tool call id for item n is `task-n`."""


class WorkerModel(FakeChatModel):
    """The bench's fake, bound to whatever deepagents binds, scripted on `lookup` alone.

    `bound_tools` records the tool names of the last call (for the report).
    """

    bound_tools: list[str] = Field(default_factory=list)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = kwargs.pop("tools", None) or []
        self.bound_tools = [t["function"]["name"] for t in tools]
        mine = [t for t in tools if t["function"]["name"] == TOOL_NAME]
        return await super()._agenerate(messages, stop, run_manager, tools=mine, **kwargs)


class LeadModel(AsyncFake):
    """The main agent's fake: N `task` calls on its first turn, an answer on its second.

    `items` are the items of the next run (set before each run).
    """

    items: list[int] = Field(default_factory=list)
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "bench-fake-lead"

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        names = [t["function"]["name"] for t in kwargs.get("tools") or []]
        if TASK_TOOL not in names:
            raise ScriptError(f"the `{TASK_TOOL}` tool is not bound: {names}")
        self.calls += 1
        done = [m for m in messages if isinstance(m, ToolMessage)]
        if not done:
            calls = [
                {
                    "name": TASK_TOOL,
                    "args": {"description": prompt(i), "subagent_type": SUBAGENT},
                    "id": f"{CALL_PREFIX}{i}",
                    "type": "tool_call",
                }
                for i in self.items
            ]
            reply = AIMessage("", tool_calls=calls)
        else:
            reply = AIMessage(f"all {len(done)} subagents answered")
        reply.usage_metadata = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        return ChatResult(generations=[ChatGeneration(message=reply)])


def build(
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    lead: LeadModel,
    *,
    middleware: Sequence[AgentMiddleware[Any, Any, Any]] = (),
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Return the deep agent: `lead` as the main agent's model, `worker` as its subagent.

    `middleware` is added to the worker subagent's own (e.g. a tool-error handler).
    """
    worker: dict[str, Any] = {
        "name": SUBAGENT,
        "description": "Looks an item up with its `lookup` tool and answers with the result.",
        "system_prompt": SYSTEM,
        "tools": list(tools),
        "model": model,
    }
    if middleware:
        worker["middleware"] = list(middleware)
    return create_deep_agent(model=lead, subagents=[worker])  # type: ignore[list-item]


def run_config(mc: int | None) -> RunnableConfig | None:
    """Return the run config that bounds the `task` calls to `mc` at once (None: unbounded)."""
    return None if mc is None else {"max_concurrency": mc}


def task_answers(messages: Iterable[Any]) -> dict[int, str]:
    """Return the `task` tool's results by item, from the main agent's messages."""
    out: dict[int, str] = {}
    for m in messages:
        if isinstance(m, ToolMessage) and m.tool_call_id.startswith(CALL_PREFIX):
            out[int(m.tool_call_id.removeprefix(CALL_PREFIX))] = str(m.content)
    return out


def request() -> dict[str, Any]:
    """Return the main agent's input."""
    return {"messages": [HumanMessage("Run one worker subagent per item.")]}


async def run_flat(
    items: Sequence[int],
    *,
    agent: CompiledStateGraph[Any, Any, Any, Any],
    lead: LeadModel,
    mc: int | None,
) -> dict[int, str]:
    """Run one subagent per item through the main agent's `task` tool; return answers by item."""
    lead.items = list(items)
    state = await agent.ainvoke(request(), config=run_config(mc))
    answers = task_answers(state["messages"])
    missing = set(items) - set(answers)
    if missing:
        msg = f"{len(missing)} of {len(items)} task results missing, e.g. {sorted(missing)[:3]}"
        raise AssertionError(msg)
    return answers


async def stream_flat(
    items: Sequence[int],
    *,
    agent: CompiledStateGraph[Any, Any, Any, Any],
    lead: LeadModel,
    mc: int | None,
    seen: dict[int, str],
) -> dict[int, str]:
    """Like `run_flat`, but streams updates, adding each `task` result to `seen` as it comes.

    What a caller could have kept of a run that raises or never ends.
    """
    lead.items = list(items)
    async for chunk in agent.astream(request(), config=run_config(mc), stream_mode="updates"):
        seen.update(task_answers(_messages_in(chunk)))
    return dict(seen)


def _messages_in(obj: Any) -> Iterable[Any]:
    """Yield every message nested in a stream chunk (dicts, lists, Commands)."""
    if isinstance(obj, BaseMessage):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _messages_in(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _messages_in(v)
    elif hasattr(obj, "update"):
        yield from _messages_in(obj.update)
