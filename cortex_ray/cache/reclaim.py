"""Give the memory of unloaded models back without stalling the replica's requests.

When the cache drops a model object, requests still using it finish with it (Python's
reference counting frees it when the last one ends). What reference counting cannot free
is an object caught in reference cycles (TensorFlow and many framework objects are), which
only a full garbage collection finds, and a full collection walks every live object: with
a few million of them it takes a good fraction of a second, holding the GIL.

So the reclaimer, instead of collecting at every unload on the event loop:

* waits ``delay`` seconds after an unload (requests finish, more unloads come: one pass
  for a burst of them);
* skips the collection when every dropped object is already gone (freed by reference
  counting, the common case for scikit-learn, ONNX Runtime or plain PyTorch modules);
* otherwise runs one ``gc.collect()`` in a worker thread, at most once per
  ``min_interval`` seconds, and then ``torch.cuda.empty_cache()`` when PyTorch uses a GPU;
* and, whatever the objects dropped say, once the bytes unloaded since the last collection
  reach ``backlog()`` (the cache passes what it holds in memory, at least ``BACKLOG_FLOOR``),
  sooner than ``min_interval`` if need be: a wrapper freed by reference counting can hold a
  model that is not (our TensorFlow ``SavedModel`` holds TensorFlow's loaded object, which is
  cyclic), and its memory waited for Python's own collector: a replica loading and unloading two
  8 MiB SavedModels a thousand times grew by 46%. Unloaded garbage is so bounded by about what
  the cache holds, at the cost of a collection per that many bytes unloaded.

The collection itself still holds the GIL while it runs (CPython's collector does): what
changes is how often it runs (once per burst, never when not needed) and that it never
runs inside a request's turn on the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

from cortex_ray.clock import SYSTEM, Clock

__all__ = ["BACKLOG_FLOOR", "Reclaimer"]

BACKLOG_FLOOR = 128 * 1024 * 1024
"""Unloaded bytes that never make a collection due by themselves (small models: collections
stay rare)."""

log = logging.getLogger("cortex_ray.cache")


class Reclaimer:
    def __init__(
        self,
        delay: float = 1.0,
        min_interval: float = 5.0,
        clock: Clock = SYSTEM,
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self.delay = delay
        self.clock = clock
        self.min_interval = min_interval
        self.backlog = backlog or (lambda: BACKLOG_FLOOR)
        """Bytes of unloaded objects that may wait for a collection (see the module's docstring)."""
        self._pending: list[weakref.ref[Any] | None] = []
        self._task: asyncio.Task[None] | None = None
        self._last_collect = -float("inf")
        self._uncollected = 0
        """Bytes released since the last collection."""
        self.released = 0
        self.freed_by_refcount = 0
        self.collections = 0
        self.urgent = 0
        """Collections run before ``min_interval``: the bytes released since the last were over
        the backlog."""
        self.collect_seconds = 0.0

    def release(self, obj: Any, size: int = 0) -> None:
        """The cache dropped its reference to ``obj`` (called on the event loop), which held
        ``size`` bytes."""
        self.released += 1
        self._uncollected += size
        try:
            self._pending.append(weakref.ref(obj))
        except TypeError:  # not weak-referenceable (a dict, a tuple...): cannot tell, collect
            self._pending.append(None)
        del obj
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self._run())
            except RuntimeError:  # no loop (shutdown): nothing to stall
                self._pending.clear()
                gc.collect()

    async def _run(self) -> None:
        while self._pending:
            await self.clock.sleep(self.delay)  # (requests using them finish first)
            pending, self._pending = self._pending, []
            alive = [ref for ref in pending if ref is None or ref() is not None]
            self.freed_by_refcount += len(pending) - len(alive)
            due = self._uncollected >= self.backlog()
            if alive or due:
                wait = self._last_collect + self.min_interval - self.clock.monotonic()
                while wait > 0 and not due:  # (looking again as more is released meanwhile)
                    await self.clock.sleep(min(wait, self.delay))
                    due = self._uncollected >= self.backlog()
                    wait = self._last_collect + self.min_interval - self.clock.monotonic()
                self.urgent += due and wait > 0
                self._uncollected = 0  # (here, on the loop, where releases add to it)
                await asyncio.to_thread(self._collect)
            if "torch" in sys.modules:
                await asyncio.to_thread(_empty_gpu_cache)

    def _collect(self) -> None:
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        self._last_collect = self.clock.monotonic()
        self.collections += 1
        self.collect_seconds += took
        log.info("reclaimed unloaded models: gc found %d objects in %.3fs", found, took)

    def stats(self) -> dict[str, Any]:
        return {
            "released": self.released,
            "freed_by_refcount": self.freed_by_refcount,
            "collections": self.collections,
            "urgent_collections": self.urgent,
            "collect_seconds": round(self.collect_seconds, 3),
        }

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _empty_gpu_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "cuda", None) is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
