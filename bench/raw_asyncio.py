"""Raw asyncio: a hand-written ReAct loop per item under an asyncio.Semaphore."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from fake import SYSTEM, prompt
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import BaseTool


async def react(bound: Any, tools: Mapping[str, BaseTool], text: str) -> str:
    """Run one conversation: call the model, run its tool calls, until it answers."""
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(text)]
    while True:
        reply = await bound.ainvoke(messages)
        assert isinstance(reply, AIMessage)
        messages.append(reply)
        if not reply.tool_calls:
            return reply.text
        outs = await asyncio.gather(
            *(tools[c["name"]].ainvoke(c["args"]) for c in reply.tool_calls)
        )
        messages.extend(
            ToolMessage(str(o), tool_call_id=c["id"] or "", name=c["name"])
            for c, o in zip(reply.tool_calls, outs, strict=True)
        )


async def run_flat(
    items: Sequence[int], *, model: BaseChatModel, tools: Sequence[BaseTool], mc: int
) -> dict[int, str]:
    """Run one subagent per item, at most `mc` at once; return answers by item."""
    bound = model.bind_tools(tools)
    by_name = {t.name: t for t in tools}
    sem = asyncio.Semaphore(mc)

    async def one(item: int) -> str:
        async with sem:
            return await react(bound, by_name, prompt(item))

    outs = await asyncio.gather(*(one(i) for i in items))
    return dict(zip(items, outs, strict=True))


async def run_dag(
    deps: Mapping[int, Sequence[int]],
    *,
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    mc: int,
) -> dict[int, str]:
    """Run a DAG (item -> items it needs): each item starts as soon as its own inputs are done."""
    bound = model.bind_tools(tools)
    by_name = {t.name: t for t in tools}
    sem = asyncio.Semaphore(mc)
    futures: dict[int, asyncio.Future[str]] = {}

    async def one(item: int) -> str:
        inputs = [await futures[d] for d in deps[item]]
        text = prompt(item)
        if inputs:
            text += "\n\nInputs:\n" + "\n".join(inputs)
        async with sem:
            return await react(bound, by_name, text)

    for item in deps:
        futures[item] = asyncio.ensure_future(one(item))
    outs = await asyncio.gather(*futures.values())
    return dict(zip(futures, outs, strict=True))
