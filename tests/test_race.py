"""How running work ends when its run stops (nodes/scope.py `RunScope.race`).

A policy stop or a budget (tokens, wall time) ends the raced work at once with
`RunStopped` or `BudgetExceeded` and cancels it; results pass through when nothing
stops the run; a never-started coroutine is closed, and started work (scheduled
tools) is cancelled rather than left running detached.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import time
import warnings

import pytest

from fanfold.nodes.context import RunSettings
from fanfold.nodes.errors import BudgetExceeded, RunStopped
from fanfold.nodes.scope import RunScope


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
