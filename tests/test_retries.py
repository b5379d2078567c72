"""A misbehaving model under a whole run on the task-keyed fake: retries and max_steps.

Transient errors are retried up to `max_retries` and counted (attempts, retries,
fault kinds), other errors fail the task at once, and a model that never stops
calling tools is stopped at `max_steps`.
"""

from __future__ import annotations

import openai
import pytest

from fanfold.graphs.api import arun
from tests.fakes import TaskScript, TaskScriptedModel
from tests.helpers import (
    by_id,
    plan_of,
    rate_limited,
    settings,
    status_error,
    statuses,
    task,
)


async def test_a_model_that_never_stops_calling_tools_is_stopped_at_max_steps() -> None:
    loop = TaskScript(behaviour="loop", call=("calculator", {"expression": "1 + 1"}))
    model = TaskScriptedModel(scripts={"loop": loop})
    out = await arun("x", settings=settings(model, max_steps=3), plan=plan_of(task("loop")))
    (r,) = out.results
    assert r.status == "failed"
    assert r.error is not None and r.error.type == "MaxStepsExceeded"
    assert r.error.message == (
        "stopped after 3 model calls (max_steps=3) while the model still asked for tools"
    )
    assert model.recorder.calls == {"loop": 3} and r.tool_calls == 3
    assert r.attempts == 1


async def test_transient_errors_are_retried_and_counted() -> None:
    ids = ["flaky", "steady"]
    throttled = [rate_limited(**{"retry-after-ms": "1"}) for _ in range(2)]
    model = TaskScriptedModel(
        scripts={"flaky": TaskScript(errors=throttled), "steady": TaskScript()}
    )
    out = await arun("x", settings=settings(model), plan=plan_of(*(task(t) for t in ids)))

    res = by_id(out.results)
    assert statuses(out.results) == {"flaky": "ok", "steady": "ok"}
    assert res["flaky"].attempts == 3 and res["steady"].attempts == 1
    assert res["flaky"].output == "output of flaky:"
    rec = model.recorder
    assert rec.raised == {"flaky": 2} and rec.calls == {"flaky": 1, "steady": 1}
    assert out.metrics.retries == 2
    assert out.metrics.faults == {"rate_limited": 2}
    assert out.status == "ok"


async def test_retries_are_bounded_and_attempts_stay_true() -> None:
    errors: list[BaseException] = [
        status_error(openai.InternalServerError, 503, {"retry-after-ms": "1"}),
        TimeoutError(),
        status_error(openai.InternalServerError, 502, {"retry-after-ms": "1"}),
    ]
    model = TaskScriptedModel(scripts={"t": TaskScript(errors=errors)})
    out = await arun("x", settings=settings(model, max_retries=2), plan=plan_of(task("t")))

    (r,) = out.results
    assert r.status == "failed"
    assert r.attempts == 3  # the first try and two retries
    assert r.error is not None and r.error.type == "ModelError"
    assert r.error.exception in {"openai.InternalServerError", "langchain_openai.OpenAIAPIError"}
    assert model.recorder.raised == {"t": 3} and "t" not in model.recorder.calls
    assert out.metrics.retries == 2
    assert out.metrics.faults == {"server_error": 1, "timeout": 1}


@pytest.mark.parametrize(
    "exc",
    [status_error(openai.BadRequestError, 400), ValueError("the model sent nonsense")],
    ids=["400", "ValueError"],
)
async def test_a_non_transient_error_fails_the_task_at_once(exc: BaseException) -> None:
    model = TaskScriptedModel(scripts={"bad": TaskScript(errors=[exc, exc]), "fine": TaskScript()})
    out = await arun("x", settings=settings(model), plan=plan_of(task("bad"), task("fine")))

    res = by_id(out.results)
    assert statuses(out.results) == {"bad": "failed", "fine": "ok"}
    assert res["bad"].attempts == 1
    assert res["bad"].error is not None and res["bad"].error.type == "ModelError"
    assert (res["bad"].error.exception or "").endswith(type(exc).__name__)
    assert model.recorder.raised == {"bad": 1}
    assert out.metrics.retries == 0 and out.metrics.faults == {}


@pytest.mark.alone  # attempts within a 0.5 s budget
async def test_retries_stop_at_the_time_budget_with_the_last_fault() -> None:
    # A server that keeps answering 503 with a 0.2 s Retry-After: the waits (0.2 s or
    # the exponential step, if longer: 0.13-0.25 s, then 0.25-0.5 s) fit a 0.5 s budget
    # once or twice, never three times.
    down = [status_error(openai.InternalServerError, 503, {"retry-after-ms": "200"})] * 20
    model = TaskScriptedModel(scripts={"t": TaskScript(errors=down)})
    out = await arun("x", settings=settings(model, retry_budget_s=0.5), plan=plan_of(task("t")))

    (r,) = out.results
    assert r.status == "failed" and r.error is not None and r.error.type == "ModelError"
    assert "503" in r.error.message  # the last fault, not a timeout
    assert r.attempts in (2, 3) and model.recorder.raised == {"t": r.attempts}
    assert out.metrics.retries == r.attempts - 1
    assert r.duration_s < 1.0  # no retry started after the budget (the fake fails at once)


@pytest.mark.alone  # attempts within a 0.7 s timeout
async def test_retries_never_outlive_the_task_timeout() -> None:
    # The default budget (60 s) is far longer than this task's 0.7 s timeout: the task
    # fails with its last fault before it would time out, instead of being cut off.
    down = [status_error(openai.InternalServerError, 503, {"retry-after-ms": "200"})] * 20
    model = TaskScriptedModel(scripts={"t": TaskScript(errors=down)})
    out = await arun("x", settings=settings(model, task_timeout_s=0.7), plan=plan_of(task("t")))

    (r,) = out.results
    assert settings(model).retry_budget_s == 60.0
    assert r.status == "failed" and r.error is not None and "503" in r.error.message
    assert 2 <= r.attempts <= 4  # 0.2-0.5 s apart, within 0.7 s


async def test_max_retries_still_caps_the_count_within_the_budget() -> None:
    flaky = [rate_limited(**{"retry-after-ms": "1"})] * 5
    model = TaskScriptedModel(scripts={"t": TaskScript(errors=flaky)})
    out = await arun("x", settings=settings(model, max_retries=1), plan=plan_of(task("t")))
    (r,) = out.results
    assert r.status == "failed" and r.attempts == 2


async def test_a_retry_after_past_the_budget_fails_at_once_and_says_why() -> None:
    far = [rate_limited(**{"retry-after": "1000000000"})] * 3
    model = TaskScriptedModel(scripts={"t": TaskScript(errors=far)})
    out = await arun("x", settings=settings(model, retry_budget_s=120), plan=plan_of(task("t")))
    (r,) = out.results
    assert r.status == "failed" and r.attempts == 1 and r.duration_s < 5  # not slept on
    assert r.error is not None and "gave up after 1 attempt(s)" in r.error.message
    assert "retry budget (120s)" in r.error.message


async def test_the_retry_budget_starts_at_the_first_attempt_not_in_the_queue() -> None:
    # At 2 requests a second, the fifth task's first request goes out ~2 s after the run
    # starts: its 1.5 s budget must still leave room for the retry its 429 asks for.
    ids = [f"t{i}" for i in range(5)]
    once = {tid: TaskScript(errors=[rate_limited(**{"retry-after-ms": "50"})]) for tid in ids}
    model = TaskScriptedModel(scripts=once)
    out = await arun(
        "x",
        settings=settings(model, requests_per_second=2, retry_budget_s=1.5),
        plan=plan_of(*(task(t) for t in ids)),
    )
    assert statuses(out.results) == dict.fromkeys(ids, "ok")
    assert all(r.attempts == 2 for r in out.results)
