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

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from cortex_ray.endpoint import Incoming, Outgoing, error_outgoing
from cortex_ray.errors import AtCapacityError, UserHandlerError
from cortex_ray.project import ProjectRef
from cortex_ray.replica.affinity import Affinity
from cortex_ray.replica.core import ApiCore
from cortex_ray.replica.fast_path import FastIngress, start_fast_path, stop_fast_path
from cortex_ray.replica.loop import CoreLoop
from cortex_ray.replica.proxy_path import from_starlette, to_starlette
from cortex_ray.replica.rpc import RpcAbort, RpcService, rpc_status
from cortex_ray.replica.rpc_server import RpcServer
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
            self.fast = await start_fast_path(self.loop, api, answer, limit, self._rpc_server())
            self.record_autoscaling_stats = self._autoscaling_stats  # Serve looks for it after init

    def _rpc_server(self) -> RpcServer | None:
        """A gRPC API's server of its own on the fast path (the core has started)."""
        return None

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
        if core.rpc is not None:
            await self._serve_rpcs()

    def _rpc_server(self) -> RpcServer | None:
        core, api = self.core, self.api
        if core.rpc is None:
            return None
        self._check_rpc_names(core.rpc)
        return RpcServer(core.rpc, core.call_handler, api.networking.max_body_size)

    def _at_capacity(self) -> AtCapacityError | None:
        """Cortex's rule: above max_replica_concurrency, a 503 at once."""
        if self._proxied < self._limit:
            return None
        return AtCapacityError(f"this replica is at its max_replica_concurrency ({self._limit})")

    async def __call__(self, request: Request) -> Response:
        full = self._at_capacity()
        if full is not None:
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

    # --- gRPC (Serve's gRPC proxy calls the method named as the RPC) -----------------

    async def _serve_rpcs(self) -> None:
        """A method per RPC of the API's service on this replica, and the service's route
        published for Serve's gRPC proxy (:mod:`cortex_ray.rpc.proxy`)."""
        from cortex_ray.rpc.routes import publish, route_of

        rpc = self.core.rpc
        assert rpc is not None
        self._check_rpc_names(rpc)
        for name, kind in rpc.service.methods.items():
            setattr(self, name, self._unary_rpc(name) if kind == "unary" else self._stream_rpc(name))
        route = route_of(self.api.name, rpc.service)
        await asyncio.get_running_loop().run_in_executor(None, publish, route)

    def _check_rpc_names(self, rpc: RpcService) -> None:
        """Serve's gRPC proxy calls the replica's method named as the RPC: an RPC named as one of
        the replica's own methods is refused (before the replica takes any call)."""
        for name in rpc.service.methods:
            if name.startswith("_") or hasattr(type(self), name):
                raise UserHandlerError(
                    f"rpc {name} of {rpc.service.full_name} has the name of a method of cortex-ray's "
                    "replica: rename the rpc"
                )

    @contextlib.contextmanager
    def _serving_rpc(self, grpc_context: Any) -> Iterator[None]:
        """One call on Serve's gRPC path: counted against max_replica_concurrency with the HTTP
        requests of this path (refused above it), and its failure's status set on its context."""
        full = self._at_capacity()
        if full is not None:
            _set_status(full, grpc_context)
            raise full
        self._proxied += 1
        try:
            yield
        except Exception as exc:
            _set_status(exc, grpc_context)
            raise
        finally:
            self._proxied -= 1

    def _unary_rpc(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        async def unary(request: bytes, grpc_context: Any = None) -> Any:
            with self._serving_rpc(grpc_context):
                rpc = self.core.rpc
                assert rpc is not None
                return await self.loop.run(rpc.unary(self.core.call_handler, name, request, grpc_context))

        unary.__name__ = name
        return unary

    def _stream_rpc(self, name: str) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: bytes, grpc_context: Any = None) -> AsyncIterator[Any]:
            with self._serving_rpc(grpc_context):
                rpc = self.core.rpc
                assert rpc is not None
                messages = rpc.stream(self.core.call_handler, name, request, grpc_context)
                try:
                    while (message := await self.loop.run(_next(messages))) is not _DONE:
                        yield message
                finally:  # (also when the client went away: the handler's generator is closed)
                    await self.loop.run(messages.aclose())

        stream.__name__ = name
        return stream


_DONE = object()


async def _next(messages: AsyncIterator[Any]) -> Any:
    """The next message of a stream, or ``_DONE`` (run on the core loop)."""
    return await anext(messages, _DONE)


def _set_status(exc: BaseException, context: Any) -> None:
    """Set ``exc``'s gRPC status (:func:`~cortex_ray.replica.rpc.rpc_status`) on the call's
    ``context``: what Serve's proxy answers."""
    if context is None or isinstance(exc, RpcAbort):
        return
    code, details = rpc_status(exc, context)
    context.set_code(code)
    context.set_details(details)
