"""Fault classes and backoff (nodes/faults.py), without HTTP.

Which errors are transient and of what kind (rate limited, server error, timeout,
connection, malformed reply), the `x-should-retry` header overriding the status,
Retry-After in seconds, milliseconds and HTTP dates, and the retry delay: exponential,
capped, jittered, and never below what the server asked for.
"""

from __future__ import annotations

import email.utils
import json
import random
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from fanfold.nodes.errors import BudgetExceeded, RunStopped
from fanfold.nodes.faults import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    RETRY_AFTER_CAP_S,
    backoff_s,
    classify,
    retry_after_s,
)
from tests.helpers import (
    URL,
    rate_limited,
    response,
    status_error,
)


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
