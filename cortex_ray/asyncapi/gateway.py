"""The AsyncAPI's HTTP ingress: accept a workload, and report on it.

``POST <endpoint>``: the body and its content type are stored first, then the
reply is ``{"id": "<id>"}``. ``GET <endpoint>/<id>``: ``{"id", "status"}``, plus
``result`` and ``timestamp`` once completed, or ``error`` once failed; 404 for
an unknown id (ids not of the server's form never reach the store). Like a
RealtimeAPI replica, the gateway's work runs on a loop of its own, and is reached
through Serve's proxy or cortex-ray's fast path alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cortex_ray.asyncapi.dispatcher import DISPATCHER_ACTOR
from cortex_ray.asyncapi.store import WorkloadStore, new_workload_id, valid_workload_id
from cortex_ray.errors import AtCapacityError, BadRequestError, MethodNotAllowedError, ModelNotFoundError
from cortex_ray.ingress.attach import start_fast_path, stop_fast_path
from cortex_ray.serving.loop import CoreLoop
from cortex_ray.serving.requests import Incoming, Outgoing, error_outgoing, from_starlette, json_outgoing
from cortex_ray.spec import ApiSpec

__all__ = ["AsyncGateway", "GatewayCore"]

log = logging.getLogger("cortex_ray.gateway")
DISPATCHER_PING = 3.0


class WorkloadNotFoundError(ModelNotFoundError):
    error_type = "workload_not_found"


class GatewayCore:
    def __init__(self, api: ApiSpec) -> None:
        os.environ.update(api.handler.env)
        assert api.workloads is not None and api.workloads.store is not None
        self.api = api
        self.store = WorkloadStore(api.workloads.store, api.workloads.result_ttl)
        self._dispatcher: Any = None
        self._keepalive: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._keepalive = asyncio.get_running_loop().create_task(self._keep_dispatcher_running())

    async def _keep_dispatcher_running(self) -> None:
        """Ping the dispatcher for as long as this gateway lives: one that Serve recreated
        (it died, or its node did) starts and resumes the queued workloads within seconds,
        whether or not anyone submits."""
        while True:
            try:
                await self._dispatcher_call("ensure_running")
            except Exception as exc:  # being created or recreated by Serve: ask again soon
                log.debug("dispatcher not reachable yet: %s", exc)
            await asyncio.sleep(DISPATCHER_PING)

    async def handle(self, incoming: Incoming) -> Outgoing:
        sub = incoming.path.strip("/")
        try:
            if incoming.method == "POST" and not sub:
                return json_outgoing(await self.submit(incoming))
            if incoming.method == "GET" and sub == "info":
                return json_outgoing(await self._dispatcher_call("status"))
            if incoming.method == "GET" and sub:
                return json_outgoing(await self.describe(sub))
            endpoint = self.api.endpoint
            raise MethodNotAllowedError(
                f"{incoming.method} {endpoint}{incoming.path}: an AsyncAPI takes POST {endpoint} "
                f"and GET {endpoint}/<id>"
            )
        except Exception as exc:
            return error_outgoing(exc)

    async def submit(self, incoming: Incoming) -> dict[str, Any]:
        content_type = incoming.header(b"content-type")
        if not content_type:
            raise BadRequestError("missing Content-Type header: say what the body is (e.g. application/json)")
        if not incoming.body:
            raise BadRequestError("the request has no body: an AsyncAPI workload needs a payload")
        workload_id = new_workload_id()
        await asyncio.to_thread(self.store.submit, workload_id, incoming.body, content_type)
        try:
            accepted = await self._dispatcher_call("submit", workload_id)
        except Exception as exc:  # stored: the dispatcher's rescan will pick it up
            log.warning("workload %s stored, dispatcher not reached yet: %s", workload_id, exc)
            accepted = True
        if accepted is False:
            await asyncio.to_thread(self.store.discard, workload_id)
            limit = self.api.autoscaling.max_replica_concurrency
            raise AtCapacityError(f"the queue is full ({limit} workloads per replica): try again later")
        return {"id": workload_id}

    async def describe(self, workload_id: str) -> dict[str, Any]:
        if not valid_workload_id(workload_id):
            raise WorkloadNotFoundError(f"workload {workload_id!r} not found")
        found = await asyncio.to_thread(self.store.describe, workload_id)
        if found is None:
            raise WorkloadNotFoundError(f"workload {workload_id!r} not found")
        return found

    async def _dispatcher_call(self, method: str, *args: Any) -> Any:
        from ray import serve

        for attempt in range(2):
            if self._dispatcher is None:
                self._dispatcher = serve.get_deployment_actor(DISPATCHER_ACTOR)
            try:
                return await getattr(self._dispatcher, method).remote(*args)
            except Exception:
                self._dispatcher = None
                if attempt:
                    raise
                await asyncio.sleep(0.5)
        return None


class AsyncGateway:
    """The Serve deployment of the gateway (the AsyncAPI application's ingress)."""

    async def __init__(  # type: ignore[misc]
        self, api: ApiSpec, worker: Any = None, ingress: str = "proxy"
    ) -> None:
        self.api = api
        self.loop = CoreLoop(f"{api.name}-gateway")
        self.core = GatewayCore(api)
        await self.loop.run(self.core.start())
        # the gateway only stores and reads: it takes many requests at once
        self.fast = (
            await start_fast_path(self.loop, api, self.core.handle, 1000) if ingress == "fast" else None
        )
        if self.fast is not None:
            self.record_autoscaling_stats = self._autoscaling_stats

    async def __call__(self, request: Request) -> Response:
        incoming = await from_starlette(request)
        return (await self.loop.run(self.core.handle(incoming))).to_starlette()

    async def queue_status(self) -> dict[str, Any]:
        """The dispatcher's status (queued, with workers, retried...): ``cortex-ray get``."""
        return dict(await self.loop.run(self.core._dispatcher_call("status")))

    def check_health(self) -> None:
        if not self.loop.alive:
            raise RuntimeError(f"api {self.api.name}: the gateway's loop stopped")

    async def _autoscaling_stats(self) -> dict[str, float]:
        assert self.fast is not None
        return self.fast.autoscaling_stats()

    def __del__(self) -> None:
        stop_fast_path(self)
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.stop()
