"""Adaptive concurrency (nodes/scope.py `AdaptiveLimit`): halve on a throttle, grow back.

The limit halves on every throttle (never below one), grows by one per window of
successes up to its ceiling, records each change, and admits holders only while
under the current limit; a cancelled waiter takes no slot.
"""

from __future__ import annotations

import asyncio

import pytest

from fanfold.nodes.scope import AdaptiveLimit


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
