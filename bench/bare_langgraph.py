"""Bare LangGraph: one `Send` per item to a compiled ReAct subgraph, under `max_concurrency`."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, NotRequired

from fake import ITEM_RE, SYSTEM, prompt
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, Send
from raw_asyncio import react
from typing_extensions import TypedDict


class SubInput(TypedDict):
    """The `Send` payload."""

    item: int
    inputs: NotRequired[list[str]]
    """Answers of the items this one needs (DAG runs only)."""


class SubOutput(TypedDict):
    """A subagent's only write to its parent."""

    answers: Annotated[list[str], operator.add]


class SubState(SubInput, SubOutput):
    """A subagent's own conversation."""

    messages: Annotated[list[AnyMessage], add_messages]


class ParentState(TypedDict):
    """Items to run, the answers so far, and where the next window starts."""

    items: list[int]
    answers: Annotated[list[str], operator.add]
    cursor: int


def build_subagent(
    model: BaseChatModel, tools: Sequence[BaseTool], checkpointer: Checkpointer = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Return the ReAct subgraph: agent <-> tools; the agent writes the answer."""
    bound = model.bind_tools(tools)
    by_name = {t.name: t for t in tools}

    async def agent(state: SubState) -> dict[str, Any]:
        history = state.get("messages") or []
        new: list[AnyMessage] = []
        if not history:
            text = prompt(state["item"])
            if state.get("inputs"):
                text += "\n\nInputs:\n" + "\n".join(state.get("inputs") or [])
            new = [SystemMessage(SYSTEM), HumanMessage(text)]
        reply = await bound.ainvoke([*history, *new])
        assert isinstance(reply, AIMessage)
        out: dict[str, Any] = {"messages": [*new, reply]}
        if not reply.tool_calls:
            out["answers"] = [reply.text]
        return out

    async def run_tools(state: SubState) -> dict[str, Any]:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        outs = await asyncio.gather(
            *(by_name[c["name"]].ainvoke(c["args"]) for c in last.tool_calls)
        )
        return {
            "messages": [
                ToolMessage(str(o), tool_call_id=c["id"] or "", name=c["name"])
                for c, o in zip(last.tool_calls, outs, strict=True)
            ]
        }

    def route(state: SubState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    builder = StateGraph(SubState, input_schema=SubInput, output_schema=SubOutput)
    builder.add_node("agent", agent)
    builder.add_node("tools", run_tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


def build(
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    *,
    checkpointer: Checkpointer = None,
    subagent_checkpoints: bool = True,
    window: int | None = None,
    one_node: bool = False,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Return the parent graph: one `Send` per item to the subagent.

    Args:
        checkpointer: the parent's checkpointer (None: none).
        subagent_checkpoints: with a checkpointer, let the subgraph inherit it
            (a checkpoint per subagent step); False compiles the subgraph with
            `checkpointer=False`, so a subagent is saved once, when it finishes.
        window: send at most this many items per superstep (None: all at once);
            a `fold` node between windows moves the cursor on.
        one_node: the subagent is one node running the whole ReAct loop (the raw
            asyncio loop), not a subgraph: one LangGraph step per subagent.
    """
    sub: Any = build_subagent(model, tools, None if subagent_checkpoints else False)
    if one_node:
        bound = model.bind_tools(tools)
        by_name = {t.name: t for t in tools}

        async def sub(state: SubInput) -> dict[str, Any]:
            return {"answers": [await react(bound, by_name, prompt(state["item"]))]}

    def fan_out(state: ParentState) -> list[Send] | str:
        start = state.get("cursor", 0)
        stop = len(state["items"]) if window is None else start + window
        batch = state["items"][start:stop]
        if not batch:
            return END
        return [Send("subagent", {"item": i}) for i in batch]

    def fold(state: ParentState) -> dict[str, Any]:
        return {"cursor": state.get("cursor", 0) + (window or len(state["items"]))}

    builder = StateGraph(ParentState)
    builder.add_node("subagent", sub)
    builder.add_conditional_edges(START, fan_out, ["subagent", END])
    if window is None:
        builder.add_edge("subagent", END)
    else:
        builder.add_node("fold", fold)
        builder.add_edge("subagent", "fold")
        builder.add_conditional_edges("fold", fan_out, ["subagent", END])
    return builder.compile(checkpointer=checkpointer)


async def run_flat(
    items: Sequence[int],
    *,
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    mc: int,
    graph: CompiledStateGraph[Any, Any, Any, Any] | None = None,
    thread_id: str | None = None,
) -> dict[int, str]:
    """Run one subagent per item, at most `mc` at once; return answers by item."""
    graph = graph or build(model, tools)
    config: dict[str, Any] = {"max_concurrency": mc, "recursion_limit": 10_000}
    if thread_id is not None:
        config["configurable"] = {"thread_id": thread_id}
    out = await graph.ainvoke({"items": list(items), "answers": [], "cursor": 0}, config)
    answers: dict[int, str] = {}
    for text in out["answers"]:
        match = ITEM_RE.search(text)
        assert match is not None, text
        answers[int(match.group(1))] = text
    return answers


def build_dag(model: BaseChatModel, tools: Sequence[BaseTool]) -> Any:
    """Return a functional-API entrypoint that starts each item as soon as its inputs are done.

    Not wave by wave: the entrypoint awaits whichever subagent finishes first and
    starts every item that has just become ready, each as a LangGraph `@task`
    (so `max_concurrency`, checkpoints and retries still apply).
    """
    sub = build_subagent(model, tools)

    @task
    async def run_item(item: int, inputs: list[str]) -> str:
        out = await sub.ainvoke({"item": item, "inputs": inputs})
        return str(out["answers"][-1])

    @entrypoint()
    async def run_dag(deps: dict[int, list[int]]) -> dict[int, str]:
        done: dict[int, str] = {}
        waiting = dict(deps)
        running: dict[asyncio.Future[str], int] = {}

        def start_ready() -> None:
            for item, needs in list(waiting.items()):
                if all(d in done for d in needs):
                    del waiting[item]
                    fut = asyncio.ensure_future(run_item(item, [done[d] for d in needs]))
                    running[fut] = item

        start_ready()
        while running:
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for fut in finished:
                done[running.pop(fut)] = fut.result()
            start_ready()
        return done

    return run_dag


async def run_dag(
    deps: Mapping[int, Sequence[int]],
    *,
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    mc: int,
) -> dict[int, str]:
    """Run a DAG (item -> items it needs), each item as soon as its own inputs are done."""
    graph = build_dag(model, tools)
    out = await graph.ainvoke({i: list(d) for i, d in deps.items()}, {"max_concurrency": mc})
    return dict(out)
