"""Shared helpers of the fault-tolerance tests: model errors, plans, settings, results.

`status_error` and `rate_limited` build the errors an OpenAI client raises; `plan_of`
and `task` build plans; `settings` gives run settings with no start jitter;
`checkpointed` an orchestrator that dispatches in windows; `by_id`, `statuses` and
`error_types` read a run's results.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.memory import InMemorySaver

from fanfold.graphs.orchestrator import compile_orchestrator
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import Plan, SubagentResult, Task

URL = "http://127.0.0.1/v1/chat/completions"


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, request=httpx.Request("POST", URL))


def status_error(
    cls: type[openai.APIStatusError], status: int, headers: dict[str, str] | None = None
) -> openai.APIStatusError:
    return cls(f"Error code: {status}", response=response(status, headers), body=None)


def rate_limited(**headers: str) -> openai.RateLimitError:
    err = status_error(openai.RateLimitError, 429, headers)
    assert isinstance(err, openai.RateLimitError)
    return err


def plan_of(*tasks: Task) -> Plan:
    return Plan(tasks=list(tasks), rationale="test")


def task(tid: str, *deps: str, timeout_s: float | None = None, tools: Any = None) -> Task:
    return Task(
        id=tid, description=f"do {tid}", depends_on=list(deps), timeout_s=timeout_s, tools=tools
    )


def by_id(results: list[SubagentResult]) -> dict[str, SubagentResult]:
    return {r.task_id: r for r in results}


def statuses(results: list[SubagentResult]) -> dict[str, str]:
    return {r.task_id: r.status for r in results}


def error_types(results: list[SubagentResult]) -> dict[str, str | None]:
    return {r.task_id: r.error.type if r.error else None for r in results}


def settings(model: BaseChatModel, **kw: Any) -> RunSettings:
    kw.setdefault("start_jitter_s", 0.0)
    return RunSettings(model=model, **kw)


def checkpointed() -> Any:
    """An orchestrator with a checkpointer: dispatch windows of `max_concurrency` Sends."""
    return compile_orchestrator(checkpointer=InMemorySaver())
