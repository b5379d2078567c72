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
The test compares with the first cut of a run of cuts as well as the last (cuts that
reached the floor lower the goodput no further from one window to the next), and,
once the noise level is known, a test window back at that level with less goodput
undoes the cut too: its window was a chance cluster of the noise. A cut window
that began with a burst (a token bucket's allowance let its first requests through)
is compared by its later half, the share the load met once the allowance was spent.
Healthy windows grow the limit by a tenth of its ceiling and the pace (quickly far
below the rate last admitted, by 10% up to it, then probing past it in doubling
steps), and move the noise level toward what they see. Goodput counts answers only,
per second since the window's first attempt; an attempt that starts when none is in
flight starts the window afresh.

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
"""A healthy window raises a pace near the rate last admitted by this factor."""
FAR_GAIN = 1.25
"""... and one far (20%+) below that rate by this factor."""
PROBE = 0.02
"""Past that rate, the first healthy window adds this share of it; each next one doubles
the step."""
PACE_SHARE = 0.9
"""A cut paces requests at this share of the goodput the server admitted."""
FLOOR_SHARE = 0.25
"""Without Retry-After, the limit and the pace stay at or above this share of their ceiling
(the pace's: the best goodput seen)."""


@dataclass(frozen=True)
class _Cut:
    """A cut under test: the window that caused it.

    `share` and `attempts` are the whole window's, or, when the window began with a
    burst (its later half far more throttled than its first: a token bucket's burst
    allowance let the first requests through), its later half's: the share the load
    meets once the allowance is spent, which is what a test window must be compared
    with.
    """

    share: float
    goodput: float
    attempts: int


Race = Callable[[Awaitable[None]], Awaitable[None]]
"""Awaits an awaitable unless the run stops first (then cancels it and raises)."""


async def _plainly(aw: Awaitable[None]) -> None:
    await aw


@dataclass
class Attempt:
    """One model request holding a slot of the limit."""

    started: float
    window: int | None
    """The window it is judged in; None: sent after its window was full."""
    late: bool = False
    """Started in the later half of its window (see `_Cut`)."""


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
        race = self.race or _plainly
        await race(self.limit.acquire())
        try:
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
        self._pace_changes = 0
        self._window_id = 0
        self._members = 0
        self._first_start = self.t0
        self._ended = 0
        self._ok = 0
        self._throttled = 0
        self._late_ended = 0
        self._late_throttled = 0
        self._told_when = False
        self._known: float | None = None
        """The goodput the server admitted when the run's load last overran it."""
        self._probe = PROBE
        self._cut: _Cut | None = None
        self._first_cut: _Cut | None = None
        """The window that began the current run of cuts."""
        self._before_cuts: tuple[int, float | None, float | None] | None = None
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
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # handed a slot it will not take: hand it on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.in_use += 1

    def release(self) -> None:
        """Give a slot back (never awaits)."""
        self.in_use -= 1
        self._wake()

    async def keep_pace(self) -> None:
        """Wait for this attempt's turn under the pace, if there is one.

        A turn taken under an older pace is taken again under the new one: otherwise
        the queue of turns booked at the old pace goes out at it after a cut, into the
        window that is to test the cut.
        """
        while self.pace is not None:
            changes = self._pace_changes
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.pace
            if start > now:
                await asyncio.sleep(start - now)
            if changes == self._pace_changes:
                return

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
        """Start an attempt: a member of the current window while it has room.

        An attempt that starts when no other is in flight (the run was planning, or
        waiting on one long task) starts the window afresh: idle time is not the
        server's, and counted as window time it made the goodput look tiny.
        """
        now = time.monotonic()
        if self.in_use <= 1 and self._members and self._ended == self._members:
            self._clear_window()
        if self._members < self._size():
            if not self._members:
                self._first_start = now
            self._members += 1
            return Attempt(now, self._window_id, late=self._members > self._size() / 2)
        return Attempt(now, None)

    def _size(self) -> int:
        return max(self.window, self.limit)

    def end(self, attempt: Attempt, exc: BaseException | None) -> None:
        """End an attempt: answered (`exc` None), throttled (a 429) or failed otherwise."""
        if attempt.window != self._window_id:
            return  # sent under an older setting, or after the window was full
        self._ended += 1
        self._late_ended += attempt.late
        if exc is None:
            self._ok += 1
        elif classify(exc) == "rate_limited":
            self._throttled += 1
            self._late_throttled += attempt.late
            after = retry_after_s(exc)
            self._told_when = self._told_when or (after is not None and after > 0)
        # Judged at 90% ended: one hung or very slow attempt does not freeze the limit.
        if self._ended >= math.ceil(0.9 * self._size()):
            now = time.monotonic()
            # What the server answered, per second, since the window's first attempt.
            goodput = self._ok / max(1e-3, now - self._first_start)
            self._judge(now, self._throttled / self._ended, goodput)

    def _margin(self) -> float:
        p = self.noise
        return 0.02 + 2.5 * math.sqrt(p * (1 - p) / max(1, self._ended))

    def _same_share(self, cut: _Cut, share: float) -> bool:
        """Tell whether this window's 429 share is the cut window's, give or take chance.

        Two standard errors either way (a cut window that began with a burst is
        compared by its later half: `_Cut`).
        """
        n1, n2 = cut.attempts, max(1, self._ended)
        pooled = (cut.share * n1 + share * n2) / (n1 + n2)
        error = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        return share > 0.05 and cut.share - 2 * error <= share <= cut.share + 2 * error

    def _cut_of(self, share: float, goodput: float) -> _Cut:
        """Return the cut this window makes: its share, or its later half's after a burst."""
        late, early = self._late_ended, self._ended - self._late_ended
        if late and early:
            late_share = self._late_throttled / late
            early_share = (self._throttled - self._late_throttled) / early
            error = math.sqrt(share * (1 - share) * (1 / early + 1 / late))
            if late_share - early_share > 2 * error:
                return _Cut(late_share, goodput, late)
        return _Cut(share, goodput, self._ended)

    def _useless(self, cut: _Cut, share: float, goodput: float) -> bool:
        """Tell whether the load cut since `cut` lowered the goodput but not the 429s.

        Either the 429s stayed at the cut window's share, or, once the run's noise is
        known, at the noise level (the cut window's excess was a chance cluster of it).
        """
        if goodput >= 0.8 * cut.goodput:
            return False
        if self._same_share(cut, share):
            return True
        p = self.noise
        error = math.sqrt(p * (1 - p) / max(1, self._ended))
        return p >= 0.05 and share >= p - error

    def _judge(self, now: float, share: float, goodput: float) -> None:
        self._best_goodput = max(self._best_goodput, goodput)
        excess = share > self.noise + self._margin()
        cut, self._cut = self._cut, None
        before = self._before_cuts  # set whenever a cut is under test
        tested = [c for c in (cut, self._first_cut) if c is not None]
        useless = next((c for c in tested if self._useless(c, share, goodput)), None)
        if cut is not None and before is not None and useless is not None:
            # Less load, as many 429s, less goodput: they are not ours to cause. Undo the
            # cuts (the first may have come from a chance cluster of the noise). Measured
            # against the first cut too: a run of cuts that reached the floor lowers the
            # goodput no further from one window to the next.
            n1, n2 = useless.attempts, max(1, self._ended)
            self.noise = max(self.noise, (useless.share * n1 + share * n2) / (n1 + n2))
            self._before_cuts = self._first_cut = None
            limit, pace, self._known = before
            self._set(now, limit, pace)
        elif excess:
            self._cut = self._cut_of(share, goodput)
            if self._before_cuts is None:
                self._before_cuts = (self.limit, self.pace, self._known)
                self._first_cut = self._cut
            self._known, self._probe = goodput, PROBE
            floor = 1 if self._told_when else self.floor
            pace = PACE_SHARE * goodput
            if not self._told_when:
                pace = max(pace, FLOOR_SHARE * self._best_goodput)
            if self.pace is not None:
                pace = min(pace, self.pace)
            keep = max(0.5, 1 - share)  # as much as got through, never less than half
            limit = max(floor, min(self.limit - 1, math.ceil(self.limit * keep)))
            self._set(now, limit, pace if pace > 0 else self.pace)
        else:
            self._before_cuts = self._first_cut = None
            self.noise += 0.2 * (share - self.noise)
            limit = min(self.ceiling, self.limit + max(1, round(self.ceiling * GROWTH)))
            self._set(now, limit, self._grown_pace())

    def _grown_pace(self) -> float | None:
        """Return the pace after a healthy window.

        Quick far below the rate the server last admitted under overload, up to it by
        10% a window, then probing past it in steps that double each healthy window
        (2%, 4%, 8% of it...): few 429s near a limit that holds, and a few windows
        back up once it is lifted.
        """
        pace, known = self.pace, self._known
        if pace is None:
            return None
        if known is None or pace < 0.8 * known:
            pace *= FAR_GAIN
        elif pace < known:
            pace = min(known, pace * PACE_GAIN)
        else:
            pace += self._probe * known
            self._probe *= 2
        if pace >= 2 * self._best_goodput:
            return None  # far above anything the server answered: no longer binding
        return pace

    def _set(self, now: float, limit: int, pace: float | None) -> None:
        since = round(now - self.t0, 4)
        if limit != self.limit:
            self.limit = limit
            self.timeline.append((since, limit))
            self._wake()
        if pace != self.pace:
            self.pace = pace
            self.pace_timeline.append((since, None if pace is None else round(pace, 2)))
            self._pace_changes += 1
            self._next_start = now
        self._window_id += 1
        self._clear_window()

    def _clear_window(self) -> None:
        self._members = self._ended = self._ok = self._throttled = 0
        self._late_ended = self._late_throttled = 0
        self._told_when = False
