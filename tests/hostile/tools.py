"""Tools that do not stop when told: each holds on for up to `HOLD_S` seconds.

`sleepy` blocks its thread (a synchronous tool cannot be interrupted); `stubborn` is
async and swallows every `CancelledError`. Both are importable by path
(`tests.hostile.tools:sleepy`), for the command line's `--tools`. Nothing the run
does lets them go: only `release()`, which a test calls once it has checked how the
run stopped (so the test's own event loop can close).
"""

from __future__ import annotations

import asyncio
import threading
import time

from langchain_core.tools import tool

HOLD_S = 30.0
"""Far longer than any stop may take: a test that waits for one fails on time."""

_released = threading.Event()


def release() -> None:
    """Let every held call go (tests call it when they are done)."""
    _released.set()


def hold_again() -> None:
    """Make the next calls hold again."""
    _released.clear()


def hold_thread() -> None:
    """Block this thread until released (or `HOLD_S`)."""
    _released.wait(HOLD_S)


async def hold_task() -> None:
    """Hold this task until released (or `HOLD_S`), swallowing every cancellation."""
    end = time.monotonic() + HOLD_S
    while not _released.is_set() and time.monotonic() < end:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue  # swallowed: the caller's cancel has no effect


@tool
def sleepy(q: str) -> str:
    """Look something up (blocks its thread for 30 s)."""
    hold_thread()
    return q


@tool
async def stubborn(q: str) -> str:
    """Look something up (ignores cancellation for 30 s)."""
    await hold_task()
    return q
