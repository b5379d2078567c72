"""Which model errors are worth a retry, and how long to wait before it."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import sys
import time
from typing import Literal

FaultKind = Literal["rate_limited", "server_error", "timeout", "connection", "malformed"]
"""A transient fault: `rate_limited` (429), `server_error` (5xx, 408, 409),
`timeout`, `connection` (refused, reset, dropped), `malformed` (a broken body or stream)."""

BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 8.0
RETRY_AFTER_CAP_S = 60.0


class TruncatedReply(Exception):
    """A reply that ended before the model finished: a cut stream or body."""


def classify(exc: BaseException) -> FaultKind | None:
    """Return the transient fault an exception stands for, or `None` (do not retry).

    The openai and httpx modules are looked up where they already are, never
    imported here: an exception of theirs means they are loaded, and importing the
    SDK on the event loop at a process's first exception stalled it 0.2-0.5 s.
    """
    if isinstance(exc, TruncatedReply):
        return "malformed"
    openai = sys.modules.get("openai")
    httpx = sys.modules.get("httpx")
    should_retry = _header(exc, "x-should-retry")
    if should_retry in ("true", "false"):
        # The server's own word, as the OpenAI client honours it.
        return _status_kind(exc) if should_retry == "true" else None
    if openai is not None:
        if isinstance(exc, openai.RateLimitError):
            return "rate_limited"
        if isinstance(exc, openai.APITimeoutError):
            return "timeout"
        if isinstance(exc, openai.APIConnectionError):
            return "connection"
        if isinstance(exc, openai.APIResponseValidationError):
            return "malformed"
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status == 429:
                return "rate_limited"
            if status >= 500 or status in (408, 409):
                return "server_error"
            return None
    if httpx is not None:
        if isinstance(exc, httpx.TimeoutException):
            return "timeout"
        if isinstance(exc, httpx.TransportError):
            return "connection"
    return _classify_generic(exc)


def _header(exc: BaseException, name: str) -> str | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get(name) if headers is not None else None
    return str(value).lower() if value is not None else None


def _status_kind(exc: BaseException) -> FaultKind:
    status = getattr(exc, "status_code", None)
    return "rate_limited" if status == 429 else "server_error"


def _classify_generic(exc: BaseException) -> FaultKind | None:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "connection"
    if isinstance(exc, json.JSONDecodeError):
        return "malformed"
    return None


def retry_after_s(exc: BaseException) -> float | None:
    """Return the server's Retry-After (seconds or an HTTP date) from an error, if any."""
    ms = _header(exc, "retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = _header(exc, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


def backoff_s(attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float:
    """Return how long to wait before retry number `attempt` (1 = first retry).

    Exponential with full jitter, capped; a Retry-After from the server is a floor
    (plus up to 10% jitter so retries do not all land at once).
    """
    rand: float = (rng or random).random()
    expo: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** (attempt - 1))
    delay = expo * (0.5 + rand / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S) * (1 + rand / 10))
    return delay
