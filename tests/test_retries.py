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
