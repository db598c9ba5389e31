"""What the ingress actor keeps across its restarts, in Ray's key-value store (it lives in the
GCS, as long as the cluster): its gRPC port, and its routes (which replicas serve which API).

Ray restarts the actor when it dies (``max_restarts=-1``) with its first arguments, and its
HAProxy dies with it. Without the routes, a restarted balancer answers 404 for every API until
each replica's next heartbeat (up to ``HEARTBEAT`` seconds); with them, it routes at once. A kept
route is a hint, as any registration is: its replicas must keep registering, or they are
dropped after ``STALE`` seconds, and HAProxy's health checks take a dead one out before that.
Routes are read back only by a restarted actor (a new ingress starts empty) and forgotten when
the ingress stops.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Kept", "KeptRoute", "RayKv", "Store", "decode_routes", "encode_routes"]

NAMESPACE = "cortex_ray_ingress"
_GRPC_PORT = b"grpc_port"
_ROUTES = b"routes"


@dataclass(frozen=True)
class KeptRoute:
    """One API's route as the balancer knew it: its shape and its replicas' ports."""

    endpoint: str
    model_routing: tuple[str, str] | None
    max_body: int
    grpc_service: str | None
    servers: Mapping[str, tuple[str, int, int, int]]
    """replica id -> (host, port, health check port, gRPC port)."""


def encode_routes(routes: Mapping[str, KeptRoute], retired: set[str]) -> bytes:
    return json.dumps(
        {
            "apis": {
                name: {
                    "endpoint": r.endpoint,
                    "model_routing": list(r.model_routing) if r.model_routing else None,
                    "max_body": r.max_body,
                    "grpc_service": r.grpc_service,
                    "servers": {replica: list(ports) for replica, ports in r.servers.items()},
                }
                for name, r in routes.items()
            },
            "retired": sorted(retired),
        }
    ).encode()


def decode_routes(data: bytes | None) -> tuple[dict[str, KeptRoute], set[str]]:
    """The routes and retired replicas kept; nothing when none were, or what was kept cannot be
    read (a restart then waits for the heartbeats, as before)."""
    if not data:
        return {}, set()
    try:
        kept = json.loads(data)
        routes = {
            name: KeptRoute(
                str(api["endpoint"]),
                _pair(api["model_routing"]),
                int(api["max_body"]),
                str(api["grpc_service"]) if api["grpc_service"] else None,
                {
                    str(replica): (str(host), int(port), int(check), int(grpc))
                    for replica, (host, port, check, grpc) in api["servers"].items()
                },
            )
            for name, api in kept["apis"].items()
        }
        return routes, {str(r) for r in kept["retired"]}
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return {}, set()


def _pair(value: Any) -> tuple[str, str] | None:
    if not value:
        return None
    first, second = value
    return str(first), str(second)


class Store(Protocol):
    """Where the ingress keeps things (Ray's key-value store; a dict in tests)."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class RayKv:
    """:class:`Store` on Ray's internal key-value store (nothing kept without a Ray worker)."""

    def _kv(self) -> Any:
        from ray.experimental import internal_kv

        return internal_kv if internal_kv._internal_kv_initialized() else None

    def get(self, key: bytes) -> bytes | None:
        kv = self._kv()
        return kv._internal_kv_get(key, namespace=NAMESPACE) if kv is not None else None

    def put(self, key: bytes, value: bytes) -> None:
        kv = self._kv()
        if kv is not None:
            kv._internal_kv_put(key, value, overwrite=True, namespace=NAMESPACE)

    def delete(self, key: bytes) -> None:
        kv = self._kv()
        if kv is not None:
            kv._internal_kv_del(key, namespace=NAMESPACE)


class Kept:
    """The ingress's kept state in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def grpc_port(self) -> int | None:
        kept = self.store.get(_GRPC_PORT)
        return int(kept) if kept else None

    def keep_grpc_port(self, port: int) -> None:
        self.store.put(_GRPC_PORT, str(port).encode())

    def routes(self) -> tuple[dict[str, KeptRoute], set[str]]:
        return decode_routes(self.store.get(_ROUTES))

    def keep_routes(self, routes: Mapping[str, KeptRoute], retired: set[str]) -> None:
        self.store.put(_ROUTES, encode_routes(routes, retired))

    def forget_routes(self) -> None:
        self.store.delete(_ROUTES)

    def forget(self) -> None:
        self.store.delete(_GRPC_PORT)
        self.forget_routes()
