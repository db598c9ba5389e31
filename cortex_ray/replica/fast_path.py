"""A replica's side of the fast path: its own HTTP server, registered with the ingress.

Runs on the API core's loop. The server listens on the node's address (127.0.0.1 on a
local run) on a port the system picks, and its health responder on another one, answered from
threads of its own (a handler that runs long never makes the replica look dead); the replica
registers both with the cluster's ingress, again every ``HEARTBEAT`` seconds. When Serve stops
the replica, it deregisters first (the balancer stops sending it requests; the API's last
replica waits for its replacement to register), then finishes what it is serving and closes
its connections.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from cortex_ray.endpoint import Incoming, Outgoing
from cortex_ray.identity import serve_replica_id
from cortex_ray.ingress.autoscaling import ONGOING_METRIC
from cortex_ray.ingress.control import get_ingress
from cortex_ray.ingress.health import HealthResponder
from cortex_ray.ingress.registry import HEARTBEAT
from cortex_ray.ingress.server import FastServer, Limits
from cortex_ray.replica.loop import CoreLoop
from cortex_ray.replica.rpc_server import RpcServer
from cortex_ray.spec import ApiSpec

__all__ = ["FastIngress", "start_fast_path", "stop_fast_path"]

log = logging.getLogger("cortex_ray.ingress")
HAND_OVER_S = 12.0
"""How long an API's last replica keeps serving, while stopping, for its replacement to come up
(within Serve's default graceful_shutdown_timeout_s of 20 s)."""


class FastIngress:
    def __init__(
        self,
        api: ApiSpec,
        app: Callable[[Incoming], Awaitable[Outgoing]],
        limit: int | None,
        alive: Callable[[], bool] = lambda: True,
        rpc: RpcServer | None = None,
    ) -> None:
        self.api = api
        self.rpc = rpc
        """A gRPC API's own gRPC server (registered with its port beside the HTTP one)."""
        self.server = FastServer(app, api.endpoint, limit, Limits.for_body(api.networking.max_body_size))
        self.health = HealthResponder(self._health)
        self._alive = alive
        self.replica = ""
        self._ingress: Any = None
        self._stopped = threading.Event()
        self._beat: threading.Thread | None = None

    def _health(self) -> tuple[bool, str]:
        """Asked from the health responder's threads, whatever the loop is doing."""
        if not self._alive():
            return False, "the replica's loop stopped"
        if self.server.draining:
            return False, "draining"
        return True, "ok"

    async def start(self) -> None:
        import ray

        host = ray.util.get_node_ip_address()
        await self.server.start(host)
        if self.rpc is not None:
            await self.rpc.start(host, self.server)
        self.health.start(host)
        self.replica = serve_replica_id() or f"{self.server.host}:{self.server.port}"  # (outside Serve)
        self._ingress = get_ingress()
        if self._ingress is None:
            raise RuntimeError(
                "the fast ingress is not running on this cluster: start it with `cortex-ray run` / "
                "cortex_ray.deploy(..., ingress='fast'), or deploy with ingress='proxy'"
            )
        await self._register()
        # the heartbeat on a thread of its own, as the health checks: a handler that holds the loop
        # must not have the replica dropped from the balancer for being silent
        self._beat = threading.Thread(target=self._heartbeat, name=f"{self.api.name}-heartbeat", daemon=True)
        self._beat.start()

    def _register(self) -> Any:
        """The registration call (an object ref: awaited on the loop, or waited for on a thread)."""
        routing = self.api.networking.model_routing
        key = routing.as_pair() if routing is not None else None
        return self._ingress.register.remote(
            self.api.name,
            self.api.endpoint,
            key,
            self.replica,
            self.server.host,
            self.server.port,
            self.health.port,
            self.api.networking.max_body_size,
            (self.rpc.service, self.rpc.port) if self.rpc is not None else None,
        )

    def _heartbeat(self) -> None:
        import ray

        while not self._stopped.wait(HEARTBEAT):
            try:
                ray.get(self._register(), timeout=HEARTBEAT * 2)
            except Exception as exc:  # the ingress restarted: find it again
                log.warning("api %s: cannot reach the ingress: %s", self.api.name, exc)
                self._ingress = get_ingress() or self._ingress

    def autoscaling_stats(self) -> dict[str, float]:
        """For Serve's autoscaler: requests in this replica (average since the last call)."""
        return {ONGOING_METRIC: self.server.average_in_flight()}

    async def stop(self, timeout: float) -> None:
        self._stopped.set()
        try:
            if self._ingress is not None:
                leave = self._ingress.deregister.remote(self.api.name, self.replica, HAND_OVER_S)
                await asyncio.wait_for(leave, HAND_OVER_S + 5)
        except Exception as exc:
            log.warning("api %s: could not deregister from the ingress: %s", self.api.name, exc)
        # (off the balancer already: what runs finishes, HTTP and gRPC together)
        stopping = [self.server.drain(timeout), *([self.rpc.stop(timeout)] if self.rpc is not None else [])]
        await asyncio.gather(*stopping)
        self.health.stop()


async def start_fast_path(
    loop: CoreLoop,
    api: ApiSpec,
    app: Callable[[Incoming], Awaitable[Outgoing]],
    limit: int | None = None,
    rpc: RpcServer | None = None,
) -> FastIngress:
    """Serve ``app`` (and a gRPC API's ``rpc``) on the fast path from this replica (on the core
    ``loop``)."""
    limit = limit if limit is not None else api.autoscaling.max_replica_concurrency
    fast = FastIngress(api, app, limit, lambda: loop.alive, rpc)
    await loop.run(fast.start())
    return fast


def stop_fast_path(fast: FastIngress, loop: CoreLoop, timeout: float = 15.0) -> None:
    """A replica being stopped by Serve: off the balancer first, then finish what runs (on the
    core loop, waited for here)."""
    if not loop.alive:
        return
    try:
        loop.submit(fast.stop(timeout)).result(timeout + 5)
    except Exception as exc:  # stopping anyway
        log.warning("api %s: the fast path did not stop cleanly: %s", fast.api.name, exc)
