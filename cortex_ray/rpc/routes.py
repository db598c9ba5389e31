"""Which Serve application answers a gRPC service, kept in Ray's key-value store (the GCS).

A gRPC API's replicas publish their service when they start (:func:`publish`): its full name
(``package.Service``), the application (the API) and each RPC's kind. Serve's gRPC proxy reads
it (:func:`lookup`, through :mod:`cortex_ray.rpc.proxy`) to route a call by the path it names,
as Cortex did: a client needs no ``application`` metadata, only the ``.proto``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cortex_ray.rpc.proto import ProtoService, RpcKind

__all__ = ["NAMESPACE", "ServiceRoute", "lookup", "publish", "route_of", "unpublish"]

NAMESPACE = "cortex_ray_grpc"


@dataclass(frozen=True)
class ServiceRoute:
    """Where calls to one gRPC service go."""

    service: str
    """``package.Service``."""
    app: str
    """The Serve application (the API's name)."""
    methods: dict[str, RpcKind]

    def to_json(self) -> bytes:
        return json.dumps({"service": self.service, "app": self.app, "methods": self.methods}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ServiceRoute | None:
        try:
            body: Any = json.loads(data)
            methods = {str(k): v for k, v in body["methods"].items() if v in ("unary", "stream")}
            return cls(str(body["service"]), str(body["app"]), methods)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def route_of(app: str, service: ProtoService) -> ServiceRoute:
    return ServiceRoute(service.full_name, app, dict(service.methods))


def publish(route: ServiceRoute) -> None:
    """Say (in the connected Ray) that ``route.app`` answers ``route.service`` (blocking: a GCS
    call)."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(_key(route.service), route.to_json(), overwrite=True, namespace=NAMESPACE)


def unpublish(app: str) -> None:
    """Forget the routes to ``app`` (the API is being deleted; blocking)."""
    from ray.experimental import internal_kv

    if not internal_kv._internal_kv_initialized():
        return
    for key in internal_kv._internal_kv_list(_key(""), namespace=NAMESPACE):
        data = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
        route = ServiceRoute.from_json(data) if data else None
        if route is not None and route.app == app:
            internal_kv._internal_kv_del(key, namespace=NAMESPACE)


def lookup(service: str) -> ServiceRoute | None:
    """The route of ``service`` (``package.Service``), if an API published one (blocking)."""
    from ray.experimental import internal_kv

    if not internal_kv._internal_kv_initialized():
        return None
    data = internal_kv._internal_kv_get(_key(service), namespace=NAMESPACE)
    return ServiceRoute.from_json(data) if data else None


def _key(service: str) -> bytes:
    return f"service:{service}".encode()
