"""Server-side batching (Cortex's ``server_side_batching: {max_batch_size, batch_interval}``):
concurrent ``handle_post`` requests are grouped, and the handler is called once per group with
a list of payloads, returning a list of results in the same order.

A group is called as soon as it holds ``max_batch_size`` requests, or ``batch_interval`` after
its first request arrived, whichever comes first. Every argument the method asks for comes as a
list, one item per request, in the same order (``payload``; also ``query_params`` and
``headers`` if it asks for them). Each request gets its own item of the result (an item may be
a ``(result, callback)`` pair). A handler that raises fails every request of its group with
that error; one that does not return a list of the group's length fails them with a 500 that
says so. A request cancelled while it waits (its client left) leaves the group before it runs.
Works the same on the fast path, on Serve's proxy and through a Serve handle: it sits between
the endpoint and the core (:class:`BatchingCore`). The model versions a group used are reported
for each of its requests (``X-Cortex-Model-Version``, request metrics). A warm-up request
(a version's ``warmup.json``) is never grouped with clients' requests: it is called alone.
When the replica stops, :meth:`Batcher.close` calls what waits at once (no request waits out
the interval, none is dropped), waits for the groups running, and refuses later calls with a 503.
A group still running at the timeout is answered 503; a handler already running in a thread
runs on (Python cannot stop it), and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cortex_ray.clock import SYSTEM, Clock
from cortex_ray.endpoint.arguments import Method
from cortex_ray.endpoint.endpoint import HandlerCore
from cortex_ray.errors import ShuttingDownError, UserHandlerError

__all__ = ["Batcher", "BatchingCore"]


def _answer() -> asyncio.Future[Any]:
    future = asyncio.get_running_loop().create_future()
    # (retrieved even when its request left: no "exception was never retrieved" noise)
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


@dataclass(eq=False)
class _Waiting:
    kwargs: dict[str, Any]
    used: dict[str, Any]
    answer: asyncio.Future[Any] = field(default_factory=_answer)


class Batcher:
    """Groups the calls of one method; ``call(method, kwargs, used)`` runs one group."""

    def __init__(
        self,
        call: Callable[[Method, dict[str, Any], dict[str, Any]], Any],
        max_batch_size: int,
        batch_interval: float,
        clock: Clock = SYSTEM,
    ) -> None:
        self._call = call
        self.max_batch_size = max_batch_size
        self.batch_interval = batch_interval
        self._clock = clock
        self._waiting: list[_Waiting] = []
        self._method: Method | None = None
        self._timer: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.sizes: list[int] = []
        """The size of every group called so far (the last 1000)."""
        self._closed = False

    async def __call__(self, method: Method, kwargs: dict[str, Any], used: dict[str, Any]) -> Any:
        if self._closed:
            raise ShuttingDownError("the replica is shutting down; retry the request")
        self._method = method
        item = _Waiting(kwargs, used)
        self._waiting.append(item)
        if len(self._waiting) >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = _spawn(self._flush_later())
        try:
            return await asyncio.shield(item.answer)
        except asyncio.CancelledError:
            if item in self._waiting:  # not called yet: it leaves its group
                self._waiting.remove(item)
            raise

    async def close(self, timeout: float | None = None) -> None:
        """Stop: the requests waiting are called now, in groups as usual; returns once every
        group has answered (or after ``timeout`` seconds, the groups still running cancelled)."""
        self._closed = True
        while self._waiting:
            self._flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        running = set(self._running)
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def _flush_later(self) -> None:
        await self._clock.sleep(self.batch_interval)
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group, self._waiting = self._waiting[: self.max_batch_size], self._waiting[self.max_batch_size :]
        if self._waiting and not self._closed:  # (more than a group came at once: the rest waits for its own)
            self._timer = _spawn(self._flush_later())
        if group:
            task = _spawn(self._run(group))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, group: list[_Waiting]) -> None:
        assert self._method is not None
        self.sizes = [*self.sizes[-999:], len(group)]
        kwargs = {name: [item.kwargs[name] for item in group] for name in group[0].kwargs}
        used: dict[str, Any] = {}
        try:
            results = await self._call(self._method, kwargs, used)
            if not isinstance(results, list) or len(results) != len(group):
                got = f"a {type(results).__name__}" + (
                    f" of {len(results)}" if isinstance(results, list) else ""
                )
                raise UserHandlerError(
                    f"with server_side_batching, handle_post gets a list of {len(group)} payloads and "
                    f"must return a list of {len(group)} results, one per payload in the same order; "
                    f"it returned {got}",
                    type="BatchSizeMismatch",
                )
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and self._closed:
                exc = ShuttingDownError("the replica stopped before this request's batch finished")
            for item in group:
                item.used.update(used)
                if not item.answer.done():
                    item.answer.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for item, result in zip(group, results, strict=True):
            item.used.update(used)
            if not item.answer.done():
                item.answer.set_result(result)


def _spawn(coro: Any) -> asyncio.Task[Any]:
    # an empty context: a group is nobody's request (the one that opened it may be a warm-up's)
    task: asyncio.Task[Any] = contextvars.Context().run(asyncio.ensure_future, coro)
    return task


class BatchingCore:
    """An API's core whose ``handle_post`` calls go through a :class:`Batcher`; a call for which
    ``alone()`` says so (a warm-up request) is called by itself, as a group of one."""

    def __init__(
        self,
        core: HandlerCore,
        max_batch_size: int,
        batch_interval: float,
        clock: Clock = SYSTEM,
        alone: Callable[[], bool] = lambda: False,
    ) -> None:
        self._core = core
        self._alone = alone
        self.batcher = Batcher(core.call_handler, max_batch_size, batch_interval, clock)

    @property
    def methods(self) -> Mapping[str, Method]:
        return self._core.methods

    async def call_handler(self, method: Method, kwargs: dict[str, Any], used: dict[str, Any]) -> Any:
        if method is self._core.methods.get("POST"):
            if self._alone():
                results = await self._core.call_handler(method, {k: [v] for k, v in kwargs.items()}, used)
                if not isinstance(results, list) or len(results) != 1:
                    raise UserHandlerError(
                        "with server_side_batching, handle_post gets a list of 1 payload and must return a "
                        f"list of 1 result; it returned a {type(results).__name__}",
                        type="BatchSizeMismatch",
                    )
                return results[0]
            return await self.batcher(method, kwargs, used)
        return await self._core.call_handler(method, kwargs, used)

    async def run_callback(self, callback: Callable[[], Any]) -> None:
        await self._core.run_callback(callback)

    async def close(self, timeout: float | None = None) -> None:
        await self.batcher.close(timeout)
