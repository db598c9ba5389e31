"""An AsyncAPI worker replica: the user's ``handle_async``, one workload at a time.

It is an :class:`~cortex_ray.replica.deployment.ApiReplica` (same handler loading, models,
live reloading and cache) with one more method, :meth:`AsyncWorker.process`, that the
dispatcher calls for each workload. The deployment takes one request at a time per
replica (``max_ongoing_requests: 1``), so Serve routes a workload only to a free worker.

While it runs a workload the worker renews the workload's lease in the store, so a
restarted dispatcher knows it is running. The handler has ``workloads.timeout`` to
finish: past it the attempt fails (and the dispatcher tries again, up to
``max_attempts``); a sync handler cannot be interrupted, so the worker then reports
itself unhealthy and Serve replaces it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from cortex_ray.asyncapi.dispatcher import BUSY
from cortex_ray.asyncapi.store import Unreadable, WorkloadStore
from cortex_ray.endpoint import ASYNC
from cortex_ray.endpoint.codec import parse_payload
from cortex_ray.errors import CortexRayError
from cortex_ray.project import ProjectRef
from cortex_ray.replica.deployment import ApiReplica
from cortex_ray.spec import ApiSpec

__all__ = ["AsyncWorker", "WorkloadTimeoutError"]

log = logging.getLogger("cortex_ray.worker")
LEASE_RENEW = 5.0


class WorkloadTimeoutError(CortexRayError):
    status_code = 504
    error_type = "workload_timeout"


class AsyncWorker(ApiReplica):
    async def __init__(self, api: ApiSpec, project: ProjectRef | None = None) -> None:  # type: ignore[misc]
        await super().__init__(api, project=project)
        assert api.workloads is not None and api.workloads.store is not None
        self.store = WorkloadStore(api.workloads.store, api.workloads.result_ttl)
        self.timeout = api.workloads.timeout
        self._one_at_a_time: asyncio.Semaphore | None = None  # created on the core loop
        self._holder = uuid.uuid4().hex[:12]
        self._unhealthy: str | None = None

    def check_health(self) -> None:
        """Serve calls this periodically; raising makes it replace the replica."""
        super().check_health()
        if self._unhealthy:
            raise RuntimeError(self._unhealthy)

    async def process(self, workload_id: str, attempt: int) -> str:
        """Run one workload to its end; returns its final status, or ``BUSY`` when it did not
        run it (another worker holds a fresh lease on it, or this worker is being replaced).

        A workload already finished is never run again. Storage errors before the handler
        runs propagate, so the dispatcher retries.
        """
        return await self.loop.run(self._process(workload_id, attempt))

    async def _process(self, workload_id: str, attempt: int) -> str:
        if self._unhealthy:
            return BUSY
        if self._one_at_a_time is None:
            self._one_at_a_time = asyncio.Semaphore(1)  # one workload at a time, as Cortex
        async with self._one_at_a_time:
            state = await asyncio.to_thread(self.store.state, workload_id)
            if state.final is not None:
                await asyncio.to_thread(self.store.tidy, workload_id, state.final)
                return str(state.final["status"])
            number = await asyncio.to_thread(self.store.acquire_lease, workload_id, attempt, self._holder)
            if number is None:
                return BUSY  # another worker runs it (dispatched before a restart), or just took it
            beat = self._heartbeat(workload_id, number, attempt)
            heartbeat = asyncio.get_running_loop().create_task(beat)
            try:
                return await self._run(workload_id)
            finally:
                heartbeat.cancel()

    async def _run(self, workload_id: str) -> str:
        try:
            body, content_type = await asyncio.to_thread(self.store.payload, workload_id)
        except Unreadable as exc:
            return await self._finish(workload_id, "failed", "CorruptWorkload", str(exc))
        is_async = self.core.methods[ASYNC].is_async
        try:
            payload = parse_payload(body, content_type)
            call = self.core.endpoint.call_async(payload, workload_id)
            result = await asyncio.wait_for(call, self.timeout)
            _check_result(result)
        except asyncio.TimeoutError:
            message = f"handle_async did not finish within workloads.timeout ({self.timeout:g}s)"
            log.error("workload %s: %s", workload_id, message)
            if not is_async:  # a sync handler cannot be stopped: replace this worker
                self._unhealthy = f"a handler thread is stuck ({message})"
            raise WorkloadTimeoutError(message) from None
        except (CortexRayError, TypeError) as exc:
            error_type = exc.details.get("type") if isinstance(exc, CortexRayError) else None
            message = exc.message if isinstance(exc, CortexRayError) else str(exc)
            log.warning("workload %s failed: %s", workload_id, message)
            return await self._finish(workload_id, "failed", error_type or type(exc).__name__, message)
        return await self._finish(workload_id, "completed", result)

    async def _finish(self, workload_id: str, status: str, *args: Any) -> str:
        if status == "completed":
            final = await asyncio.to_thread(self.store.finish, workload_id, "completed", result=args[0])
        else:
            error = {"type": args[0], "message": args[1]}
            final = await asyncio.to_thread(self.store.finish, workload_id, "failed", error=error)
        return str(final["status"])  # a duplicate run that finished first stands

    async def _heartbeat(self, workload_id: str, number: int, attempt: int) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW)
            try:
                await asyncio.to_thread(self.store.renew_lease, workload_id, number, attempt, self._holder)
            except Exception as exc:  # storage trouble: the lease may go stale, say so
                log.warning("workload %s: cannot renew its lease: %s", workload_id, exc)

    async def __call__(self, request: Any) -> Any:  # workers take no HTTP traffic
        raise RuntimeError("AsyncAPI workers are called by the dispatcher only")


def _check_result(result: Any) -> None:
    if not isinstance(result, dict):
        raise TypeError(
            f"user response must be json serializable dictionary, got {type(result).__name__} instead"
        )
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"user response must be json serializable dictionary: {exc}") from exc
