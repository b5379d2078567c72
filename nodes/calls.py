"""Every model call of a run goes through `call_model`: the one retry layer.

Order of the gates: the run's stop signal and budgets, the shared
requests-per-second limit, the adaptive concurrency limit, then the request
with its own timeout. Transient faults (see `nodes.faults`) are retried with
exponential backoff and jitter, honouring Retry-After, for a time budget
(`retry_budget_s`, cut short by the task's timeout) rather than a bare count, so a
server that is down for a few seconds loses no task; anything else is raised at
once. ChatOpenAI's own client retries are off (`max_retries=0` in `nodes.models`),
so retries are never stacked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from fanfold.nodes.context import RunSettings
from fanfold.nodes.errors import FanfoldError
from fanfold.nodes.faults import TruncatedReply, backoff_s, classify, retry_after_s
from fanfold.nodes.scope import RunScope
from fanfold.nodes.usage import usage_of


async def _request(
    runnable: Runnable[Any, Any],
    messages: Sequence[BaseMessage],
    config: RunnableConfig | None,
    timeout_s: float | None,
) -> Any:
    # A coroutine of its own, so nothing is created before the run's gates pass.
    async with asyncio.timeout(timeout_s):  # no extra task per call, unlike wait_for
        reply = await runnable.ainvoke(list(messages), config)
    message = reply.get("raw") if isinstance(reply, dict) else reply
    if isinstance(message, AIMessage) and _cut_short(message):
        msg = "the reply ended before the model finished (a cut stream or body)"
        raise TruncatedReply(msg)
    return reply


def _cut_short(message: AIMessage) -> bool:
    # An OpenAI reply always says why it finished; a stream cut before its last chunk
    # ends without it (and the client raises nothing).
    meta = message.response_metadata
    return meta.get("model_provider") == "openai" and not meta.get("finish_reason")


@dataclass
class CallStats:
    """What happened across one caller's model calls."""

    retries: int = 0
    gave_up: str | None = None
    """Why the last call stopped retrying a transient fault, if it did: said in the
    task's error."""


async def call_model(
    runnable: Runnable[Any, Any],
    messages: Sequence[BaseMessage],
    *,
    settings: RunSettings,
    scope: RunScope,
    stats: CallStats | None = None,
    interruptible: bool = True,
    config: RunnableConfig | None = None,
    deadline: float | None = None,
) -> Any:
    """Call a chat model (or a structured-output runnable) under the run's limits.

    `interruptible=False`: a stopped run (quorum met) does not stop this call; a spent
    budget still does. `deadline` (`time.monotonic()`): when the caller's task times
    out; no retry is made that would start after it.

    Raises:
        RunStopped: the run stopped (quorum met) before or during the call.
        BudgetExceeded: the run's budget is spent.
        Exception: a non-transient error, or a transient one whose retry would start past
            `retry_budget_s` (or the task's timeout, or after `max_retries`).
    """
    stats = stats if stats is not None else CallStats()
    retries = 0
    first: float | None = None  # the first attempt's start: the budget's clock, not queues
    while True:
        if scope.rate is not None:
            await scope.race(scope.rate.aacquire(), include_stop=interruptible)
        try:
            async with scope.limit.slot(
                lambda aw: scope.race(aw, include_stop=interruptible)
            ) as attempt:
                first = attempt.started if first is None else first
                reply = await scope.race(
                    _request(runnable, messages, config, settings.request_timeout_s),
                    include_stop=interruptible,
                )
        except FanfoldError:
            raise
        except Exception as exc:
            kind = classify(exc)
            if kind is None:
                raise
            # Noise is not congestion: its 429s are retried at the first step.
            step = 1 if kind == "rate_limited" and scope.limit.throttling_is_noise else retries + 1
            after = retry_after_s(exc)
            wait = backoff_s(step, after)
            now = time.monotonic()
            start = first if first is not None else now
            give_up = start + settings.retry_budget_s
            if deadline is not None:
                give_up = min(give_up, deadline)
            # A Retry-After reaching past the budget fails the call now: sleeping its capped
            # length would only end in a retry the server already said it would refuse.
            if now + max(wait, after or 0.0) > give_up:
                stats.gave_up = (
                    f"gave up after {retries + 1} attempt(s) in {now - start:.1f}s: "
                    f"the next retry would pass the retry budget "
                    f"({settings.retry_budget_s:g}s) or the task's timeout"
                )
                raise
            if settings.max_retries is not None and retries >= settings.max_retries:
                stats.gave_up = f"gave up after max_retries={settings.max_retries} retries"
                raise
            scope.record_fault(kind)
            retries += 1
            stats.retries += 1
            await scope.race(asyncio.sleep(wait), include_stop=interruptible)
            continue
        message = reply.get("raw") if isinstance(reply, dict) else reply
        scope.add_tokens(usage_of(message).total_tokens)
        return reply
