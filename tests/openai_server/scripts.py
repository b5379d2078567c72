"""What a test scripts and reads back: task scripts, and the record of each request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PLANNER = "planner"
SYNTHESIZER = "synthesizer"


@dataclass(frozen=True)
class ScriptedToolCall:
    """One tool call a scripted task asks for on its first turn."""

    name: str
    args: dict[str, Any]


@dataclass
class TaskScript:
    """How the server answers one task id."""

    answer: str
    """Start of the final answer."""
    tool_calls: list[ScriptedToolCall] = field(default_factory=list)
    """Asked for, all in one turn, before the final answer."""
    fail_status: int | None = None
    """Answer with this HTTP error status instead."""
    fail_message: str = "scripted failure"
    fail_times: int | None = None
    """Fail only the first N requests of this task; `None`: fail every one."""
    fail_headers: dict[str, str] = field(default_factory=dict)
    """Extra headers on the error response (e.g. `retry-after-ms`, `x-should-retry`)."""
    latency_s: float | None = None
    """Wait this long before each answer instead of the server's `latency_s`."""


@dataclass(frozen=True)
class Tokens:
    """Token counts as reported in a `usage` block."""

    input: int = 0
    output: int = 0
    total: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input + other.input, self.output + other.output, self.total + other.total
        )


@dataclass
class Call:
    """One `POST /v1/chat/completions` the server saw."""

    seq: int
    key: str | None
    """`planner`, `synthesizer`, a task id, or None when it could not tell."""
    status: int
    stream: bool
    include_usage: bool
    model: str
    authorization: str
    tools: list[str]
    tool_choice: Any
    body: dict[str, Any]
    started: float
    ended: float = 0.0
    tokens: Tokens | None = None
    """The usage reported, if any."""
    fault: str | None = None
    """The fault injected into this request (`FAULT_MODES`), or `throttled` (429 by
    the rate limit); None: answered as scripted."""
