"""``model_client``: what the user's handler calls to get a model.

``get_model(model_name=None, model_version="latest")`` returns whatever the
handler's ``load_model(model_path)`` returned, with Cortex's meaning of names
and versions. It may be called from a sync handler (it runs in a worker
thread and waits for the replica's event loop) or, for a model already in
memory, from the event loop itself; async handlers use ``get_model_async``.
The versions a request used are kept per request (``served_versions``) and
returned to the client in the ``X-Cortex-Model-Version`` header, and the objects it was
given are held for it (``holder_var``: never evicted for another request's load) until
its handler returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from typing import Any

from cortex_ray.cache import Holder, LoadedModel, ModelCache
from cortex_ray.errors import CortexRayError
from cortex_ray.replica.invoke import await_in_handler, in_inline_handler
from cortex_ray.replica.slots import HandlerSlots

__all__ = ["ModelClient", "holder_var", "served_versions_var", "warming_var"]

served_versions_var: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "cortex_ray_served_versions", default=None
)
holder_var: contextvars.ContextVar[Holder | None] = contextvars.ContextVar("cortex_ray_holder", default=None)
"""The running request's holds on model objects (``None`` outside a request)."""
warming_var: contextvars.ContextVar[LoadedModel | None] = contextvars.ContextVar(
    "cortex_ray_warming", default=None
)
"""The version a running warm-up request warms (:mod:`cortex_ray.replica.warmup`): asked for by
its name (or none) at "latest" or its version, it is what ``get_model`` returns."""


class ModelClient:
    def __init__(
        self, cache: ModelCache, loop: asyncio.AbstractEventLoop, slots: HandlerSlots | None = None
    ) -> None:
        self._cache = cache
        self._loop = loop
        self._slots = slots
        self._loop_thread = threading.get_ident()

    def get_model(self, model_name: str | None = None, model_version: str | int = "latest") -> Any:
        """The model object for ``model_name`` at ``model_version`` (default: the highest)."""
        return self.get_model_and_version(model_name, model_version)[0]

    def get_model_and_version(
        self, model_name: str | None = None, model_version: str | int = "latest"
    ) -> tuple[Any, int]:
        """Like :meth:`get_model`, plus the version that was actually used."""
        held = _warming(model_name, model_version)
        if held is not None:
            _record(held.name, held.version)
            return held.model, held.version
        holder = _holder()
        if threading.get_ident() == self._loop_thread:
            held = self._cache.try_get(model_name, model_version, holder)  # as get_model_async
            if held is None and in_inline_handler():  # a sync handler running inline: suspend it
                held = await_in_handler(self._cache.get(model_name, model_version, holder))
            if held is None:
                raise CortexRayError(
                    f"model {model_name!r} is not loaded yet and get_model() was called on the event "
                    "loop: use `await model_client.get_model_async(...)` in async handlers"
                )
        else:  # (the cache holds it for the request on its loop)
            getting = self._cache.get(model_name, model_version, holder)
            future = asyncio.run_coroutine_threadsafe(getting, self._loop)
            try:
                # in memory: no need to give the slot back; the loop's answer is not the method's
                # time (a busy loop must not keep a quick method from running inline)
                with self._slots.untimed() if self._slots is not None else contextlib.nullcontext():
                    held = future.result(timeout=0.005)
            except concurrent.futures.TimeoutError:
                if self._slots is None:
                    held = future.result()
                else:
                    with self._slots.released():
                        held = future.result()
        _record(held.name, held.version)
        return held.model, held.version

    async def get_model_async(
        self, model_name: str | None = None, model_version: str | int = "latest"
    ) -> Any:
        held = _warming(model_name, model_version) or await self._cache.get(
            model_name, model_version, _holder()
        )
        _record(held.name, held.version)
        return held.model

    @property
    def served_versions(self) -> dict[str, int]:
        """The model versions the current request has used so far, by model name."""
        return dict(served_versions_var.get() or {})

    @property
    def models(self) -> dict[str, list[int]]:
        """Every servable model and its versions, as this replica knows them now."""
        return {name: list(m.valid_versions) for name, m in self._cache.tree.models.items()}


def _holder() -> Holder | None:
    """The running request's holder; in a warm-up request, one whose loads never wait."""
    holder = holder_var.get()
    if holder is not None and warming_var.get() is not None:
        holder.patient = False
    return holder


def _warming(name: str | None, version: str | int | None) -> LoadedModel | None:
    warming = warming_var.get()
    if warming is None or name not in (None, warming.name):
        return None
    if version in (None, "latest") or str(version).strip() == str(warming.version):
        return warming
    return None


def _record(name: str, version: int) -> None:
    used = served_versions_var.get()
    if used is not None:
        used[name] = version
