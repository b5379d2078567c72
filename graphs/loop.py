"""Run a coroutine on an event loop of its own, and close that loop without waiting forever.

`asyncio.run` closes its loop by cancelling every task left and waiting for all of
them, then for the default executor's threads. A tool that swallows `CancelledError`,
or a thread blocked in `time.sleep(30)`, would hold it for as long as it likes, after
the run itself has returned. `run_until_done` gives leftover tasks a short grace,
then closes the loop anyway; `exit_now_if_stuck` lets the command line end its
process at once when work it abandoned would otherwise keep the interpreter alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

GRACE_S = 1.0
"""How long tasks left over at the end get to end after they are cancelled."""

_abandoned: list[asyncio.Task[Any]] = []
"""Tasks that outlived their loop's grace (kept referenced: no 'destroyed' warnings)."""


def run_until_done(main: Coroutine[Any, Any, T], *, grace_s: float = GRACE_S) -> T:
    """Run `main` on a new event loop and close the loop without waiting on stubborn work.

    Ctrl-C cancels `main`, as under `asyncio.run`. Tasks still running after it are
    cancelled and get `grace_s` to end; those that do not are left behind.
    """
    runner = asyncio.Runner()
    try:
        return runner.run(main)
    finally:
        _close(runner.get_loop(), grace_s)


def _close(loop: asyncio.AbstractEventLoop, grace_s: float) -> None:
    try:
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=grace_s))
            _abandoned.extend(t for t in left if not t.done())
        loop.run_until_complete(_bounded(loop.shutdown_asyncgens(), grace_s))
        # Idle executor threads end here; a blocked one is left (and is all `stuck` sees).
        loop.run_until_complete(_bounded(loop.shutdown_default_executor(), grace_s))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _bounded(work: Coroutine[Any, Any, None], grace_s: float) -> None:
    with contextlib.suppress(Exception):  # a timeout included: closing anyway
        await asyncio.wait_for(work, grace_s)


def stuck() -> bool:
    """Tell whether abandoned work would keep this process alive.

    That is a task that ignored its cancellation, or a non-daemon thread still
    running (a blocked executor worker).
    """
    if _abandoned:
        return True
    main = threading.main_thread()
    return any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate())


def exit_now_if_stuck(code: int) -> None:
    """End the process with `code` at once when abandoned work would hold it open.

    Also when Temporal's client is loaded: its Rust core can abort the interpreter's
    finalization (temporalio 1.35: "PyGILState_Release: thread state ... must be
    current"), which turned a finished run's exit code 0 into a SIGABRT.
    """
    if stuck() or any(name.startswith("temporalio.bridge") for name in sys.modules):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
