"""How many model calls a run makes at once, and how fast: adapted to the 429s its load causes.

A 429 means one of two things. Either the run asks for more than the server admits
(a rate or concurrency limit: asking less helps), or the server throttles some
share of requests whatever the load (a shared quota other clients spend, an
overloaded provider, a chaos proxy: asking less only slows the run). Halving on
every 429 treats both alike, and a 30% background of 429s drove a limit of 20 to 1
in a second, serializing the run.

`AdaptiveLimit` tells them apart by experiment. It judges windows of attempts: the
first `window` (or, if more, the current limit) started under the current setting,
once all of them have ended (a 429 comes back sooner than an answer: judging the
first attempts to *end* would overcount them). A window whose 429 share is above the
run's *noise level* (plus a statistical margin) cuts: the concurrency limit shrinks
to the share that got through (at most by half, never below the floor) and requests
are paced at 0.9x the goodput the server just admitted. The next window tests the
cut: if the 429 share stayed the same, give or take chance, while the goodput fell
with the load, the 429s were not ours to cause; the cuts are undone, their share
becomes the noise level, and a 429 is then retried at the first backoff step.
Healthy windows grow the limit by a tenth of its ceiling and the pace by 10%, and
move the noise level toward what they see.

Floors: while the server's 429s carry no Retry-After the limit never falls below a
quarter of its ceiling, nor the pace below a quarter of the best goodput seen; a
server that says when to come back (Retry-After on its 429s) may take both down
to one call. Every attempt's own retry still waits its backoff or Retry-After
(`nodes.calls`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from fanfold.nodes.faults import classify, retry_after_s

WINDOW = 20
"""Fewest attempts a window is judged on."""
GROWTH = 0.1
"""Each healthy window adds this share of the ceiling to the limit (at least one)."""
PACE_GAIN = 1.1
"""Each healthy window raises a pace by this factor."""
PACE_SHARE = 0.9
"""A cut paces requests at this share of the goodput the server admitted."""
FLOOR_SHARE = 0.25
"""Without Retry-After, the limit and the pace stay at or above this share of their ceiling
(the pace's: the best goodput seen)."""


@dataclass(frozen=True)
class _Cut:
    """A cut under test: the setting before it and the window that caused it."""

    limit: int
    pace: float | None
    share: float
    goodput: float
    attempts: int


Race = Callable[[Awaitable[None]], Awaitable[None]]
"""Awaits an awaitable unless the run stops first (then cancels it and raises)."""


@dataclass
class Attempt:
    """One model request holding a slot of the limit."""

    started: float
    window: int | None
    """The window it is judged in; None: sent after its window was full."""


class Slot:
    """One attempt, as `async with limit.slot():`.

    Waits for a slot (and the pace), then tells the limit how the attempt ended: an
    answer, a 429, anything else.
    """

    __slots__ = ("attempt", "limit", "race")

    def __init__(self, limit: AdaptiveLimit, race: Race | None = None) -> None:
        self.limit = limit
        self.race = race
        self.attempt: Attempt | None = None

    async def __aenter__(self) -> Attempt:
        race = self.race
        if race is None:
            await self.limit.acquire()
        else:
            await race(self.limit.acquire())
        try:
            if race is None:
                await self.limit.keep_pace()
            else:
                await race(self.limit.keep_pace())
        except BaseException:
            self.limit.release()
            raise
        self.attempt = self.limit.begin()
        return self.attempt

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.limit.release()
        if self.attempt is not None:
            self.limit.end(self.attempt, exc)


class AdaptiveLimit:
    """A concurrency limit and a request pace for model calls, cut only for 429s of our load.

    Release never awaits, so a holder cancelled mid-release cannot leak its slot.
    """

    def __init__(self, ceiling: int, *, window: int = WINDOW) -> None:
        self.ceiling = ceiling
        self.window = window
        self.limit = ceiling
        self.floor = max(1, math.ceil(ceiling * FLOOR_SHARE))
        """The lowest limit while 429s carry no Retry-After."""
        self.pace: float | None = None
        """Requests per second the calls are spaced at; None: not paced."""
        self.noise = 0.0
        """The share of 429s the server sends whatever the load, as far as known."""
        self.in_use = 0
        self.t0 = time.monotonic()
        self.timeline: list[tuple[float, int]] = [(0.0, ceiling)]
        """(seconds since start, limit) at each change of the limit."""
        self.pace_timeline: list[tuple[float, float | None]] = []
        """(seconds since start, pace) at each change of the pace."""
        self._waiters: list[asyncio.Future[None]] = []
        self._next_start = 0.0
        self._window_id = 0
        self._since = self.t0
        self._members = 0
        self._ended = 0
        self._throttled = 0
        self._told_when = False
        self._cut: _Cut | None = None
        self._before_cuts: tuple[int, float | None] | None = None
        """The setting before the current run of cuts (no healthy window between them)."""
        self._best_goodput = 0.0

    @property
    def throttling_is_noise(self) -> bool:
        """Tell whether the run's 429s are known noise, and no cut is being tried.

        Then a throttled call is retried after the first backoff step, not an
        exponentially longer one: backing off from noise only delays the task it hits.
        """
        return self.noise >= 0.05 and self._before_cuts is None

    def slot(self, race: Race | None = None) -> Slot:
        """Return a context manager for one attempt.

        `race`: awaits the waits for a slot and for the pace, unless the run stops
        first (`RunScope.race`): a paced queue must not hold a stop for seconds.
        """
        return Slot(self, race)

    # --- slots and pace ------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait until fewer than `limit` attempts hold a slot, then take one."""
        while self.in_use >= self.limit:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.in_use += 1

    def release(self) -> None:
        """Give a slot back (never awaits)."""
        self.in_use -= 1
        self._wake()

    async def keep_pace(self) -> None:
        """Wait for this attempt's turn under the pace, if there is one."""
        if self.pace is None:
            return
        now = time.monotonic()
        start = max(now, self._next_start)
        self._next_start = start + 1.0 / self.pace
        if start > now:
            await asyncio.sleep(start - now)

    def _wake(self) -> None:
        free = self.limit - self.in_use
        for waiter in list(self._waiters):
            if free <= 0:
                break
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    # --- what the attempts tell ------------------------------------------------------

    def begin(self) -> Attempt:
        """Start an attempt: a member of the current window while it has room."""
        if self._members < max(self.window, self.limit):
            self._members += 1
            return Attempt(time.monotonic(), self._window_id)
        return Attempt(time.monotonic(), None)

    def end(self, attempt: Attempt, exc: BaseException | None) -> None:
        """End an attempt: answered (`exc` None), throttled (a 429) or failed otherwise."""
        if attempt.window != self._window_id:
            return  # sent under an older setting, or after the window was full
        self._ended += 1
        if exc is not None and classify(exc) == "rate_limited":
            self._throttled += 1
            self._told_when = self._told_when or retry_after_s(exc) is not None
        if self._ended >= max(self.window, self.limit):
            now = time.monotonic()
            # What the server admitted of what this setting sent: the send rate times
            # the share not throttled.
            share = self._throttled / self._ended
            goodput = self._ended / max(1e-3, now - self._since) * (1 - share)
            self._judge(now, share, goodput)

    def _margin(self) -> float:
        p = self.noise
        return 0.02 + 2.5 * math.sqrt(p * (1 - p) / max(1, self._ended))

    def _same_share(self, cut: _Cut, share: float) -> bool:
        """Tell whether this window's 429 share is the cut window's, give or take chance.

        Strict on the low side: a share that fell by more than one standard error may be
        our load's 429s going away (or a burst allowance that made the cut window's
        goodput look high), so it is not taken as noise; the next window decides.
        """
        n1, n2 = cut.attempts, max(1, self._ended)
        pooled = (cut.share * n1 + share * n2) / (n1 + n2)
        error = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        return share > 0.05 and cut.share - error <= share <= cut.share + 2 * error

    def _judge(self, now: float, share: float, goodput: float) -> None:
        self._best_goodput = max(self._best_goodput, goodput)
        excess = share > self.noise + self._margin()
        cut, self._cut = self._cut, None
        if cut is not None and goodput < 0.8 * cut.goodput and self._same_share(cut, share):
            # Less load, as many 429s, less goodput: they are not ours to cause. Undo the
            # cuts (the first may have come from a chance cluster of the noise).
            self.noise = max(self.noise, share)
            limit, pace = self._before_cuts or (cut.limit, cut.pace)
            self._before_cuts = None
            self._set(now, limit, pace)
        elif excess:
            self._cut = _Cut(self.limit, self.pace, share, goodput, self._ended)
            if self._before_cuts is None:
                self._before_cuts = (self.limit, self.pace)
            floor = 1 if self._told_when else self.floor
            pace = PACE_SHARE * goodput
            if not self._told_when:
                pace = max(pace, FLOOR_SHARE * self._best_goodput)
            if self.pace is not None:
                pace = min(pace, self.pace)
            keep = max(0.5, 1 - share)  # as much as got through, never less than half
            limit = max(floor, min(self.limit - 1, math.ceil(self.limit * keep)))
            self._set(now, max(1, limit), pace if pace > 0 else self.pace)
        else:
            self._before_cuts = None
            self.noise += 0.2 * (share - self.noise)
            limit = min(self.ceiling, self.limit + max(1, round(self.ceiling * GROWTH)))
            pace = None if self.pace is None else self.pace * PACE_GAIN
            if pace is not None and pace >= 2 * self._best_goodput:
                pace = None  # far above anything the server admitted: no longer binding
            self._set(now, limit, pace)

    def _set(self, now: float, limit: int, pace: float | None) -> None:
        since = round(now - self.t0, 4)
        if limit != self.limit:
            self.limit = limit
            self.timeline.append((since, limit))
            self._wake()
        if pace != self.pace:
            self.pace = pace
            self.pace_timeline.append((since, None if pace is None else round(pace, 2)))
            if pace is None:
                self._next_start = 0.0
        self._window_id += 1
        self._since = now
        self._members = self._ended = self._throttled = 0
        self._told_when = False
