"""Handler slots: at most ``threads_per_process`` threads run user code at once.

A sync handler that waits in ``get_model`` for a model being downloaded or
loaded gives its slot back while it waits, so a slow load never holds up
requests that need other (warm) models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from cortex_ray.clock import SYSTEM, Clock

__all__ = ["HandlerSlots"]

T = TypeVar("T")


class HandlerSlots:
    def __init__(self, size: int, clock: Clock = SYSTEM) -> None:
        self.size = size
        self.clock = clock
        self._semaphore = threading.BoundedSemaphore(size)
        self._local = threading.local()
        self.on_thread_release: Callable[[], None] | None = None
        """Called after a thread gives a slot back (the loop's waiters are woken so)."""

    def _release_from_thread(self) -> None:
        self._semaphore.release()
        wake = self.on_thread_release
        if wake is not None:
            wake()

    def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func`` holding one slot (called in a worker thread)."""
        self._semaphore.acquire()
        self._local.held = True
        try:
            return func(*args)
        finally:
            self._local.held = False
            self._release_from_thread()

    def try_take(self) -> bool:
        """Take a slot if one is free now (the loop's inline calls: they never block; they wait
        for :attr:`on_thread_release`)."""
        return self._semaphore.acquire(blocking=False)

    def give_back(self) -> None:
        self._semaphore.release()

    def run_timed(self, func: Callable[[], T]) -> tuple[T, float, float]:
        """Like :meth:`run`; also how long ``func`` ran holding the slot (its waits with the slot
        given back, for models, excluded), and the CPU time its thread spent meanwhile (waits for
        the GIL excluded: a busy loop makes a quick method slow in wall time only)."""
        self._semaphore.acquire()
        try:
            self._local.held, self._local.waited = True, 0.0
            started, cpu = self.clock.monotonic(), self.clock.thread_time()
            try:
                result = func()
            finally:
                self._local.held = False
            wall = self.clock.monotonic() - started - self._local.waited
            return result, wall, self.clock.thread_time() - cpu
        finally:
            self._release_from_thread()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Give the current thread's slot back for the duration of a wait."""
        if not getattr(self._local, "held", False):
            yield
            return
        self._local.held = False
        self._release_from_thread()
        started = self.clock.monotonic()
        try:
            yield
        finally:
            self._semaphore.acquire()
            self._local.held = True
            self._local.waited = getattr(self._local, "waited", 0.0) + self.clock.monotonic() - started

    @contextmanager
    def untimed(self) -> Iterator[None]:
        """A wait that is not the method's own work (the loop handing over a model already in
        memory), the slot kept: left out of the time that decides whether the method runs
        inline, as a wait with the slot given back is."""
        if not getattr(self._local, "held", False):
            yield
            return
        started = self.clock.monotonic()
        try:
            yield
        finally:
            self._local.waited = getattr(self._local, "waited", 0.0) + self.clock.monotonic() - started
