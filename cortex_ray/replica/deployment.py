"""The classes Serve deploys for an API: one wrapper, whatever runs inside.

Serve creates, scales, health-checks and places a :class:`Replica`; the core it wraps (the
API's handler and models, or an AsyncAPI's gateway) runs on a loop of its own in the same
process (:class:`~cortex_ray.replica.loop.CoreLoop`). The wrapper gives every core the same
life: its answer to Serve's proxy path, cortex-ray's fast path (its own HTTP server,
registered with the balancer) when the ingress is ``fast``, health checks, the load it
reports to Serve's autoscaler, and a graceful stop (leave the balancer, answer what runs,
close the core, free its files).

:class:`ApiReplica` is the deployment of a RealtimeAPI (and the base of an AsyncAPI's worker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from cortex_ray.endpoint import Incoming, Outgoing, error_outgoing
from cortex_ray.errors import AtCapacityError
from cortex_ray.project import ProjectRef
from cortex_ray.replica.affinity import Affinity
from cortex_ray.replica.core import ApiCore
from cortex_ray.replica.fast_path import FastIngress, start_fast_path, stop_fast_path
from cortex_ray.replica.loop import CoreLoop
from cortex_ray.replica.proxy_path import from_starlette, to_starlette
from cortex_ray.spec import ApiSpec

__all__ = ["ApiReplica", "Core", "Replica"]

log = logging.getLogger("cortex_ray.replica")
CLOSE_TIMEOUT_S = 5.0
Answer = Callable[[Incoming], Coroutine[Any, Any, Outgoing]]
"""What answers HTTP for a core (an :class:`~cortex_ray.endpoint.Endpoint`, a gateway's routes)."""


class Core(Protocol):
    """What a replica wraps: started and closed on its loop; answers HTTP with ``answer``."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def remove_files(self) -> None: ...


class Replica:
    """A core on its own loop, served on both ingress paths (see the module's docstring)."""

    api: ApiSpec
    loop: CoreLoop
    core: Core
    answer: Answer
    fast: FastIngress | None = None

    async def _start(
        self,
        api: ApiSpec,
        core: Core,
        answer: Answer,
        ingress: str,
        limit: int | None = None,
    ) -> None:
        """Start ``core`` on a new loop, then (``ingress="fast"``) serve ``answer`` on the fast
        path, taking at most ``limit`` requests at once (default: ``max_replica_concurrency``)."""
        self.api = api
        self.loop = CoreLoop(f"{api.name}-core")
        self.core = core
        self.answer = answer
        await self.loop.run(core.start())
        if ingress == "fast":
            self.fast = await start_fast_path(self.loop, api, answer, limit)
            self.record_autoscaling_stats = self._autoscaling_stats  # Serve looks for it after init

    async def __call__(self, request: Request) -> Response:
        """The proxy path: Serve's proxy routed a request here."""
        incoming = await from_starlette(request)
        out = await self.loop.run(self.answer(incoming))
        return to_starlette(out, self._run_after)

    async def _run_after(self, after: Callable[[], Coroutine[Any, Any, None]]) -> None:
        await self.loop.run(after())

    def check_health(self) -> None:
        """Serve calls this periodically; raising makes it replace the replica."""
        if not self.loop.alive:
            raise RuntimeError(f"api {self.api.name}: the replica's loop stopped")

    async def _autoscaling_stats(self) -> dict[str, float]:
        assert self.fast is not None
        return self.fast.autoscaling_stats()

    def __del__(self) -> None:
        """Serve's graceful stop: leave the balancer, finish what runs, close the core, free its files."""
        loop, core = getattr(self, "loop", None), getattr(self, "core", None)
        if self.fast is not None and loop is not None:
            stop_fast_path(self.fast, loop)
        if loop is not None and core is not None and loop.alive:
            try:
                loop.submit(core.close()).result(CLOSE_TIMEOUT_S)
            except Exception as exc:  # stopping anyway
                log.warning("api %s: the core did not close cleanly: %s", self.api.name, exc)
        if loop is not None:
            loop.stop()
        if core is not None:
            core.remove_files()


class ApiReplica(Replica):
    """A RealtimeAPI's replica: the handler and its models (:class:`ApiCore`)."""

    core: ApiCore

    async def __init__(  # type: ignore[misc]  # (Serve awaits async constructors)
        self,
        api: ApiSpec,
        info_details: bool = False,
        ingress: str = "proxy",
        project: ProjectRef | None = None,
    ) -> None:
        core = ApiCore(api, info_details, project)
        models = api.handler.model_spec
        budget = models.memory_budget if models is not None else None
        counted = budget.amount if budget is not None and budget.unit == "versions" else None
        self._affinity = Affinity(counted) if models is not None else None
        self._limit = api.autoscaling.max_replica_concurrency
        self._proxied = 0
        """Requests of Serve's proxy path in this replica now (counted on Serve's loop, which a
        handler never holds: the excess is refused at once, whatever the handler is doing)."""
        await self._start(api, core, core.endpoint, ingress)

    async def __call__(self, request: Request) -> Response:
        if self._proxied >= self._limit:  # Cortex's rule: above max_replica_concurrency, a 503 at once
            full = AtCapacityError(f"this replica is at its max_replica_concurrency ({self._limit})")
            return to_starlette(error_outgoing(full))
        self._proxied += 1
        try:
            if self._affinity is not None and self.core.cache is not None:
                await self._affinity.note(self.core.cache.tree.models)  # Serve's router reads it
            return await super().__call__(request)
        finally:
            self._proxied -= 1

    async def call(
        self,
        method: str = "post",
        payload: Any = None,
        query_params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Call the handler without HTTP (through a Serve handle, e.g. from a notebook)."""
        return await self.loop.run(self.core.endpoint.call(method, payload, query_params, headers))

    async def info(self, details: bool = True, cluster: bool = False) -> dict[str, Any]:
        return await self.loop.run(self.core.info(details, cluster))
