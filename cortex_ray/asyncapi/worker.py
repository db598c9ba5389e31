"""An AsyncAPI worker replica: the user's ``handle_async``, one workload at a time.

It is an :class:`~cortex_ray.serving.replica.ApiReplica` (same handler loading,
models, live reloading and cache) with one more method, :meth:`process`, that
the dispatcher calls for each workload.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from cortex_ray.asyncapi.store import FINAL, WorkloadStore
from cortex_ray.errors import CortexRayError
from cortex_ray.serving.http import parse_payload
from cortex_ray.serving.replica import ApiReplica
from cortex_ray.spec import ApiSpec

__all__ = ["AsyncWorker"]

log = logging.getLogger("cortex_ray.worker")


class AsyncWorker(ApiReplica):
    async def __init__(self, api: ApiSpec) -> None:  # type: ignore[misc]
        await super().__init__(api)
        assert api.workloads is not None and api.workloads.store is not None
        self.store = WorkloadStore(api.workloads.store)
        self._one_at_a_time = asyncio.Semaphore(1)  # one workload at a time per worker, as Cortex

    async def process(self, workload_id: str, attempt: int) -> str:
        """Run one workload to its end (completed or failed); returns the final status.

        Idempotent: a workload already finished (a duplicate dispatch) is left as it is.
        Storage errors before the handler runs propagate, so the dispatcher retries.
        """
        async with self._one_at_a_time:
            current = await asyncio.to_thread(self.store.status, workload_id)
            if current is not None and current["status"] in FINAL:
                return str(current["status"])
            await asyncio.to_thread(self.store.set_status, workload_id, "in_progress", attempts=attempt)
            body, content_type = await asyncio.to_thread(self.store.payload, workload_id)
            try:
                payload = parse_payload(body, content_type)
                result, _ = await self.call_handler(
                    self._handler.handle_async, {"payload": payload, "request_id": workload_id}
                )
                _check_result(result)
            except (CortexRayError, TypeError) as exc:
                error_type = exc.details.get("type") if isinstance(exc, CortexRayError) else None
                message = exc.message if isinstance(exc, CortexRayError) else str(exc)
                log.warning("workload %s failed: %s", workload_id, message)
                return await self._finish(workload_id, "failed", error_type or type(exc).__name__, message)
            return await self._finish(workload_id, "completed", result)

    async def _finish(self, workload_id: str, status: str, *args: Any) -> str:
        current = await asyncio.to_thread(self.store.status, workload_id)
        if current is not None and current["status"] in FINAL:  # a duplicate run finished first
            return str(current["status"])
        if status == "completed":
            await asyncio.to_thread(self.store.complete, workload_id, *args)
        else:
            await asyncio.to_thread(self.store.fail, workload_id, *args)
        return status

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
