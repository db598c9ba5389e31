"""Time, as the cache, the reclaimer and the handler invoker see it: injectable.

Code that waits or decides by time takes a :class:`Clock` (default :data:`SYSTEM`), so its
tests run on a :class:`ManualClock` that moves only when told: no sleeping in tests, no
assertion on wall time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

__all__ = ["SYSTEM", "Clock", "ManualClock"]


class Clock:
    """The system's clocks and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        """Seconds since the epoch (for timestamps shown to people)."""
        return time.time()

    def thread_time(self) -> float:
        """The CPU time of the calling thread (waits, for the GIL or anything else, left out)."""
        return time.thread_time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM = Clock()


class ManualClock(Clock):
    """A clock that moves only by :meth:`advance`; sleepers wake when their time is reached.

    Use it from one event loop. ``sleep(0)`` yields to the loop once, like ``asyncio.sleep(0)``.
    """

    def __init__(self, start: float = 1000.0, wall: float = 1.7e9) -> None:
        self._now = start
        self._wall_offset = wall - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def thread_time(self) -> float:
        return self.monotonic()  # (a fake "takes" its time as CPU time)

    def time(self) -> float:
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many coroutines sleep on this clock now."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def skip(self, seconds: float) -> None:
        """Move ``seconds`` on and wake nobody: for code that only reads the clock (from any
        thread), e.g. a fake that "takes" time. Sleepers whose time came wake at the next
        :meth:`advance`."""
        self._now += seconds

    async def advance(self, seconds: float) -> None:
        """Move ``seconds`` on, waking (in time order) every sleeper whose time came, and let the
        woken ones run until they wait again."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            at, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, at)
            if not future.done():
                future.set_result(None)
                for _ in range(5):  # let the woken coroutine run up to its next wait
                    await asyncio.sleep(0)
        self._now = target
        await asyncio.sleep(0)
