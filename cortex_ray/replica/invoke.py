"""Running the user's handler methods, with as little as possible in between.

* ``async def`` methods run on the core loop.
* Sync methods of an API with one handler thread (``threads_per_process: 1``, the default) run
  in the handler's thread at first, timed. A method whose first calls all took under
  ``INLINE_BUDGET`` of CPU time (and under ``INLINE_WALL_BUDGET`` of wall time), but for one
  (a first call that warms something up, a garbage collection), then runs inline on the core
  loop, inside a greenlet: no thread hop, no
  handoff of the GIL (a trivial model answers as fast as the loop can). When such a method
  calls ``get_model`` for a model that must be loaded, the greenlet is suspended while the load
  is awaited (the loop keeps serving other requests) and resumed with the model. Inline calls
  that are slow, ``DEMOTE_STRIKES`` times within ``DEMOTE_WINDOW`` (or one call longer than
  ``DEMOTE_AT_ONCE``), send the method back to the thread for good: the loop must stay free to
  read requests (and refuse those above ``max_replica_concurrency``) while a model takes its
  time (slow calls among a hundred times as many quick ones do not count: stolen time). A call
  is slow when it ran longer than ``DEMOTE_AFTER`` with that much CPU time of the
  loop's thread (the handler's own work: as in the thread, where its CPU time decides whether
  it may run inline), or longer than ``INLINE_WALL_BUDGET`` whatever the CPU (a wait, or work
  in a framework's own threads). One slow call alone does not demote: a garbage collection
  stretches a trivial call now and then; nor do stretches under ``INLINE_WALL_BUDGET`` in
  which the loop got no CPU (a loaded machine, a model loading in another thread), and a
  trivial method in the thread answers at half the rate.
* Sync methods of an API with more handler threads run in a thread pool, at most
  ``threads_per_process`` at once (a request waiting for a cold model gives its slot back).

Which arguments a method takes is worked out once per method, not per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import greenlet

from cortex_ray.clock import SYSTEM, Clock
from cortex_ray.endpoint.arguments import Method
from cortex_ray.replica.slots import HandlerSlots

__all__ = [
    "DEMOTE_AFTER",
    "DEMOTE_AT_ONCE",
    "DEMOTE_STRIKES",
    "DEMOTE_WINDOW",
    "INLINE_AFTER",
    "INLINE_BUDGET",
    "INLINE_WALL_BUDGET",
    "HandlerEscape",
    "Invoker",
    "await_in_handler",
    "in_inline_handler",
]

log = logging.getLogger("cortex_ray.replica")


@dataclass
class _Await:
    awaitable: Awaitable[Any]


@dataclass
class _Finished:
    value: Any = None
    error: BaseException | None = None


class _HandlerGreenlet(greenlet.greenlet):
    """Runs sync handler calls inline on the core loop, one after another (reused: creating a
    greenlet costs several microseconds, switching into one a fraction of one)."""

    def __init__(self) -> None:
        super().__init__(self._serve)

    def _serve(self) -> None:
        finished = _Finished()
        while True:
            assert self.parent is not None
            func, kwargs = self.parent.switch(finished)
            try:
                finished = _Finished(func(**kwargs))
            except BaseException as exc:
                finished = _Finished(error=exc)
            del func, kwargs


def in_inline_handler() -> bool:
    return isinstance(greenlet.getcurrent(), _HandlerGreenlet)


def await_in_handler(awaitable: Awaitable[Any]) -> Any:
    """From a sync handler running inline: suspend it until ``awaitable`` is done."""
    current = greenlet.getcurrent()
    assert isinstance(current, _HandlerGreenlet) and current.parent is not None
    return current.parent.switch(_Await(awaitable))


INLINE_AFTER = 20
"""Calls of a sync method that run in the handler's thread, timed, before it may run inline."""
INLINE_BUDGET = 0.002
"""A method none of whose first calls (but one) took more CPU time than this (seconds) runs inline."""
INLINE_WALL_BUDGET = 0.050
"""...and none of whose first calls ran longer than this (seconds, waits for models excluded):
a method that waits on something else (a socket, a sleep) stays in the thread. (CPU time decides
first: under load a quick method's calls in the thread wait for the GIL, and their wall time says
more about the loop than about them.)"""
DEMOTE_AFTER = 0.010
"""An inline call that runs longer than this (seconds, waits for models excluded), with as much
CPU time of the loop's thread, or longer than ``INLINE_WALL_BUDGET``, is slow..."""
DEMOTE_STRIKES = 3
"""...and this many slow calls within ``DEMOTE_WINDOW`` (seconds), when they are at least
``DEMOTE_SHARE`` of its inline calls in that window or held the loop ``DEMOTE_AT_ONCE`` together,
send the method back to the thread for good (a trivial model at 2,000 calls a second on a busy
machine has a few calls a minute stretched past the budgets by stolen time, a collection, or a
framework's threads waiting for a core: not a reason to pay a thread hop on every call),"""
DEMOTE_WINDOW = 10.0
DEMOTE_SHARE = 0.01
DEMOTE_AT_ONCE = 0.5
"""...as does one call that held the loop longer than this (seconds)."""


class HandlerEscape(Exception):
    """A handler raised what is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``,
    ``GeneratorExit``, ``CancelledError`` of its own): carried as one, so that it is answered like
    any handler error and never stops the loop (asyncio mishandles a ``GeneratorExit`` coming out of
    a future: it skips the ``except`` clauses of the coroutines awaiting it)."""

    def __init__(self, raised: BaseException) -> None:
        super().__init__(f"{type(raised).__name__}: {raised}")
        self.raised = raised


def _carried(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return func(**kwargs)
    except Exception:
        raise
    except BaseException as exc:
        raise HandlerEscape(exc) from exc


class _Pace:
    """How long a sync method's calls run, and so where it runs."""

    __slots__ = ("calls", "demoted", "inline", "inline_calls", "marks", "over_budget", "strikes")

    def __init__(self, inline: bool) -> None:
        self.calls = 0
        self.over_budget = 0
        """Calls in the thread that took more than the inline budgets."""
        self.inline_calls = 0
        """Calls that ran inline (counted as they finish)."""
        self.marks: list[tuple[float, int]] = []
        """``inline_calls`` about once a second over the last ``DEMOTE_WINDOW``: how many calls
        a window held."""
        self.strikes: list[tuple[float, int, float]] = []
        """When recent inline calls ran slow (``DEMOTE_AFTER``), within ``DEMOTE_WINDOW``:
        the time, ``inline_calls`` then, and how long each ran."""
        self.inline = inline
        self.demoted = False

    def ran_inline(self, now: float) -> None:
        """Count an inline call that finished at ``now``."""
        self.inline_calls += 1
        marks = self.marks
        if not marks or now - marks[-1][0] >= 1.0:
            marks.append((now, self.inline_calls))
            if now - marks[0][0] > DEMOTE_WINDOW + 1.0:
                del marks[0]

    def slow_inline(self, ran: float, now: float) -> bool:
        """Count an inline call that ran ``ran`` seconds (after :meth:`ran_inline` counted it);
        whether the method must leave the loop."""
        if ran > DEMOTE_AT_ONCE:
            return True
        self.strikes = [s for s in self.strikes if now - s[0] < DEMOTE_WINDOW]
        self.strikes.append((now, self.inline_calls, ran))
        if len(self.strikes) < DEMOTE_STRIKES:
            return False
        first = self.strikes[0][1]  # the calls in the window: since its oldest mark, or its first slow one
        since = next((c for t, c in self.marks if now - t < DEMOTE_WINDOW and c <= first), first)
        calls = self.inline_calls - since + 1
        held = sum(s[2] for s in self.strikes)
        return len(self.strikes) >= DEMOTE_SHARE * calls or held >= DEMOTE_AT_ONCE


class Invoker:
    def __init__(
        self,
        threads: int,
        max_waiting: int,
        name: str,
        inline: bool = True,
        clock: Clock = SYSTEM,
        inline_after: int = INLINE_AFTER,
    ) -> None:
        self.name = name
        self.adaptive = inline and threads == 1
        """Whether sync methods may run inline (one handler thread, no timeout to enforce)."""
        self.clock = clock
        self.inline_after = inline_after
        self._paces: dict[Method, _Pace] = {}
        self._idle: list[_HandlerGreenlet] = []
        self._slot_free: asyncio.Event | None = None
        self._loop_waiting = 0
        self.slots = HandlerSlots(threads, clock)
        # threads waiting for a cold model give their slot back but keep their thread: allow as
        # many threads as requests a replica takes (created only when needed)
        self.pool = ThreadPoolExecutor(
            max_workers=threads + max_waiting, thread_name_prefix=f"{name}-handler"
        )

    def runs_inline(self, method: Method) -> bool:
        pace = self._paces.get(method)
        return pace is not None and pace.inline

    async def __call__(self, method: Method, kwargs: dict[str, Any]) -> Any:
        """Run one call; an exception of the user's code is raised as it is."""
        if method.is_async:
            try:
                return await method.func(**kwargs)
            except (Exception, asyncio.CancelledError):  # (a cancel of this task goes on as one)
                raise
            except BaseException as exc:
                raise HandlerEscape(exc) from exc
        if not self.adaptive:
            return (await self._in_thread(method.func, kwargs))[0]
        pace = self._paces.get(method)
        if pace is None:
            pace = self._paces[method] = _Pace(inline=self.inline_after <= 0)
        if pace.inline:
            return await self._inline(method, kwargs, pace)
        result, wall, cpu = await self._in_thread(method.func, kwargs)
        if not pace.demoted:
            pace.calls += 1
            pace.over_budget += cpu > INLINE_BUDGET or wall > INLINE_WALL_BUDGET
            if pace.calls >= self.inline_after:
                pace.inline = pace.over_budget <= 1  # (one slow call is forgiven: a warm-up, a collection)
                pace.demoted = not pace.inline  # slow from the start: it stays in the thread
        return result

    async def _in_thread(self, func: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[Any, float, float]:
        """``func(**kwargs)`` in the pool, holding a slot; its result, how long it ran (its waits
        for models excluded) and the CPU time it took."""
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, self.slots.run_timed, functools.partial(_carried, func, kwargs))
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def _inline(self, method: Method, kwargs: dict[str, Any], pace: _Pace) -> Any:
        slots = self.slots
        if not slots.try_take():  # the handler's thread runs a call: one at a time, so wait for it
            # (and then run here: sent to the thread instead, calls under steady load would keep
            # finding the slot taken by the one before, and the method would never run inline again)
            await self._take_slot()  # (cancelled while it waits: it took nothing)
        value, ran, cpu = await self._run_in_greenlet(method, kwargs)  # (gives the slot back)
        now = self.clock.monotonic()
        pace.ran_inline(now)
        slow = ran > DEMOTE_AFTER and (cpu > DEMOTE_AFTER or ran > INLINE_WALL_BUDGET)
        if slow and pace.slow_inline(ran, now):
            pace.inline, pace.demoted = False, True
            log.info(
                "api %s: %s ran %.3f s on the replica's loop (%s): it runs in the handler's thread from "
                "now on (the loop stays free to take requests meanwhile)",
                self.name,
                getattr(method.func, "__name__", "a handler method"),
                ran,
                f"{len(pace.strikes)} slow calls within {DEMOTE_WINDOW:.0f} s"
                if ran <= DEMOTE_AT_ONCE
                else f"over {DEMOTE_AT_ONCE} s",
            )
        if value.error is not None:
            if not isinstance(value.error, Exception):
                raise HandlerEscape(value.error) from value.error
            raise value.error
        return value.value

    async def _run_in_greenlet(
        self, method: Method, kwargs: dict[str, Any]
    ) -> tuple[_Finished, float, float]:
        """The call in a reused greenlet, with the slot (taken by the caller, given back here), but
        while it waits for a model; how long it ran on the loop, and the loop thread's CPU time
        meanwhile. Cancelled while it waits (for the model, or for the slot after it), it gives
        back only a slot it holds, and its greenlet is not reused."""
        g = self._idle.pop() if self._idle else None
        if g is None or g.dead:  # a fresh one: run it up to its first wait for work
            g = _HandlerGreenlet()
            g.switch()
        g.gr_context = contextvars.copy_context()
        clock, slots = self.clock, self.slots
        held = True
        try:
            started, cpu_started = clock.monotonic(), clock.thread_time()
            value = g.switch((method.func, kwargs))
            ran, cpu = clock.monotonic() - started, clock.thread_time() - cpu_started
            while isinstance(value, _Await):  # the handler waits for a model: the loop goes on
                slots.give_back()  # and other calls may run meanwhile, as a thread's wait lets them
                held = False
                try:
                    result = await value.awaitable
                except BaseException as exc:
                    await self._take_slot()
                    held = True
                    started, cpu_started = clock.monotonic(), clock.thread_time()
                    value = g.throw(exc)
                else:
                    await self._take_slot()
                    held = True
                    started, cpu_started = clock.monotonic(), clock.thread_time()
                    value = g.switch(result)
                ran += clock.monotonic() - started
                cpu += clock.thread_time() - cpu_started
        finally:
            if held:
                slots.give_back()
        self._idle.append(g)
        assert isinstance(value, _Finished)
        return value, ran, cpu

    async def _take_slot(self) -> None:
        """Take the slot for the loop; if a call in a thread holds it, wait on the loop until a
        thread gives it back. (The loop's own calls give it back before they yield, so only a
        thread's release can free it for a waiter here. Waiting in a thread instead, the waiting
        threads would take the slot as the loop let go of it, one request after another.)"""
        if self.slots.try_take():
            return
        free = self._slot_free
        if free is None:
            free = self._slot_free = asyncio.Event()
            loop = asyncio.get_running_loop()

            def wake() -> None:  # (in the thread that gave the slot back)
                if self._loop_waiting and not loop.is_closed():
                    with contextlib.suppress(RuntimeError):  # (closed meanwhile: no one waits)
                        loop.call_soon_threadsafe(free.set)

            self.slots.on_thread_release = wake
        self._loop_waiting += 1  # (before trying again: a release after it wakes this wait)
        try:
            while True:
                free.clear()
                if self.slots.try_take():
                    return
                await free.wait()
        finally:
            self._loop_waiting -= 1

    async def run_sync(self, func: Callable[[], Any]) -> Any:
        """Run a plain sync callable (a handler's callback) in the handler threads' pool."""
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.pool, ctx.run, func)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
