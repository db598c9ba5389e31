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

from cortex_ray.asyncapi.store import WorkloadStore, new_workload_id, valid_workload_id
from cortex_ray.deployer.options import GATEWAY_CONCURRENCY
from cortex_ray.endpoint import Incoming, Outgoing, error_outgoing, json_outgoing
from cortex_ray.errors import (
    AtCapacityError,
    BadRequestError,
    CortexRayError,
    MethodNotAllowedError,
    ModelNotFoundError,
)
from cortex_ray.project.runtime_env import runtime_env_failure
from cortex_ray.replica.deployment import Replica
from cortex_ray.spec import ApiSpec
from cortex_ray.spec.names import DISPATCHER_ACTOR, worker_name

__all__ = ["AsyncGateway", "GatewayCore"]

log = logging.getLogger("cortex_ray.gateway")
DISPATCHER_PING = 3.0


class WorkloadNotFoundError(ModelNotFoundError):
    error_type = "workload_not_found"


class NoWorkerError(CortexRayError):
    """No worker of the API can run: a workload accepted now would never be."""

    status_code = 503
    error_type = "no_worker"


class GatewayCore:
    def __init__(self, api: ApiSpec) -> None:
        os.environ.update(api.handler.env)
        assert api.workloads is not None and api.workloads.store is not None
        self.api = api
        self.store = WorkloadStore(api.workloads.store, api.workloads.result_ttl)
        self._dispatcher: Any = None
        self._keepalive: asyncio.Task[None] | None = None
        self.no_worker: str | None = None
        """Why no worker can run (its requirements fail to install, it fails to start), if so:
        submissions are refused until one can."""

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
            try:
                await self._check_workers()
            except Exception as exc:  # Serve's controller busy or restarting: ask again soon
                log.debug("workers' state not known yet: %s", exc)
            await asyncio.sleep(DISPATCHER_PING)

    async def _check_workers(self) -> None:
        """Whether any worker can run, as Serve says of the workers' deployment."""
        from ray import serve

        status = await asyncio.to_thread(serve.status)
        app = status.applications.get(self.api.name)
        workers = app.deployments.get(worker_name(self.api.name)) if app is not None else None
        if workers is None:
            return
        running = sum(n for state, n in workers.replica_states.items() if str(state).endswith("RUNNING"))
        state = str(getattr(workers.status, "value", workers.status))
        pip = runtime_env_failure(workers.message or "")
        if running == 0 and (pip is not None or state in ("DEPLOY_FAILED", "UNHEALTHY")):
            reason = f"its requirements cannot be installed: {pip}" if pip else workers.message or state
            if self.no_worker is None:
                log.error("api %s: no worker can run, workloads are refused: %s", self.api.name, reason)
            self.no_worker = reason[:2000]
        else:
            self.no_worker = None

    async def handle(self, incoming: Incoming) -> Outgoing:
        sub = incoming.path.strip("/")
        try:
            if incoming.method == "POST" and not sub:
                return json_outgoing(await self.submit(incoming))
            reading = incoming.method in ("GET", "HEAD")  # (a HEAD is a GET without the body)
            if reading and sub == "info":
                return json_outgoing(await self.dispatcher_status())
            if reading and sub:
                return json_outgoing(await self.describe(sub))
            endpoint = self.api.endpoint
            raise MethodNotAllowedError(
                f"{incoming.method} {endpoint}{incoming.path}: an AsyncAPI takes POST {endpoint} "
                f"and GET {endpoint}/<id>",
                allowed=["POST"] if not sub else ["GET"],
            )
        except Exception as exc:
            return error_outgoing(exc)

    async def submit(self, incoming: Incoming) -> dict[str, Any]:
        content_type = incoming.header(b"content-type")
        if not content_type:
            raise BadRequestError("missing Content-Type header: say what the body is (e.g. application/json)")
        if not incoming.body:
            raise BadRequestError("the request has no body: an AsyncAPI workload needs a payload")
        if self.no_worker is not None:
            raise NoWorkerError(
                f"no worker of this API can run, so no workload is accepted: {self.no_worker}"
            )
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

    async def dispatcher_status(self) -> dict[str, Any]:
        return dict(await self._dispatcher_call("status"))

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()

    def remove_files(self) -> None:
        """(The gateway keeps no files of its own.)"""

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


class AsyncGateway(Replica):
    """The Serve deployment of the gateway (the AsyncAPI application's ingress)."""

    core: GatewayCore

    async def __init__(  # type: ignore[misc]
        self, api: ApiSpec, worker: Any = None, ingress: str = "proxy"
    ) -> None:
        core = GatewayCore(api)
        # the gateway only stores and reads: it takes many requests at once
        await self._start(api, core, core.handle, ingress, limit=GATEWAY_CONCURRENCY)

    async def queue_status(self) -> dict[str, Any]:
        """The dispatcher's status (queued, with workers, retried...): ``cortex-ray get``."""
        return dict(await self.loop.run(self.core.dispatcher_status()))
