"""The AsyncAPI's HTTP ingress: accept a workload, and report on it.

``POST <endpoint>``: the body and its content type are stored first, then the
reply is ``{"id": "<id>"}``. ``GET <endpoint>/<id>``: ``{"id", "status"}``, plus
``result`` and ``timestamp`` once completed, or ``error`` once failed; 404 for
an unknown id (ids not of the server's form never reach the store).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cortex_ray.asyncapi.dispatcher import DISPATCHER_ACTOR
from cortex_ray.asyncapi.store import WorkloadStore, new_workload_id, valid_workload_id
from cortex_ray.errors import BadRequestError, MethodNotAllowedError, ModelNotFoundError
from cortex_ray.serving.http import error_response
from cortex_ray.spec import ApiSpec

__all__ = ["AsyncGateway"]

log = logging.getLogger("cortex_ray.gateway")
DISPATCHER_PING = 3.0


class WorkloadNotFoundError(ModelNotFoundError):
    error_type = "workload_not_found"


class AsyncGateway:
    async def __init__(self, api: ApiSpec, worker: Any = None) -> None:  # type: ignore[misc]
        import os

        os.environ.update(api.handler.env)
        assert api.workloads is not None and api.workloads.store is not None
        self.api = api
        self.store = WorkloadStore(api.workloads.store, api.workloads.result_ttl)
        self._dispatcher: Any = None
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

    async def __call__(self, request: Request) -> Response:
        path = request.scope.get("path", "/")
        root = request.scope.get("root_path", "")
        sub = (path[len(root) :] if root and path.startswith(root) else path).strip("/")
        try:
            if request.method == "POST" and not sub:
                return JSONResponse(await self.submit(request))
            if request.method == "GET" and sub == "info":
                return JSONResponse(await self._dispatcher_call("status"))
            if request.method == "GET" and sub:
                return JSONResponse(await self.describe(sub))
            raise MethodNotAllowedError(
                f"{request.method} {path}: an AsyncAPI takes POST {root or '/'} and GET {root}/<id>"
            )
        except Exception as exc:
            return error_response(exc)

    async def submit(self, request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type")
        if not content_type:
            raise BadRequestError("missing Content-Type header: say what the body is (e.g. application/json)")
        body = await request.body()
        if not body:
            raise BadRequestError("the request has no body: an AsyncAPI workload needs a payload")
        workload_id = new_workload_id()
        await asyncio.to_thread(self.store.submit, workload_id, body, content_type)
        try:
            await self._dispatcher_call("submit", workload_id)
        except Exception as exc:  # stored: the dispatcher's rescan will pick it up
            log.warning("workload %s stored, dispatcher not reached yet: %s", workload_id, exc)
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
