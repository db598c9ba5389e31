"""Running the user's handler methods, with as little as possible in between.

* ``async def`` methods run on the core loop.
* Sync methods, when the API runs one handler thread (``threads_per_process: 1``, the
  default), run inline on the core loop, inside a greenlet: no thread hop, no handoff of
  the GIL. When such a method calls ``get_model`` for a model that must be loaded, the
  greenlet is suspended while the load is awaited (the loop keeps serving other requests)
  and resumed with the model, so a cold model still never blocks the loop.
* Sync methods of an API with more handler threads run in a thread pool, at most
  ``threads_per_process`` at once (a request waiting for a cold model gives its slot back).

Which arguments a method takes is worked out once per method, not per request.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import greenlet

from cortex_ray.endpoint.arguments import Method
from cortex_ray.replica.slots import HandlerSlots

__all__ = ["Invoker", "await_in_handler", "in_inline_handler"]


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


class Invoker:
    def __init__(self, threads: int, max_waiting: int, name: str, inline: bool = True) -> None:
        self.inline = inline and threads == 1
        self._idle: list[_HandlerGreenlet] = []
        self.slots = HandlerSlots(threads)
        # threads waiting for a cold model give their slot back but keep their thread: allow as
        # many threads as requests a replica takes (created only when needed)
        self.pool = ThreadPoolExecutor(
            max_workers=threads + max_waiting, thread_name_prefix=f"{name}-handler"
        )

    async def __call__(self, method: Method, kwargs: dict[str, Any]) -> Any:
        """Run one call; an exception of the user's code is raised as it is."""
        if method.is_async:
            return await method.func(**kwargs)
        if self.inline:
            return await self._inline(method.func, kwargs)
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, self.slots.run, functools.partial(method.func, **kwargs))
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def _inline(self, func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        g = self._idle.pop() if self._idle else None
        if g is None or g.dead:  # a fresh one: run it up to its first wait for work
            g = _HandlerGreenlet()
            g.switch()
        g.gr_context = contextvars.copy_context()
        value = g.switch((func, kwargs))
        while isinstance(value, _Await):  # the handler waits for a model: the loop goes on
            try:
                result = await value.awaitable
            except BaseException as exc:
                value = g.throw(exc)
            else:
                value = g.switch(result)
        self._idle.append(g)
        assert isinstance(value, _Finished)
        if value.error is not None:
            raise value.error
        return value.value

    async def run_sync(self, func: Callable[[], Any]) -> Any:
        """Run a plain sync callable (a handler's callback) in the handler threads' pool."""
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.pool, ctx.run, func)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
