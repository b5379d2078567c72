"""The llmock helper: a real `ChatOpenAI` against llmock, a third-party server, over HTTP."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator

import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.llmock_server import HOST, LLMockProcess, LLMockStartError, llmock_fixture, run_llmock

pytestmark = pytest.mark.http

PLAN = {"tasks": [{"id": "t1", "kind": "research", "goal": "Find the facts", "deps": []}]}
REPLY = f"Here is the plan:\n```json\n{json.dumps(PLAN)}\n```\nI hope it helps."
PROMPT = "Plan the work for a report on parallel agents."

planner_llm = llmock_fixture(scope="module", reply=REPLY, tool_mode="off")


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def chat(server: LLMockProcess, **kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(
        model="x",
        base_url=server.base_url,
        api_key="not-needed",
        max_retries=0,
        timeout=10,
        **kwargs,
    )


def fenced_json(text: str) -> object:
    match = re.search(r"```json\n(.*?)\n```", text, re.DOTALL)
    assert match, text
    return json.loads(match.group(1))


def test_fixed_reply_over_http(planner_llm: LLMockProcess) -> None:
    assert planner_llm.base_url == f"http://{HOST}:{planner_llm.port}/v1"
    before = len(planner_llm.requests())

    reply = chat(planner_llm).invoke(PROMPT)

    assert isinstance(reply, AIMessage)
    assert reply.content == REPLY
    assert fenced_json(reply.text) == PLAN
    assert not reply.tool_calls
    # llmock reports usage (its own estimate: about a token per 4 characters).
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    # The request really went over HTTP to llmock, which journaled it.
    served = planner_llm.requests()[before:]
    assert [(r["method"], r["path"], r["status"]) for r in served] == [
        ("POST", "/v1/chat/completions", 200)
    ]


async def test_fixed_reply_async(planner_llm: LLMockProcess) -> None:
    reply = await chat(planner_llm).ainvoke(PROMPT)
    assert reply.content == REPLY


@pytest.mark.parametrize("tool_choice", ["auto", "required", "add"])
def test_tools_off_answers_in_text(planner_llm: LLMockProcess, tool_choice: str) -> None:
    model = chat(planner_llm).bind_tools([add], tool_choice=tool_choice)
    reply = model.invoke("Add 2 and 3 with the add tool.")
    assert isinstance(reply, AIMessage)
    assert reply.tool_calls == []
    assert reply.invalid_tool_calls == []
    assert reply.content == REPLY
    assert reply.response_metadata["finish_reason"] == "stop"


def test_tools_off_without_a_scripted_reply() -> None:
    """No fixed reply: llmock's own text ("static" style), still never a tool call."""
    with run_llmock(tool_mode="off", response_style="static") as server:
        reply = chat(server).bind_tools([add], tool_choice="required").invoke("Add 2 and 3.")
    assert isinstance(reply, AIMessage)
    assert reply.tool_calls == []
    assert reply.content == "Mock response from x."


def test_tool_mode_auto_does_call_tools() -> None:
    """The control for the tests above: in llmock's `auto` mode the same request gets a call."""
    with run_llmock(tool_mode="auto") as server:
        reply = chat(server).bind_tools([add]).invoke("Add 2 and 3.")
    assert isinstance(reply, AIMessage)
    assert [call["name"] for call in reply.tool_calls] == ["add"]
    assert set(reply.tool_calls[0]["args"]) == {"a", "b"}


def test_streaming_with_usage(planner_llm: LLMockProcess) -> None:
    chunks = list(chat(planner_llm, stream_usage=True).stream(PROMPT))
    assert len(chunks) > 2  # streamed piece by piece, not as one block
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert isinstance(total, AIMessageChunk)
    assert total.content == REPLY
    assert total.tool_call_chunks == []
    usage = total.usage_metadata
    assert usage is not None
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_scripted_faults_come_before_the_fixed_reply() -> None:
    behaviors = [{"type": "fail", "status": 429, "retry_after": 0.1, "times": 1}]
    with run_llmock(reply="ok", behaviors=behaviors) as server:
        model = chat(server)
        with pytest.raises(openai.RateLimitError):
            model.invoke("hello")
        assert model.invoke("hello").content == "ok"


def test_server_is_gone_after_the_context() -> None:
    with run_llmock(reply="bye") as server:
        assert chat(server).invoke("hello").content == "bye"
        os.kill(server.pid, 0)  # alive: no error
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect((HOST, server.port))


def test_startup_failure_reports_stderr() -> None:
    with (
        pytest.raises(LLMockStartError, match="LLMOCK_RESPONSE_STYLE must be one of"),
        run_llmock(extra_args=["--response-style", "bogus"]),
    ):
        pytest.fail("llmock should not have started")


@pytest.fixture
def two_servers() -> Iterator[tuple[LLMockProcess, LLMockProcess]]:
    with run_llmock(reply="one") as first, run_llmock(reply="two") as second:
        yield first, second


def test_servers_are_independent(two_servers: tuple[LLMockProcess, LLMockProcess]) -> None:
    first, second = two_servers
    assert first.port != second.port
    assert chat(first).invoke("hi").content == "one"
    assert chat(second).invoke("hi").content == "two"


def test_scripted_tool_call_then_the_fixed_reply() -> None:
    call = {"name": "add", "arguments": {"a": 2, "b": 3}}
    with run_llmock(reply="5", behaviors=[{"type": "reply", "tool_calls": [call]}]) as server:
        model = chat(server).bind_tools([add])
        first = model.invoke("Add 2 and 3.")
        second = model.invoke("Add 2 and 3.")
        with pytest.raises(ValueError, match="never fires"):
            server.script({"type": "reply", "text": "shadowed"})
        server.script({"type": "delay", "seconds": 0.01})  # other kinds are fine
    assert isinstance(first, AIMessage)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert second.content == "5"
