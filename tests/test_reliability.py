"""Fault tolerance without HTTP: fault classes, backoff, limits, policies, budgets, retries.

Graph tests run the whole orchestrator on the task-keyed fakes of `tests.fakes`;
every timing bound here is one the issue sets (<= 0.2 s) or a generous ceiling far
below the timeout that would otherwise apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gc
import inspect
import json
import random
import time
import warnings
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from fanfold.graphs import cli
from fanfold.graphs.api import arun
from fanfold.graphs.orchestrator import compile_orchestrator
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import Plan, SubagentResult, Task
from fanfold.nodes.errors import BudgetExceeded, QuorumUnreachable, RunStopped, TaskFailedError
from fanfold.nodes.faults import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    RETRY_AFTER_CAP_S,
    backoff_s,
    classify,
    retry_after_s,
)
from fanfold.nodes.prompts import RESULTS_HEADER
from fanfold.nodes.scope import AdaptiveLimit, RunScope
from tests.fakes import TASK_RE, AsyncFakeModel, TaskScript, TaskScriptedModel

ISSUE_BOUND_S = 0.2
"""The issue's bound on timeout overshoot and fail_fast cancellation latency."""

URL = "http://127.0.0.1/v1/chat/completions"


# --- helpers ---------------------------------------------------------------------------


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


def first_human(messages: list[BaseMessage]) -> str:
    first = next((m for m in messages if isinstance(m, HumanMessage)), None)
    return str(first.content) if first is not None else ""


class FlakyModel(TaskScriptedModel):
    """The task-keyed fake, raising each task's scripted errors first, one per call."""

    errors: dict[str, list[BaseException]] = Field(default_factory=dict)
    raised: Counter[str] = Field(default_factory=Counter)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        match = TASK_RE.search(first_human(messages))
        pending = self.errors.get(match.group(1), []) if match else []
        if pending:
            self.raised[match.group(1)] += 1
            raise pending.pop(0)
        return await super()._agenerate(messages, stop, run_manager, **kwargs)


class LoopingModel(AsyncFakeModel):
    """A model that asks for the calculator on every turn and never answers."""

    calls: int = 0

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if RESULTS_HEADER in first_human(messages):
            return ChatResult(generations=[ChatGeneration(message=AIMessage("answer"))])
        self.calls += 1
        call = {
            "name": "calculator",
            "args": {"expression": f"{self.calls} + 1"},
            "id": f"c{self.calls}",
            "type": "tool_call",
        }
        return ChatResult(generations=[ChatGeneration(message=AIMessage("", tool_calls=[call]))])


# --- nodes/faults.py: what is transient ------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (status_error(openai.RateLimitError, 429), "rate_limited"),
        (status_error(openai.APIStatusError, 429), "rate_limited"),
        (status_error(openai.InternalServerError, 500), "server_error"),
        (status_error(openai.InternalServerError, 502), "server_error"),
        (status_error(openai.InternalServerError, 503), "server_error"),
        (status_error(openai.APIStatusError, 408), "server_error"),
        (status_error(openai.ConflictError, 409), "server_error"),
        (openai.APITimeoutError(request=httpx.Request("POST", URL)), "timeout"),
        (httpx.ReadTimeout("read timed out"), "timeout"),
        (httpx.ConnectTimeout("connect timed out"), "timeout"),
        (TimeoutError(), "timeout"),
        (openai.APIConnectionError(request=httpx.Request("POST", URL)), "connection"),
        (httpx.ConnectError("refused"), "connection"),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "connection",
        ),
        (httpx.ReadError("reset"), "connection"),
        (ConnectionResetError(), "connection"),
        (ConnectionRefusedError(), "connection"),
        (
            openai.APIResponseValidationError(response=response(200), body={"bad": 1}),
            "malformed",
        ),
        (json.JSONDecodeError("Expecting value", '{"choices": [', 13), "malformed"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_transient_errors_are_classified(exc: BaseException, kind: str) -> None:
    assert classify(exc) == kind


@pytest.mark.parametrize(
    "exc",
    [
        status_error(openai.BadRequestError, 400),
        status_error(openai.AuthenticationError, 401),
        status_error(openai.PermissionDeniedError, 403),
        status_error(openai.NotFoundError, 404),
        status_error(openai.UnprocessableEntityError, 422),
        ValueError("bad tool arguments"),
        KeyError("x"),
        RuntimeError("a bug"),
        BudgetExceeded("token budget spent"),
        RunStopped("quorum met"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_other_errors_are_never_retried(exc: BaseException) -> None:
    assert classify(exc) is None


def test_x_should_retry_header_overrides_the_status() -> None:
    # The server's own word wins, both ways, as the OpenAI client honours it.
    assert classify(status_error(openai.BadRequestError, 400, {"x-should-retry": "true"})) == (
        "server_error"
    )
    assert classify(status_error(openai.RateLimitError, 429, {"x-should-retry": "true"})) == (
        "rate_limited"
    )
    assert classify(status_error(openai.InternalServerError, 500, {"x-should-retry": "false"})) is (
        None
    )
    assert classify(status_error(openai.RateLimitError, 429, {"x-should-retry": "FALSE"})) is None
    # Anything else in the header is ignored.
    assert classify(status_error(openai.BadRequestError, 400, {"x-should-retry": "maybe"})) is None


def test_retry_after_in_seconds_milliseconds_and_http_date() -> None:
    assert retry_after_s(rate_limited()) is None
    assert retry_after_s(RuntimeError("no response at all")) is None
    assert retry_after_s(rate_limited(**{"retry-after": "2"})) == 2.0
    assert retry_after_s(rate_limited(**{"retry-after": "0.05"})) == pytest.approx(0.05)
    assert retry_after_s(rate_limited(**{"retry-after-ms": "150"})) == pytest.approx(0.15)
    # The millisecond header is the more precise one: it wins.
    both = rate_limited(**{"retry-after": "7", "retry-after-ms": "20"})
    assert retry_after_s(both) == pytest.approx(0.02)
    # A broken millisecond header falls back to the plain one.
    assert retry_after_s(rate_limited(**{"retry-after-ms": "soon", "retry-after": "3"})) == 3.0
    # An HTTP date: the seconds from now until then (the format has whole seconds).
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    wait = retry_after_s(rate_limited(**{"retry-after": when}))
    assert wait is not None and 28.5 <= wait <= 30.5
    past = email.utils.format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert retry_after_s(rate_limited(**{"retry-after": past})) == 0.0
    assert retry_after_s(rate_limited(**{"retry-after": "-4"})) == 0.0
    assert retry_after_s(rate_limited(**{"retry-after": "whenever"})) is None


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_grows_exponentially_and_is_capped() -> None:
    low, high = FixedRandom(0.0), FixedRandom(0.999999)
    lows = [backoff_s(n, None, low) for n in range(1, 7)]
    assert lows == pytest.approx([BACKOFF_BASE_S * 2**k / 2 for k in range(6)])
    assert all(b > a for a, b in zip(lows, lows[1:], strict=False))
    # Full range at each attempt: between half the exponential step and all of it.
    for n in range(1, 7):
        expo = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (n - 1))
        assert backoff_s(n, None, high) == pytest.approx(expo, rel=1e-5)
    # Capped, however many retries came before.
    assert backoff_s(60, None, high) <= BACKOFF_CAP_S
    assert backoff_s(1000, None, high) <= BACKOFF_CAP_S


def test_backoff_is_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_s(3, None, rng) for _ in range(200)]
    expo = BACKOFF_BASE_S * 4
    assert all(expo / 2 <= d <= expo for d in delays)
    assert len({round(d, 6) for d in delays}) > 150  # not one fixed delay
    assert max(delays) - min(delays) > expo / 3  # spread over the range


def test_backoff_is_never_below_retry_after() -> None:
    rng = random.Random(2)
    for attempt in (1, 2, 5):
        for retry_after in (0.05, 1.0, 3.0, 30.0):
            delay = backoff_s(attempt, retry_after, rng)
            assert delay >= retry_after
            # At most 10% on top, unless the exponential step is longer anyway.
            expo = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
            assert delay <= max(retry_after * 1.1, expo) + 1e-9
    # An absurd Retry-After is capped (a minute plus jitter), not obeyed for an hour.
    assert backoff_s(1, 3600.0, rng) <= RETRY_AFTER_CAP_S * 1.1


# --- nodes/scope.py: AdaptiveLimit -----------------------------------------------------


def test_adaptive_limit_halves_on_throttle_but_not_below_one() -> None:
    limit = AdaptiveLimit(10)
    seen = []
    for _ in range(6):
        limit.on_throttle()
        seen.append(limit.limit)
    assert seen == [5, 2, 1, 1, 1, 1]
    # The timeline records each change once, starting from the ceiling.
    assert [n for _, n in limit.timeline] == [10, 5, 2, 1]
    times = [t for t, _ in limit.timeline]
    assert times == sorted(times) and times[0] == 0.0


async def test_adaptive_limit_grows_by_one_per_window_and_never_above_ceiling() -> None:
    limit = AdaptiveLimit(6, window=3)
    limit.on_throttle()
    assert limit.limit == 3
    for _ in range(2):
        await limit.on_success()
    assert limit.limit == 3  # not a whole window yet
    await limit.on_success()
    assert limit.limit == 4
    # A throttle mid-window halves and starts the window over.
    await limit.on_success()
    await limit.on_success()
    limit.on_throttle()
    assert limit.limit == 2
    await limit.on_success()
    await limit.on_success()
    assert limit.limit == 2
    for _ in range(100):
        await limit.on_success()
    assert limit.limit == 6  # back to the ceiling, and no further
    assert max(n for _, n in limit.timeline) == 6
    assert [n for _, n in limit.timeline] == [6, 3, 4, 2, 3, 4, 5, 6]


async def test_adaptive_limit_blocks_the_holder_past_the_limit() -> None:
    limit = AdaptiveLimit(4, window=2)
    limit.on_throttle()  # 4 -> 2
    release = [asyncio.Event() for _ in range(4)]
    entered: list[int] = []

    async def hold(i: int) -> None:
        async with limit:
            entered.append(i)
            await release[i].wait()

    holders = [asyncio.create_task(hold(i)) for i in range(4)]
    await asyncio.sleep(0.05)
    assert entered == [0, 1] and limit.in_use == 2  # the 3rd and 4th wait
    release[0].set()
    await asyncio.sleep(0.05)
    assert entered == [0, 1, 2] and limit.in_use == 2  # one out, exactly one in
    # Growing the limit admits a waiter without anyone leaving.
    await limit.on_success()
    await limit.on_success()
    assert limit.limit == 3
    await asyncio.sleep(0.05)
    assert entered == [0, 1, 2, 3] and limit.in_use == 3
    # Halving while full admits nobody until enough holders left.
    limit.on_throttle()  # 3 -> 1
    fifth = asyncio.create_task(hold_extra(limit, entered))
    for i in (1, 2):
        release[i].set()
    await asyncio.sleep(0.05)
    assert 5 not in entered and limit.in_use == 1
    release[3].set()
    await asyncio.sleep(0.05)
    assert entered[-1] == 5
    await asyncio.gather(*holders, fifth)
    assert limit.in_use == 0


async def hold_extra(limit: AdaptiveLimit, entered: list[int]) -> None:
    async with limit:
        entered.append(5)


async def test_a_cancelled_waiter_does_not_take_a_slot() -> None:
    limit = AdaptiveLimit(1)
    gate = asyncio.Event()

    async def hold() -> None:
        async with limit:
            await gate.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    await holder
    assert limit.in_use == 0
    async with limit:  # the slot is free again
        assert limit.in_use == 1


# --- nodes/scope.py: RunScope.race -----------------------------------------------------


async def test_race_cancels_the_work_when_the_run_stops() -> None:
    scope = RunScope(RunSettings(policy="quorum:2"))
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    racing = asyncio.create_task(scope.race(work()))
    await asyncio.sleep(0.02)
    assert not racing.done()
    t0 = time.monotonic()
    scope.stop("quorum", "quorum of 2 ok tasks reached")
    with pytest.raises(RunStopped, match="quorum of 2"):
        await racing
    assert time.monotonic() - t0 < 1.0
    assert cancelled.is_set()


async def test_race_raises_budget_exceeded_for_a_budget_stop() -> None:
    scope = RunScope(RunSettings(max_total_tokens=100))
    racing = asyncio.create_task(scope.race(asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    scope.add_tokens(150)
    scope.stop("budget", "token budget spent")
    with pytest.raises(BudgetExceeded):
        await racing


async def test_race_ends_the_work_at_the_wall_time_budget() -> None:
    scope = RunScope(RunSettings(max_wall_time_s=0.2))
    t0 = time.monotonic()
    with pytest.raises(BudgetExceeded, match="wall time budget"):
        await scope.race(asyncio.sleep(30))
    assert 0.15 <= time.monotonic() - t0 < 2.0
    assert scope.stop_kind == "budget"


async def test_race_passes_results_through_and_waits_when_nothing_can_stop() -> None:
    scope = RunScope(RunSettings())  # settle, no budgets: nothing races
    assert not scope.needs_race
    assert await scope.race(asyncio.sleep(0.01, "plain")) == "plain"
    racing = RunScope(RunSettings(max_wall_time_s=30))
    assert await racing.race(asyncio.sleep(0.01, "raced")) == "raced"


async def test_a_cancelled_race_cancels_its_work() -> None:
    scope = RunScope(RunSettings(policy="quorum:1"))
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    racing = asyncio.create_task(scope.race(work()))
    await asyncio.sleep(0.02)
    racing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await racing
    await asyncio.sleep(0)
    assert cancelled.is_set()


@pytest.mark.parametrize("policy", ["settle", "quorum:1"])
async def test_race_closes_a_never_started_coroutine(policy: str) -> None:
    scope = RunScope(RunSettings(policy=policy))
    scope.stop("quorum", "done already")
    started = []

    async def work() -> None:
        started.append(True)

    coro = work()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RunStopped):
            await scope.race(coro)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        del coro
        gc.collect()
    assert not started
    assert [w for w in caught if "never awaited" in str(w.message)] == []


async def test_race_cancels_started_work_it_refuses_to_wait_for() -> None:
    # `run_tools` hands `race` a gather future: its tools are already scheduled. A run
    # that has stopped must not let them run on, detached, after the task ended.
    scope = RunScope(RunSettings(policy="quorum:1"))
    scope.stop("quorum", "quorum of 1 ok tasks reached")
    ran: list[str] = []

    async def side_effect() -> None:
        await asyncio.sleep(0.02)
        ran.append("tool ran")

    started = asyncio.gather(side_effect())
    with pytest.raises(RunStopped):
        await scope.race(started)
    await asyncio.sleep(0.1)
    assert ran == [], "work went on after the run stopped"
    assert started.done()
    with contextlib.suppress(asyncio.CancelledError):
        started.exception()  # retrieved: no "exception was never retrieved" log


# --- timeouts ----------------------------------------------------------------------------


async def test_a_hung_task_stops_at_its_timeout_and_siblings_are_unaffected() -> None:
    timeout = 0.5
    plan = plan_of(
        task("hung", timeout_s=timeout),
        task("s1"),
        task("s2"),
        task("s3", "s1"),
    )
    model = TaskScriptedModel(
        scripts={
            "hung": TaskScript(behaviour="hang"),
            "s1": TaskScript(latency=0.05),
            "s2": TaskScript(latency=0.2),
            "s3": TaskScript(latency=0.01),
        }
    )
    events: list[dict[str, Any]] = []
    t0 = time.monotonic()
    out = await arun(
        "x", settings=settings(model, max_concurrency=4), plan=plan, on_event=events.append
    )
    wall = time.monotonic() - t0

    res = by_id(out.results)
    assert statuses(out.results) == {"hung": "timed_out", "s1": "ok", "s2": "ok", "s3": "ok"}
    hung = res["hung"]
    assert hung.error is not None and hung.error.type == "TaskTimeout"
    assert hung.started_at is not None and hung.ended_at is not None
    own = (hung.ended_at - hung.started_at).total_seconds()
    assert own == pytest.approx(hung.duration_s, abs=1e-5)
    overshoot = own - timeout
    # Independently: from the moment the subagent announced its start.
    (start_event,) = [
        e for e in events if e["fanfold"] == "task_started" and e["task_id"] == "hung"
    ]
    seen_overshoot = (hung.ended_at - datetime.fromisoformat(start_event["at"])).total_seconds()
    seen_overshoot -= timeout
    ms = f"result {overshoot * 1000:.1f} ms, seen {seen_overshoot * 1000:.1f} ms"
    print(f"\ntimeout overshoot: {ms}")
    assert 0 <= overshoot <= ISSUE_BOUND_S
    # LangGraph's clock starts when the task gets its slot, a little before `brief`
    # announces it: measured from the announcement, the overshoot can only look smaller.
    assert seen_overshoot <= ISSUE_BOUND_S
    assert "hung" in model.recorder.cancelled  # the model call itself was cancelled
    # Siblings: their own answers, one model call each, nothing cancelled.
    for tid in ("s1", "s2", "s3"):
        assert res[tid].output == f"output of {tid}:"
        assert res[tid].attempts == 1
    assert model.recorder.calls == {"hung": 1, "s1": 1, "s2": 1, "s3": 1}
    assert model.recorder.cancelled == {"hung"}
    assert out.status == "partial"
    assert out.answer == "answer: hung=timed_out, s1=ok, s2=ok, s3=ok"
    assert wall < timeout + 5.0  # nowhere near the 120 s default timeout


# --- fail_fast -----------------------------------------------------------------------------


async def test_fail_fast_cancels_hung_siblings_at_once_and_keeps_finished_results() -> None:
    plan = plan_of(
        task("quick"),
        task("h1"),
        task("bad"),
        task("h2"),
        task("h3"),
        task("later", "quick"),
    )
    model = TaskScriptedModel(
        scripts={
            "quick": TaskScript(latency=0.01),
            "bad": TaskScript(latency=0.15, behaviour="raise"),
            "h1": TaskScript(behaviour="hang"),
            "h2": TaskScript(behaviour="hang"),
            "h3": TaskScript(behaviour="hang"),
            "later": TaskScript(),
        }
    )
    with pytest.raises(TaskFailedError) as caught:
        await arun("x", settings=settings(model, max_concurrency=5, policy="fail_fast"), plan=plan)
    raised_at = datetime.now(UTC)
    err = caught.value
    assert err.result.task_id == "bad" and err.result.status == "failed"
    assert err.result.ended_at is not None
    latency = (raised_at - err.result.ended_at).total_seconds()
    print(f"\nfail_fast: siblings cancelled, error raised {latency * 1000:.1f} ms after failure")
    assert 0 <= latency <= ISSUE_BOUND_S
    # The hung siblings' model calls were cancelled, not left running.
    assert model.recorder.cancelled == {"h1", "h2", "h3"}
    assert model.recorder.in_flight == 0
    # Every result that had finished, in plan order; nothing from the cancelled ones.
    assert [(r.task_id, r.status) for r in err.results] == [("quick", "ok"), ("bad", "failed")]
    assert err.results[0].output == "output of quick:"
    assert err.results[1].error is not None and err.results[1].error.type == "ModelError"
    assert "later" not in model.recorder.calls


# --- quorum:K ----------------------------------------------------------------------------


def checkpointed() -> Any:
    """An orchestrator with a checkpointer: dispatch windows of `max_concurrency` Sends."""
    return compile_orchestrator(checkpointer=InMemorySaver())


QUORUM_IDS = ["a", "b", "h1", "h2", "p1", "p2", "p3", "p4"]


def quorum_case(b_latency: float) -> tuple[Plan, TaskScriptedModel]:
    """Eight quick tasks, of which `b` takes `b_latency` and h1, h2 hang."""
    scripts = {t: TaskScript(latency=0.01) for t in QUORUM_IDS}
    scripts["b"] = TaskScript(latency=b_latency)
    scripts["h1"] = TaskScript(behaviour="hang")
    scripts["h2"] = TaskScript(behaviour="hang")
    return plan_of(*(task(t) for t in QUORUM_IDS)), TaskScriptedModel(scripts=scripts)


async def test_quorum_stops_dispatch_and_cancels_the_rest() -> None:
    ids = QUORUM_IDS
    plan, model = quorum_case(b_latency=0.05)
    t0 = time.monotonic()
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=4, policy="quorum:2"),
        plan=plan,
        graph=checkpointed(),
    )
    wall = time.monotonic() - t0

    assert out.status == "ok"
    assert [r.task_id for r in out.results] == ids
    assert statuses(out.results) == {
        "a": "ok",
        "b": "ok",
        "h1": "cancelled",
        "h2": "cancelled",
        "p1": "cancelled",
        "p2": "cancelled",
        "p3": "cancelled",
        "p4": "cancelled",
    }
    # The running hung tasks ended at once, their model calls cancelled.
    assert model.recorder.cancelled == {"h1", "h2"}
    assert wall < 10.0  # the hung tasks' own timeout is 120 s
    # One stop, one cause: running or never started, every cancelled task says the same.
    quorum = ("QuorumReached", "quorum of 2 ok tasks reached")
    for r in out.results:
        if r.status == "cancelled":
            assert r.error is not None and (r.error.type, r.error.message) == quorum
    # No more dispatch: the second window never reached the model.
    assert set(model.recorder.calls) == {"a", "b", "h1", "h2"}
    for tid in ("p1", "p2", "p3", "p4"):
        r = by_id(out.results)[tid]
        assert r.attempts == 0 and r.error is not None
        assert (r.error.type, r.error.message) == ("QuorumReached", "quorum of 2 ok tasks reached")
    assert out.metrics.counts["ok"] == 2 and out.metrics.counts["cancelled"] == 6
    assert out.metrics.stop_reason == "quorum of 2 ok tasks reached"
    # The synthesizer still wrote the answer of a run that met its quorum.
    assert out.answer.startswith("answer: a=ok, b=ok, h1=cancelled")


async def test_quorum_in_a_wide_window_starts_tasks_as_slots_free_then_stops() -> None:
    # No checkpointer: every task is in one window and LangGraph starts each the
    # moment a slot frees. p1 takes a's slot and ends ok long before b does.
    plan, model = quorum_case(b_latency=2.0)
    out = await arun("x", settings=settings(model, max_concurrency=4, policy="quorum:2"), plan=plan)

    assert out.status == "ok"
    assert out.metrics.rounds == 1
    assert statuses(out.results) == {
        "a": "ok",
        "p1": "ok",
        **{t: "cancelled" for t in ("b", "h1", "h2", "p2", "p3", "p4")},
    }
    # Running when the quorum was met: their calls were cancelled, and they say why
    # exactly as the tasks that never started do.
    assert model.recorder.cancelled == {"b", "h1", "h2"}
    for tid in ("b", "h1", "h2"):
        r = by_id(out.results)[tid]
        assert r.error is not None
        assert (r.error.type, r.error.message) == ("QuorumReached", "quorum of 2 ok tasks reached")
    # Started after it (they waited for a slot): no model call, no attempt.
    assert set(model.recorder.calls) == {"a", "b", "h1", "h2", "p1"}
    for tid in ("p2", "p3", "p4"):
        r = by_id(out.results)[tid]
        assert r.attempts == 0 and r.error is not None
        assert (r.error.type, r.error.message) == ("QuorumReached", "quorum of 2 ok tasks reached")
    assert out.metrics.peak_concurrency <= 4


async def test_quorum_unreachable_raises_as_soon_as_it_is() -> None:
    plan = plan_of(task("ok1"), task("f1"), task("f2"), task("f3"), task("h1"), task("h2"))
    model = TaskScriptedModel(
        scripts={
            "ok1": TaskScript(latency=0.01),
            "f1": TaskScript(latency=0.05, behaviour="raise"),
            "f2": TaskScript(latency=0.1, behaviour="raise"),
            "f3": TaskScript(latency=0.2, behaviour="raise"),
            "h1": TaskScript(behaviour="hang"),
            "h2": TaskScript(behaviour="hang"),
        }
    )
    # K=4 of 6: after f1 and f2 failed, 4 can still succeed; after f3, only 3.
    with pytest.raises(QuorumUnreachable, match="quorum of 4 is out of reach") as caught:
        await arun("x", settings=settings(model, max_concurrency=6, policy="quorum:4"), plan=plan)
    raised_at = datetime.now(UTC)
    err = caught.value
    assert [(r.task_id, r.status) for r in err.results] == [
        ("ok1", "ok"),
        ("f1", "failed"),
        ("f2", "failed"),
        ("f3", "failed"),
    ]
    f3 = by_id(err.results)["f3"]
    assert f3.ended_at is not None
    latency = (raised_at - f3.ended_at).total_seconds()
    print(f"\nquorum unreachable raised {latency * 1000:.1f} ms after the deciding failure")
    assert 0 <= latency <= ISSUE_BOUND_S
    assert model.recorder.cancelled == {"h1", "h2"}


def test_cli_parses_quorum_and_rejects_a_bad_one(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["run", "alpha, beta", "--model", "demo:latency=0.01", "--policy", "quorum:2", "--json"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["status"] == "ok"
    assert {r["task_id"]: r["status"] for r in doc["results"]} == {
        "t1": "ok",
        "t2": "ok",
        "compare": "cancelled",
        "report": "cancelled",
    }
    assert cli.main(["run", "x", "--policy", "quorum:0"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "fanfold: --policy must be one of settle, fail_fast or quorum:K (K >= 1), got 'quorum:0'\n"
    )


# --- budgets --------------------------------------------------------------------------


async def test_token_budget_stops_dispatch_and_skips_the_synthesizer() -> None:
    ids = [f"t{i}" for i in range(1, 9)]
    plan = plan_of(*(task(t) for t in ids))
    model = TaskScriptedModel(scripts={t: TaskScript(latency=0.01) for t in ids})
    # Each call costs 15 tokens; windows of 2: 30 after the first, and the second
    # window's last reply reaches the budget exactly (so no reply is in flight then).
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=2, max_total_tokens=60),
        plan=plan,
        graph=checkpointed(),
    )

    assert out.status == "budget_exceeded"
    assert [r.task_id for r in out.results] == ids
    assert statuses(out.results) == {t: "ok" if t <= "t4" else "cancelled" for t in ids}
    for r in out.results[:4]:
        assert r.output == f"output of {r.task_id}:" and r.usage.total_tokens == 15
    for r in out.results[4:]:
        assert r.error is not None and r.error.type == "BudgetExceeded"
        assert r.error.message == "token budget of 60 spent (60 used)"
        assert r.attempts == 0
    assert set(model.recorder.calls) == set(ids[:4])
    assert out.answer == ""  # no synthesizer call once the budget is spent
    assert out.metrics.tokens.total_tokens == 60
    assert out.metrics.retries == 0 and out.metrics.faults == {}
    assert out.metrics.stop_reason is not None and "token budget" in out.metrics.stop_reason


async def test_token_budget_ends_running_tasks() -> None:
    # The quick task's one reply spends the budget while a sibling hangs: the run
    # must stop then, not when the hung task's own timeout (5 s) ends it.
    plan = plan_of(task("quick"), task("hung", timeout_s=5.0), task("p1"), task("p2"))
    model = TaskScriptedModel(
        scripts={
            "quick": TaskScript(latency=0.01),
            "hung": TaskScript(behaviour="hang"),
            "p1": TaskScript(),
            "p2": TaskScript(),
        }
    )
    t0 = time.monotonic()
    out = await arun(
        "x", settings=settings(model, max_concurrency=2, max_total_tokens=10), plan=plan
    )
    wall = time.monotonic() - t0

    print(f"\ntoken budget with a hung sibling: run took {wall:.2f}s")
    assert out.status == "budget_exceeded"
    assert statuses(out.results) == {
        "quick": "ok",
        "hung": "cancelled",
        "p1": "cancelled",
        "p2": "cancelled",
    }
    assert error_types(out.results) == {
        "quick": None,
        "hung": "BudgetExceeded",
        "p1": "BudgetExceeded",
        "p2": "BudgetExceeded",
    }
    assert by_id(out.results)["quick"].output == "output of quick:"
    assert model.recorder.cancelled == {"hung"}
    assert set(model.recorder.calls) == {"quick", "hung"}
    assert out.answer == ""
    assert wall < 3.0


async def test_a_call_waiting_its_turn_when_the_budget_runs_out_leaks_nothing() -> None:
    # At 4 requests per second, `b` waits for the rate limiter while `a`'s reply
    # spends the budget; `b` must then end without a model call, and without leaving
    # a never-awaited request coroutine behind.
    model = TaskScriptedModel(scripts={"a": TaskScript(), "b": TaskScript()})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = await arun(
            "x",
            settings=settings(model, max_total_tokens=10, requests_per_second=4),
            plan=plan_of(task("a"), task("b")),
        )
        gc.collect()
    assert statuses(out.results) == {"a": "ok", "b": "cancelled"}
    assert error_types(out.results)["b"] == "BudgetExceeded"
    assert model.recorder.calls == {"a": 1}
    assert out.status == "budget_exceeded"
    leaked = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert leaked == []


async def test_a_spent_budget_runs_no_further_tool() -> None:
    # The model's reply asks for a tool and spends the budget: the task ends
    # cancelled, and the tool (here one with a side effect) must not run.
    ran: list[str] = []

    @tool
    async def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression (and remember that it did)."""
        ran.append(expression)
        return "0"

    model = TaskScriptedModel(scripts={"a": TaskScript(expression="1+1")})
    out = await arun(
        "x",
        settings=settings(model, max_total_tokens=10, tools=[calculator]),
        plan=plan_of(task("a")),
    )
    await asyncio.sleep(0.05)  # room for a detached tool to run, if one was started
    (r,) = out.results
    assert r.status == "cancelled" and r.error is not None and r.error.type == "BudgetExceeded"
    assert out.status == "budget_exceeded"
    assert ran == [], "a tool ran after the run's budget was spent"


async def test_wall_time_budget_ends_hung_tasks_and_stops_dispatch() -> None:
    ids = ["quick", "h1", "h2", "p1", "p2", "p3"]
    plan = plan_of(*(task(t) for t in ids))
    scripts = {t: TaskScript() for t in ids}
    scripts.update(h1=TaskScript(behaviour="hang"), h2=TaskScript(behaviour="hang"))
    model = TaskScriptedModel(scripts=scripts)
    budget = 0.5
    t0 = time.monotonic()
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=3, max_wall_time_s=budget),
        plan=plan,
        graph=checkpointed(),
    )
    wall = time.monotonic() - t0

    print(f"\nwall budget {budget}s: run took {wall:.3f}s")
    assert out.status == "budget_exceeded"
    assert statuses(out.results) == {t: "ok" if t == "quick" else "cancelled" for t in ids}
    types = error_types(out.results)
    assert all(types[t] == "BudgetExceeded" for t in ids if t != "quick")
    res = by_id(out.results)
    assert (
        res["h1"].error is not None and "wall time budget of 0.5s spent" in res["h1"].error.message
    )
    assert res["h1"].attempts == res["h2"].attempts == 1  # a budget is never retried
    assert all(res[t].attempts == 0 for t in ("p1", "p2", "p3"))
    assert model.recorder.cancelled == {"h1", "h2"}
    assert set(model.recorder.calls) == {"quick", "h1", "h2"}
    assert res["quick"].output == "output of quick:"
    assert out.answer == ""
    assert out.metrics.retries == 0
    assert budget <= wall < budget + 5.0  # the hung tasks' own timeout is 120 s


async def test_budgets_in_a_wide_window_end_every_task_once_spent() -> None:
    # No checkpointer: one window, tasks start as slots free. Whatever starts after
    # the budget is spent ends at once, without a model call.
    ids = [f"t{i}" for i in range(1, 9)]
    model = TaskScriptedModel(scripts={t: TaskScript(latency=0.01) for t in ids})
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=2, max_total_tokens=60),
        plan=plan_of(*(task(t) for t in ids)),
    )
    assert out.status == "budget_exceeded" and out.metrics.rounds == 1
    res = by_id(out.results)
    ok = {t for t in ids if res[t].status == "ok"}
    assert ok == {"t1", "t2", "t3", "t4"}  # 4 x 15 tokens spend the budget
    for t in set(ids) - ok:
        assert res[t].status == "cancelled" and res[t].error is not None
        assert res[t].error.type == "BudgetExceeded"
    assert out.metrics.tokens.total_tokens == 60
    # At most one task (started when t3 ended, before t4 did) was mid-call at the stop.
    assert set(model.recorder.calls) - ok <= {"t5"}
    assert all(res[t].attempts == 0 for t in ("t6", "t7", "t8"))

    # A wall-time budget: fast tasks go on in the slots the first finisher freed,
    # while two hung ones are ended when the budget runs out.
    ids = ["quick", "h1", "h2", "p1", "p2", "p3"]
    scripts = {t: TaskScript() for t in ids}
    scripts.update(h1=TaskScript(behaviour="hang"), h2=TaskScript(behaviour="hang"))
    model = TaskScriptedModel(scripts=scripts)
    out = await arun(
        "x",
        settings=settings(model, max_concurrency=3, max_wall_time_s=0.5),
        plan=plan_of(*(task(t) for t in ids)),
    )
    assert out.status == "budget_exceeded"
    assert statuses(out.results) == {t: "cancelled" if t in ("h1", "h2") else "ok" for t in ids}
    assert model.recorder.cancelled == {"h1", "h2"}
    assert error_types(out.results)["h1"] == "BudgetExceeded"


async def test_task_token_budget_fails_only_that_task() -> None:
    plan = plan_of(
        task("tooly"), task("plain"), task("after_tooly", "tooly"), task("after_plain", "plain")
    )
    model = TaskScriptedModel(
        scripts={
            "tooly": TaskScript(expression="6*7"),  # two model calls: 15 + 15 tokens
            "plain": TaskScript(),  # one call, 15 tokens
            "after_tooly": TaskScript(),
            "after_plain": TaskScript(),
        }
    )
    out = await arun(
        "x", settings=settings(model, max_concurrency=4, max_task_tokens=15), plan=plan
    )

    assert statuses(out.results) == {
        "tooly": "failed",
        "plain": "ok",
        "after_tooly": "skipped",
        "after_plain": "ok",
    }
    tooly = by_id(out.results)["tooly"]
    assert tooly.error is not None and tooly.error.type == "BudgetExceeded"
    assert tooly.error.message == "task token budget of 15 spent (15 used)"
    assert tooly.attempts == 1 and tooly.tool_calls == 1 and tooly.usage.total_tokens == 15
    assert model.recorder.calls["tooly"] == 1  # stopped before a second call
    assert out.status == "partial"
    assert out.metrics.retries == 0
    assert out.answer.startswith("answer: tooly=failed, plain=ok")  # the run went on


# --- bad model behaviour and retries on the fake -------------------------------------------


async def test_a_model_that_never_stops_calling_tools_is_stopped_at_max_steps() -> None:
    model = LoopingModel()
    out = await arun("x", settings=settings(model, max_steps=3), plan=plan_of(task("loop")))
    (r,) = out.results
    assert r.status == "failed"
    assert r.error is not None and r.error.type == "MaxStepsExceeded"
    assert r.error.message == (
        "stopped after 3 model calls (max_steps=3) while the model still asked for tools"
    )
    assert model.calls == 3 and r.tool_calls == 3
    assert r.attempts == 1


async def test_transient_errors_are_retried_and_counted() -> None:
    ids = ["flaky", "steady"]
    model = FlakyModel(
        scripts={t: TaskScript() for t in ids},
        errors={"flaky": [rate_limited(**{"retry-after-ms": "1"}) for _ in range(2)]},
    )
    out = await arun("x", settings=settings(model), plan=plan_of(*(task(t) for t in ids)))

    res = by_id(out.results)
    assert statuses(out.results) == {"flaky": "ok", "steady": "ok"}
    assert res["flaky"].attempts == 3 and res["steady"].attempts == 1
    assert res["flaky"].output == "output of flaky:"
    assert model.raised == {"flaky": 2} and model.recorder.calls == {"flaky": 1, "steady": 1}
    assert out.metrics.retries == 2
    assert out.metrics.faults == {"rate_limited": 2}
    assert out.status == "ok"


async def test_retries_are_bounded_and_attempts_stay_true() -> None:
    errors: list[BaseException] = [
        status_error(openai.InternalServerError, 503, {"retry-after-ms": "1"}),
        TimeoutError(),
        status_error(openai.InternalServerError, 502, {"retry-after-ms": "1"}),
    ]
    model = FlakyModel(scripts={"t": TaskScript()}, errors={"t": errors})
    out = await arun("x", settings=settings(model, max_retries=2), plan=plan_of(task("t")))

    (r,) = out.results
    assert r.status == "failed"
    assert r.attempts == 3  # the first try and two retries
    assert r.error is not None and r.error.type == "ModelError"
    assert r.error.exception in {"openai.InternalServerError", "langchain_openai.OpenAIAPIError"}
    assert model.raised == {"t": 3} and "t" not in model.recorder.calls
    assert out.metrics.retries == 2
    assert out.metrics.faults == {"server_error": 1, "timeout": 1}


@pytest.mark.parametrize(
    "exc",
    [status_error(openai.BadRequestError, 400), ValueError("the model sent nonsense")],
    ids=["400", "ValueError"],
)
async def test_a_non_transient_error_fails_the_task_at_once(exc: BaseException) -> None:
    model = FlakyModel(
        scripts={"bad": TaskScript(), "fine": TaskScript()}, errors={"bad": [exc, exc]}
    )
    out = await arun("x", settings=settings(model), plan=plan_of(task("bad"), task("fine")))

    res = by_id(out.results)
    assert statuses(out.results) == {"bad": "failed", "fine": "ok"}
    assert res["bad"].attempts == 1
    assert res["bad"].error is not None and res["bad"].error.type == "ModelError"
    assert (res["bad"].error.exception or "").endswith(type(exc).__name__)
    assert model.raised == {"bad": 1}
    assert out.metrics.retries == 0 and out.metrics.faults == {}
