"""cortex-ray's part of Serve's gRPC proxy: every gRPC API's service, routed by its path.

Serve's proxy takes ``grpc_servicer_functions``, import paths of the ``add_..._to_server``
functions that ``protoc`` generates, and routes each call by the ``application`` metadata the
client sends. cortex-ray gives it one function, :data:`SERVICER_FUNCTION`, whatever the APIs:
it adds a handler (:class:`ApiServices`) that answers any ``/package.Service/Method`` that an
API published (:mod:`cortex_ray.rpc.routes`), as that RPC's kind (unary or server-streaming), and
names the API's application when the client did not. So the proxy needs none of the APIs'
generated code (the request's bytes go to the replica, which parses them), a gRPC API deployed
after Serve started is served at once, and a client needs only the ``.proto``, as with Cortex.

This relies on the proxy server of the pinned Ray Serve (its ``_override_method_handler``,
which makes a method handler forward to the replicas): a Ray without it fails at the proxy's
start, with that said, rather than serving wrong.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from cortex_ray.rpc.routes import ServiceRoute, lookup

__all__ = ["SERVICER_FUNCTION", "ApiServices", "add_services"]

SERVICER_FUNCTION = "cortex_ray.rpc.proxy.add_services"
"""What a Serve config's ``grpc_options.grpc_servicer_functions`` lists for cortex-ray."""

FOUND_TTL_S = 5.0
"""How long the proxy trusts a route it read before reading it again (off its loop): an API
redeployed or deleted is seen within this."""
MISS_LOOKUPS_PER_S = 20.0
"""Calls to a service the proxy does not know are looked up in the store (a GCS read, on the
proxy's loop) at most this often, whatever names clients send; beyond, they are unknown."""

Override = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


def add_services(servicer: Any, server: Any) -> None:
    """Serve's gRPC proxy calls this once at its start (``servicer`` is a stand-in it passes)."""
    override = getattr(server, "_override_method_handler", None)
    if override is None:
        raise RuntimeError(
            "cortex-ray's gRPC routing needs Ray Serve's gRPC proxy server as of the Ray version "
            "cortex-ray pins (its _override_method_handler is missing)"
        )
    server.add_generic_rpc_handlers((ApiServices(override),))


class ApiServices(grpc.GenericRpcHandler):
    """Answers the methods of every published gRPC API (see the module's docstring)."""

    def __init__(
        self,
        override: Override,
        find: Callable[[str], ServiceRoute | None] = lookup,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._method_handlers: dict[str, grpc.RpcMethodHandler] = {}
        """(Serve's server reads and replaces this dict when the handler is added: it is empty,
        the methods are found per call.)"""
        self._override = override
        self._find = find
        self._clock = clock
        self._spawn = spawn or _in_thread
        self._routes: dict[str, tuple[float, ServiceRoute]] = {}
        """The published services this proxy has seen (when to read each again, its route)."""
        self._handlers: dict[str, tuple[ServiceRoute, grpc.RpcMethodHandler]] = {}
        self._budget = MISS_LOOKUPS_PER_S
        self._budget_at = clock()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method  # "/package.Service/Method"
        if isinstance(method, bytes):
            method = method.decode()
        service, _, name = method.lstrip("/").partition("/")
        if not name or service.startswith("grpc."):  # (reflection, health: other handlers')
            return None
        route = self._route(service)
        if route is None or name not in route.methods:
            return None
        known = self._handlers.get(method)
        if known is not None and known[0] == route:
            return known[1]
        handler = self._handler(method, route)
        self._handlers[method] = (route, handler)
        return handler

    def _route(self, service: str) -> ServiceRoute | None:
        """A known service's route at once (read again off the loop when stale); an unknown one
        looked up while the lookup budget lasts."""
        now = self._clock()
        known = self._routes.get(service)
        if known is not None:
            if known[0] <= now:
                self._routes[service] = (now + FOUND_TTL_S, known[1])  # (one refresh at a time)
                self._spawn(lambda: self._refresh(service))
            return known[1]
        self._budget = min(MISS_LOOKUPS_PER_S, self._budget + (now - self._budget_at) * MISS_LOOKUPS_PER_S)
        self._budget_at = now
        if self._budget < 1:
            return None
        self._budget -= 1
        try:
            route = self._find(service)
        except Exception:  # the store is unreachable: unknown for now
            return None
        if route is not None:
            self._routes[service] = (now + FOUND_TTL_S, route)
        return route

    def _refresh(self, service: str) -> None:
        """Read a known service's route again (off the proxy's loop): a deleted API's is dropped; an
        unreachable store keeps the one known."""
        try:
            route = self._find(service)
        except Exception:
            return
        if route is None:
            self._routes.pop(service, None)
        else:
            self._routes[service] = (self._clock() + FOUND_TTL_S, route)

    def _handler(self, method: str, route: ServiceRoute) -> grpc.RpcMethodHandler:
        name = method.rsplit("/", 1)[1]
        app = route.app
        if route.methods[name] == "stream":
            served = self._override(method, grpc.unary_stream_rpc_method_handler(_never))
            forward_stream = served.unary_stream

            async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
                async for message in forward_stream(request, Addressed(context, app)):
                    yield message

            return served._replace(unary_stream=stream)
        served = self._override(method, grpc.unary_unary_rpc_method_handler(_never))
        forward = served.unary_unary

        async def unary(request: bytes, context: Any) -> bytes:
            return await forward(request, Addressed(context, app))

        return served._replace(unary_unary=unary)


class Addressed:
    """A call's context that names ``app`` as its ``application`` when the client named none (what
    Serve's proxy routes by); everything else is the call's own."""

    def __init__(self, context: Any, app: str) -> None:
        self._context = context
        self._app = app

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        given = tuple(self._context.invocation_metadata() or ())
        if any(key == "application" for key, _ in given):
            return given
        return (*given, ("application", self._app))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _in_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="cortex-ray-grpc-routes", daemon=True).start()


def _never(request: Any, context: Any) -> Any:
    """The behaviour of the method handler given to Serve's proxy, which replaces it with its own
    (forwarding to the replicas): never called."""
    raise RuntimeError("Serve's gRPC proxy did not replace this method's behaviour")
