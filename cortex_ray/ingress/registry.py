"""The fast path's control: which replicas serve which API, and the balancer in front.

One :class:`Registry` per Ray cluster (the ingress actor), a detached named actor on the node where the public
port must listen (the node that started it). Every fast-path replica registers its own
HTTP port with it when it starts, re-registers every ``HEARTBEAT`` seconds, and
deregisters when Serve stops it; a replica whose registrations stop (it died) is dropped
after ``STALE`` seconds, and HAProxy's own health checks take it out within two seconds
before that. Each change rewrites and reloads HAProxy (at most every ``COALESCE``).
Serve still decides how many replicas there are and where they run; this only follows.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from cortex_ray.ingress.balancer import DEFAULT_MAX_BODY, Backend, Balancer, Server, backend_id, server_id
from cortex_ray.ingress.kept import Kept, KeptRoute, RayKv, Store
from cortex_ray.task_events import without_task_events

__all__ = ["HEARTBEAT", "INGRESS_ACTOR", "INGRESS_NAMESPACE", "Registry"]

log = logging.getLogger("cortex_ray.ingress")
INGRESS_ACTOR = "cortex-ray-ingress"
INGRESS_NAMESPACE = "cortex-ray"
HEARTBEAT = 2.0
STALE = 10.0
COALESCE = 0.05


@dataclass
class _Api:
    endpoint: str
    model_routing: tuple[str, str] | None
    max_body: int = DEFAULT_MAX_BODY
    grpc_service: str | None = None
    servers: dict[str, tuple[str, int, int, int, float]] = field(default_factory=dict)
    """replica id -> (host, port, health check port, gRPC port, last registration)."""


def _can_bind(host: str, port: int) -> bool:
    """Whether ``host:port`` is free (checked before HAProxy is told to listen there: a bind that
    fails would fail every later reload too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _restarted() -> bool:
    """Whether this is the ingress actor restarted by Ray (not a new one)."""
    try:
        import ray

        return ray.is_initialized() and bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # (not in an actor)
        return False


class Registry:
    """Plain class; :func:`cortex_ray.ingress.control.start_ingress` runs it as a Ray actor."""

    def __init__(
        self,
        host: str,
        port: int,
        threads: int = 1,
        grpc_port: int | None = None,
        store: Store | None = None,
        restarted: bool | None = None,
    ) -> None:
        workdir = tempfile.mkdtemp(prefix="cortex-ray-ingress-")
        self.kept = Kept(store or RayKv())
        """What survives the actor's restarts (:mod:`cortex_ray.ingress.kept`)."""
        # (an actor restarted by Ray gets its first arguments again: a gRPC port set since is kept)
        self.balancer = Balancer(host, port, workdir, threads, grpc_port or self.kept.grpc_port())
        self.apis: dict[str, _Api] = {}
        self.changes = 0
        self.applied = -1
        self.last_error: str | None = None
        self.retired: set[str] = set()
        """Replicas of deleted APIs: their heartbeats do not bring the API back."""
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._restored: set[str] = set()
        """APIs routed from what was kept, that none of their replicas registered with since."""
        if _restarted() if restarted is None else restarted:
            self._resume()
        else:
            self.kept.forget_routes()  # (an ingress stopped without its stop: its routes are not ours)
        # listen at once: unknown paths get the JSON 404 from the start, kept routes are served
        try:
            self.balancer.apply(self._backends())
        except Exception as exc:  # a kept route HAProxy refuses must not fail every restart
            if not self.apis:
                raise
            log.error("ingress: the routes kept before its restart could not be applied: %s", exc)
            self.apis, self._restored = {}, set()
            self.kept.forget_routes()
            self.balancer.apply([])
        self.applied = self.changes

    def _resume(self) -> None:
        """A restarted actor routes what it routed before (until its replicas stop registering)."""
        routes, self.retired = self.kept.routes()
        now = time.monotonic()
        for name, r in routes.items():
            servers = {replica: (*ports, now) for replica, ports in r.servers.items()}
            self.apis[name] = _Api(r.endpoint, r.model_routing, r.max_body, r.grpc_service, servers)
        self._restored = set(routes)
        if routes:
            log.warning(
                "ingress restarted: routing %d API(s) to the %d replica(s) it knew until they register",
                len(routes),
                sum(len(r.servers) for r in routes.values()),
            )

    # --- replicas ------------------------------------------------------------

    @without_task_events
    async def register(
        self,
        api: str,
        endpoint: str,
        model_routing: tuple[str, str] | None,
        replica: str,
        host: str,
        port: int,
        check_port: int = 0,
        max_body: int = DEFAULT_MAX_BODY,
        grpc: tuple[str, int] | None = None,
    ) -> None:
        """A replica serves ``api`` on ``host:port`` and answers health checks on ``check_port``
        (0: ``port``); a gRPC API's replica also serves its service on a port (``grpc``: the
        service's ``package.Service`` and the port). Called when it starts and every ``HEARTBEAT``."""
        self._start()
        if replica in self.retired:
            return
        self._restored.discard(api)
        entry = self.apis.get(api)
        service, grpc_port = grpc if grpc is not None else (None, 0)
        shape = (endpoint, model_routing, max_body, service)
        if (
            entry is None
            or (entry.endpoint, entry.model_routing, entry.max_body, entry.grpc_service) != shape
        ):
            servers = entry.servers if entry else {}
            entry = self.apis[api] = _Api(endpoint, model_routing, max_body, service, servers)
            self._touch()
        if entry.servers.get(replica, (None, None, None, None, 0))[:4] != (host, port, check_port, grpc_port):
            log.info(
                "api %s: replica %s serves on %s:%d (health on %d%s)",
                api,
                replica,
                host,
                port,
                check_port,
                f", gRPC on {grpc_port}" if grpc_port else "",
            )
            self._touch()
        entry.servers[replica] = (host, port, check_port, grpc_port, time.monotonic())

    async def listen_grpc(self, port: int) -> int:
        """Take gRPC calls on ``port`` from now on, unless a gRPC port is set already (it stays);
        returns the one in use."""
        self._start()
        if self.balancer.grpc_port is None:
            if not _can_bind(self.balancer.host, port):
                raise RuntimeError(
                    f"the fast ingress cannot take gRPC on {self.balancer.host}:{port}: it is in use"
                )
            self.balancer.grpc_port = port
            self.kept.keep_grpc_port(port)
            self._touch()
            await self.wait_applied()
        elif self.balancer.grpc_port != port:
            log.warning("ingress: gRPC stays on port %d (asked for %d)", self.balancer.grpc_port, port)
        return self.balancer.grpc_port

    async def deregister(self, api: str, replica: str, hand_over: float = 0.0) -> None:
        """A replica leaves. The API's last healthy one stays routed up to ``hand_over`` seconds,
        until another has passed a health check: Serve may stop a replica before it starts its
        replacement (a rolling update without surge, a refresh), and the API must not go
        without one in between. (Registered is not enough: HAProxy takes a new server as up
        until its first check, and a replacement still starting fails that check, which leaves
        nothing to route to for a second or two.) A deleted API (:meth:`remove_api`) has no
        entry here, so its replicas leave at once."""
        self._start()
        entry = self.apis.get(api)
        if entry is None or replica not in entry.servers:
            return
        deadline = time.monotonic() + hand_over
        while (
            self.apis.get(api) is entry
            and time.monotonic() < deadline
            and not self._another_checked_up(api, entry, replica)
        ):
            await asyncio.sleep(0.05)
        if entry.servers.pop(replica, None) is not None:
            log.info("api %s: replica %s stopped serving", api, replica)
            self._touch()
            await self.wait_applied()

    def _another_checked_up(self, api: str, entry: _Api, replica: str) -> bool:
        """Whether a replica of ``api`` other than ``replica`` is routed and has passed its
        health check (HAProxy's ``UP``; a new server is ``UP 1/2`` until checked)."""
        others = [r for r in entry.servers if r != replica]
        if not others or self.applied < self.changes:
            return False
        try:
            found = self.balancer.server_states().get(backend_id(api), {})
        except Exception:  # (HAProxy cannot say: being registered is all there is to go by)
            return True
        return any(found.get(server_id(r)) == "UP" for r in others)

    async def remove_api(self, api: str) -> None:
        """The API is being deleted (called before Serve deletes it): no hand-over."""
        self._start()
        self._restored.discard(api)
        entry = self.apis.pop(api, None)
        if entry is not None:
            self.retired.update(entry.servers)
            self._touch()
            await self.wait_applied()

    async def wait_ready(self, api: str, replicas: int = 1, timeout: float = 60.0) -> bool:
        """Whether the balancer routes ``api`` to at least ``replicas`` replicas (waits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.apis.get(api)
            if entry is not None and len(entry.servers) >= replicas and self.applied == self.changes:
                return True
            await asyncio.sleep(0.05)
        return False

    async def wait_applied(self, timeout: float = 10.0) -> bool:
        target = self.changes
        deadline = time.monotonic() + timeout
        while self.applied < target and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.applied >= target

    async def status(self) -> dict[str, Any]:
        return {
            "listen": f"{self.balancer.host}:{self.balancer.port}",
            "grpc": f"{self.balancer.host}:{self.balancer.grpc_port}" if self.balancer.grpc_port else None,
            "running": self.balancer.running,
            "reloads": self.balancer.reloads,
            "runtime_changes": self.balancer.runtime_changes,
            "last_error": self.last_error,
            "apis": {
                name: {
                    "endpoint": a.endpoint,
                    "model_routing": list(a.model_routing) if a.model_routing else None,
                    "replicas": {r: f"{h}:{p}" for r, (h, p, *_) in sorted(a.servers.items())},
                }
                for name, a in sorted(self.apis.items())
            },
        }

    async def replica_states(self) -> dict[str, dict[str, str]]:
        """Per API, each replica's state in the balancer now (``UP``, ``DOWN``, ``MAINT``...), as
        HAProxy's runtime API tells it."""
        found = self.balancer.server_states()
        return {
            name: {
                replica: found.get(backend_id(name), {}).get(server_id(replica), "absent")
                for replica in a.servers
            }
            for name, a in self.apis.items()
        }

    async def stop(self) -> None:
        self.kept.forget()
        if self._task is not None:
            self._task.cancel()
        self.balancer.stop()
        shutil.rmtree(self.balancer.workdir, ignore_errors=True)

    # --- applying changes ------------------------------------------------------

    def _touch(self) -> None:
        self.changes += 1
        if self._changed is not None:
            self._changed.set()

    def _start(self) -> None:
        if self._task is None:
            self._changed = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        assert self._changed is not None
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
            self._changed.clear()
            self._expire()
            if not self.balancer.running:  # HAProxy died: start it again with what is known
                log.error("ingress: haproxy is not running; starting it again")
                self.applied = -1
            elif self.applied == self.changes:
                self.balancer.tidy()
            if self.applied != self.changes:
                await asyncio.sleep(COALESCE)  # several registrations at once: one reload
                target = self.changes
                try:
                    # on this (the actor's) thread: HAProxy is told to exit with the thread that
                    # started it, and this one lives as long as the actor
                    self.balancer.apply(self._backends())
                    self.last_error = None
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.error("ingress: could not apply the balancer configuration: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                await self._keep_routes()  # (before it counts as applied: a restart finds it)
                self.applied = target

    async def _keep_routes(self) -> None:
        """Keep the routes just applied for a restart (off the loop: a call to Ray's store)."""
        routes = {
            name: KeptRoute(
                a.endpoint,
                a.model_routing,
                a.max_body,
                a.grpc_service,
                {r: (host, port, check, grpc) for r, (host, port, check, grpc, _) in a.servers.items()},
            )
            for name, a in self.apis.items()
        }
        try:
            await asyncio.to_thread(self.kept.keep_routes, routes, set(self.retired))
        except Exception as exc:  # a restart then waits for the heartbeats: routing goes on
            log.warning("ingress: could not keep its routes for a restart: %s", exc)

    def _expire(self) -> None:
        now = time.monotonic()
        for name, entry in list(self.apis.items()):
            for replica, (*_, seen) in list(entry.servers.items()):
                if now - seen > STALE:
                    log.warning("api %s: replica %s stopped registering: dropped", name, replica)
                    del entry.servers[replica]
                    self._touch()
            if name in self._restored and not entry.servers:  # kept, and no replica of it came back
                log.warning("api %s: kept from before the restart, and no replica registered: dropped", name)
                del self.apis[name]
                self._restored.discard(name)
                self._touch()

    def _backends(self) -> list[Backend]:
        return [
            Backend(
                name,
                a.endpoint,
                a.model_routing,
                tuple(
                    Server(r, host, port, check, grpc_port)
                    for r, (host, port, check, grpc_port, _) in a.servers.items()
                ),
                a.max_body,
                a.grpc_service,
            )
            for name, a in self.apis.items()
        ]
