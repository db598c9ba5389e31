"""The event loop an API's serving core runs on: its own thread, uvloop when installed.

A Serve replica runs user code on an event loop of Serve's; cortex-ray gives the API's
core (handler, model cache, reloader subscription, and on the fast path the HTTP
server) a loop of its own in a dedicated thread, so that a request served without
Serve's proxy never crosses a thread, and a blocking handler never stalls Serve's
health checks and metrics. Calls from Serve's side (the proxy path, handle calls) hop
onto it with :meth:`CoreLoop.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["CoreLoop", "new_event_loop"]

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop comes with ray[serve]; plain asyncio works too, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class CoreLoop:
    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the core loop and await it from another loop."""
        return await asyncio.wrap_future(self.submit(coro))

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.loop.is_running()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
