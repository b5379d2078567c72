"""Adaptive concurrency (nodes/throttle.py `AdaptiveLimit`): cut for our load's 429s only.

The limit is judged on windows of finished attempts: a window with more 429s than the
noise level cuts (half the limit, a pace below the goodput), and the next window
tests the cut; a cut that lowered the goodput but not the 429 share is undone and
that share becomes noise. Healthy windows grow the limit back by a tenth of its
ceiling. The limit admits holders only while under it; a cancelled waiter takes no
slot. (The end-to-end goals, against a real server, are in tests/test_throttle_http.py.)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable

import pytest

from fanfold.nodes import throttle
from fanfold.nodes.throttle import AdaptiveLimit
from tests.helpers import rate_limited


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(throttle.time, "monotonic", c)
    return c


def window(limit: AdaptiveLimit, clock: Clock, *, sent: int, throttled: int) -> None:
    """Send `sent` attempts at the rate the limit allows, then end them, `throttled` 429s.

    A server answering in `LATENCY_S`: `limit` calls at once send limit / LATENCY_S
    requests a second, or the pace if that is lower.
    """
    rate = min(limit.limit / LATENCY_S, limit.pace or float("inf"))
    bad = set(random.Random(sent * 31 + throttled).sample(range(sent), throttled))
    attempts = []
    for _ in range(sent):
        attempts.append(limit.begin())
        clock.now += 1 / rate
    clock.now += LATENCY_S
    for i, attempt in enumerate(attempts):
        limit.end(attempt, THROTTLED if i in bad else None)


LATENCY_S = 0.1
THROTTLED = rate_limited()


def test_a_window_of_load_429s_cuts_and_a_confirming_window_keeps_the_cut(clock: Clock) -> None:
    limit = AdaptiveLimit(40, window=20)
    window(limit, clock, sent=40, throttled=40)  # the first burst: nothing admitted
    window(limit, clock, sent=40, throttled=30)  # goodput 20/s, 75% 429s: load
    assert limit.limit == 10 and limit.pace is not None
    assert [n for _, n in limit.timeline] == [40, 20, 10]
    paced = limit.pace
    window(limit, clock, sent=20, throttled=0)  # the cut helped: no 429 at all
    # Kept, then grown by a tenth of the ceiling; the pace by 10%.
    assert limit.limit == 14 and limit.pace == pytest.approx(paced * 1.1)
    assert limit.noise == 0.0


def test_random_429s_do_not_serialize_the_limit(clock: Clock) -> None:
    limit = AdaptiveLimit(20, window=20)
    rng = random.Random(7)
    lows = []
    for _ in range(60):  # 30% 429s whatever the load, 1,200+ attempts
        sent = max(20, limit.limit)
        window(limit, clock, sent=sent, throttled=sum(rng.random() < 0.3 for _ in range(sent)))
        lows.append(limit.limit)
    # The old AIMD halved on every window: 20 -> 1 within the first five.
    assert min(lows) >= limit.floor == 5
    assert limit.noise == pytest.approx(0.3, abs=0.1)
    # Most of the time at the ceiling; the pace, if any, is gone again.
    assert sum(n == 20 for n in lows[10:]) >= 0.6 * len(lows[10:])
    assert lows[-1] >= 18


def test_a_rate_limited_server_is_paced_near_its_rate(clock: Clock) -> None:
    # A server admitting 50 requests a second, whatever is sent: 429s grow with the load.
    limit = AdaptiveLimit(32, window=20)
    late_shares = []
    for i in range(40):
        rate = min(limit.limit / LATENCY_S, limit.pace or float("inf"))
        sent = max(20, limit.limit)
        throttled = round(sent * max(0.0, 1 - 50 / rate))
        window(limit, clock, sent=sent, throttled=throttled)
        if i >= 5:
            late_shares.append(throttled / sent)
    assert limit.noise < 0.05  # never mistaken for noise
    assert limit.pace is not None and 35 <= limit.pace <= 60
    assert sum(late_shares) / len(late_shares) <= 0.05


def test_429s_that_stay_when_the_load_falls_are_noise(clock: Clock) -> None:
    limit = AdaptiveLimit(20, window=20)
    window(limit, clock, sent=20, throttled=6)
    assert limit.limit == 14 and limit.pace is not None  # a cut, under test
    assert not limit.throttling_is_noise
    window(limit, clock, sent=20, throttled=6)  # less load, as many 429s
    assert (limit.limit, limit.pace) == (20, None)  # undone
    # (judged once 90% of a window ended: 18 of 20)
    assert limit.noise == pytest.approx(0.3, abs=0.05) and limit.throttling_is_noise
    window(limit, clock, sent=20, throttled=7)  # within the noise: healthy
    assert limit.limit == 20 and limit.timeline[-1][1] == 20


def test_a_cut_from_a_chance_cluster_of_known_noise_is_undone(clock: Clock) -> None:
    limit = AdaptiveLimit(20, window=20)
    window(limit, clock, sent=20, throttled=6)
    window(limit, clock, sent=20, throttled=6)  # undone: 30% is noise
    assert limit.limit == 20 and limit.noise == pytest.approx(0.3, abs=0.05)
    window(limit, clock, sent=20, throttled=14)  # a chance cluster well above the noise
    assert limit.limit < 20 and limit.pace is not None
    # Back at the noise level, with the goodput down with the load: the cut bought
    # nothing, so it is undone (it used to stay, growing back a tenth a window).
    window(limit, clock, sent=20, throttled=6)
    assert (limit.limit, limit.pace) == (20, None)


def test_a_burst_allowance_is_not_mistaken_for_noise(clock: Clock) -> None:
    # A token bucket let the window's first half through, then throttled nearly all
    # of its second half: 23 of 50 over the window, 23 of 25 once the burst was spent.
    limit = AdaptiveLimit(50)
    attempts = [limit.begin() for _ in range(50)]
    clock.now += LATENCY_S
    for i, attempt in enumerate(attempts):
        limit.end(attempt, THROTTLED if i >= 27 else None)
    assert limit.limit < 50 and limit._cut is not None
    assert limit._cut.share >= 0.85  # the share once the allowance was spent
    # The cut's test window: the load fell, and so did the 429s, to 30%: within two
    # standard errors of the whole cut window's 46% (read as noise, this undid the cut
    # and sent the run back into the limit at full load), far below the 92% the load
    # met past the burst. So the run cuts again.
    window(limit, clock, sent=limit.limit, throttled=round(0.3 * limit.limit))
    assert limit.limit < 27 and limit.pace is not None
    assert limit.noise < 0.05


def test_a_run_of_cuts_is_tested_against_the_first(clock: Clock) -> None:
    # Noise the run does not know yet, cut twice; the second test window's goodput is
    # not much below the second cut's, but far below the first's, at the first's share.
    limit = AdaptiveLimit(20, window=20)
    window(limit, clock, sent=20, throttled=9)
    first = limit._first_cut
    assert first is not None and limit.limit < 20
    window(limit, clock, sent=20, throttled=3)  # a low draw: not the same share, cut again
    assert limit._first_cut is first and limit._before_cuts is not None
    window(limit, clock, sent=20, throttled=8)
    assert (limit.limit, limit.pace) == (20, None)
    assert limit.noise > 0.25  # the shares of the tested windows, pooled


def test_retry_after_lets_the_limit_go_below_the_floor(clock: Clock) -> None:
    limit = AdaptiveLimit(8, window=4)
    told = rate_limited(**{"retry-after-ms": "500"})
    for _ in range(4):
        attempts = [limit.begin() for _ in range(8)]
        clock.now += 0.01
        for attempt in attempts:
            limit.end(attempt, told)
    assert limit.floor == 2 and limit.limit == 1


def test_attempts_sent_before_a_change_do_not_count(clock: Clock) -> None:
    limit = AdaptiveLimit(20, window=20)
    early = [limit.begin() for _ in range(100)]
    for attempt in early[:20]:
        limit.end(attempt, THROTTLED)
    assert limit.limit == 10
    for attempt in early[20:]:  # late 429s of requests sent at the old limit
        limit.end(attempt, THROTTLED)
    assert limit.limit == 10


def test_a_window_is_judged_on_the_attempts_it_started_not_the_first_to_end(
    clock: Clock,
) -> None:
    # 429s come back at once, answers take a while: the first 20 to end are all 429s,
    # but only 3 of the 20 attempts sent were throttled: within a known noise of 20%.
    limit = AdaptiveLimit(20, window=20)
    limit.noise = 0.2
    attempts = [limit.begin() for _ in range(20)]
    for attempt in attempts[:3]:
        limit.end(attempt, THROTTLED)
    late = [limit.begin() for _ in range(30)]  # sent after the window was full
    for attempt in late:
        limit.end(attempt, THROTTLED)
    assert limit.limit == 20  # not judged yet: 17 of its attempts are still out
    clock.now += 0.3
    for attempt in attempts[3:]:
        limit.end(attempt, None)
    # Judged at 18 of 20 ended: 3 429s in 18.
    assert limit.limit == 20 and limit.noise == pytest.approx(0.2 + 0.2 * (3 / 18 - 0.2))


@pytest.mark.alone  # gaps between wake-ups, 5 ms of slack
async def test_the_pace_spaces_request_starts() -> None:
    limit = AdaptiveLimit(10)
    limit.pace = 50.0  # 20 ms apart
    starts: list[float] = []

    async def one() -> None:
        async with limit.slot() as attempt:
            starts.append(attempt.started)

    await asyncio.gather(*(one() for _ in range(6)))
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.015


async def test_the_limit_blocks_the_holder_past_it() -> None:
    limit = AdaptiveLimit(4)
    limit.limit = 2
    release = [asyncio.Event() for _ in range(4)]
    entered: list[int] = []

    async def hold(i: int) -> None:
        async with limit.slot():
            entered.append(i)
            await release[i].wait()

    holders = [asyncio.create_task(hold(i)) for i in range(4)]
    await asyncio.sleep(0.05)
    assert entered == [0, 1] and limit.in_use == 2  # the 3rd and 4th wait
    release[0].set()
    await asyncio.sleep(0.05)
    assert entered == [0, 1, 2] and limit.in_use == 2  # one out, exactly one in
    # Growing the limit admits a waiter without anyone leaving.
    limit._set(time.monotonic(), 3, None)
    await asyncio.sleep(0.05)
    assert entered == [0, 1, 2, 3] and limit.in_use == 3
    for i in (1, 2, 3):
        release[i].set()
    await asyncio.gather(*holders)
    assert limit.in_use == 0


async def test_a_cancelled_waiter_does_not_take_a_slot() -> None:
    limit = AdaptiveLimit(1)
    gate = asyncio.Event()

    async def hold() -> None:
        async with limit.slot():
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
    async with limit.slot():  # the slot is free again
        assert limit.in_use == 1


async def test_a_holder_cancelled_while_paced_gives_its_slot_back() -> None:
    limit = AdaptiveLimit(2)
    limit.pace = 0.5  # one start per 2 s
    async with limit.slot():
        pass  # takes the first start
    paced = asyncio.create_task(limit.slot().__aenter__())
    await asyncio.sleep(0.01)
    assert limit.in_use == 1  # holding its slot, waiting for its start
    paced.cancel()
    with pytest.raises(asyncio.CancelledError):
        await paced
    assert limit.in_use == 0


async def test_waits_for_a_slot_or_the_pace_end_when_the_race_does() -> None:
    limit = AdaptiveLimit(2)
    limit.pace = 0.2  # one start per 5 s
    stop = asyncio.Event()

    async def race(aw: Awaitable[None]) -> None:  # a run's stop, as RunScope.race does it
        work = asyncio.ensure_future(aw)
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not work.done():
            work.cancel()
            raise RuntimeError("stopped")

    async with limit.slot(race):
        pass  # takes the first start
    paced = [asyncio.create_task(limit.slot(race).__aenter__()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert limit.in_use == 2  # two paced, one waiting for a slot
    t0 = time.monotonic()
    stop.set()
    for task in paced:
        with pytest.raises(RuntimeError, match="stopped"):
            await task
    assert time.monotonic() - t0 < 1.0  # not the 5-15 s the pace would take
    assert limit.in_use == 0


def test_idle_time_before_a_window_is_not_counted_as_the_servers(clock: Clock) -> None:
    # A 6 s planner call alone, then a burst: the goodput is the burst's, not 20 / 6 s.
    limit = AdaptiveLimit(20, window=20)
    planner = limit.begin()
    clock.now += 6.0
    limit.end(planner, None)
    window(limit, clock, sent=20, throttled=10)  # 20 at 200/s, half of them 429s
    assert limit.pace is not None and limit.pace > 20  # was 0.9 * 10 / 6.2 s = 1.5/s


def test_a_hung_attempt_does_not_freeze_the_limit(clock: Clock) -> None:
    limit = AdaptiveLimit(20, window=20)
    window(limit, clock, sent=20, throttled=10)
    assert limit.limit == 10
    hung = limit.begin()  # never ends
    for _ in range(19):
        attempt = limit.begin()
        clock.now += 0.01
        limit.end(attempt, None)
    assert limit.limit > 10 and hung.window is not None  # judged without it


def test_goodput_counts_answers_only(clock: Clock) -> None:
    limit = AdaptiveLimit(40, window=20)
    errors = [limit.begin() for _ in range(40)]
    clock.now += 0.004
    for attempt in errors:  # 40 fast connection errors
        limit.end(attempt, ConnectionError("refused"))
    assert limit._best_goodput == 0.0  # nothing was answered


async def test_a_waiter_handed_a_slot_but_cancelled_hands_it_on() -> None:
    limit = AdaptiveLimit(1)
    await limit.acquire()  # A holds the only slot
    b = asyncio.create_task(limit.acquire())
    c = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0.01)
    limit.release()  # hands the slot to B's waiter...
    b.cancel()  # ...but B is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await b
    await asyncio.wait_for(c, 1.0)  # C gets it instead of waiting for ever
    assert limit.in_use == 1
