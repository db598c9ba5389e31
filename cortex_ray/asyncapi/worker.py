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

from cortex_ray.asyncapi.store import WorkloadStore
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

    async def process(self, workload_id: str, attempt: int) -> str:
        """Run one workload to its end (completed or failed); returns the final status."""
        await asyncio.to_thread(self.store.set_status, workload_id, "in_progress", attempts=attempt)
        try:
            body, content_type = await asyncio.to_thread(self.store.payload, workload_id)
            payload = parse_payload(body, content_type)
            result, _ = await self.call_handler(
                self._handler.handle_async, {"payload": payload, "request_id": workload_id}
            )
            if not isinstance(result, dict):
                raise TypeError(
                    f"user response must be json serializable dictionary, got {type(result).__name__} instead"
                )
            try:
                json.dumps(result)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"user response must be json serializable dictionary: {exc}") from exc
        except (CortexRayError, TypeError) as exc:
            error_type = exc.details.get("type") if isinstance(exc, CortexRayError) else None
            message = exc.message if isinstance(exc, CortexRayError) else str(exc)
            log.warning("workload %s failed: %s", workload_id, message)
            await asyncio.to_thread(self.store.fail, workload_id, error_type or type(exc).__name__, message)
            return "failed"
        await asyncio.to_thread(self.store.complete, workload_id, result)
        return "completed"

    async def __call__(self, request: Any) -> Any:  # workers take no HTTP traffic
        raise RuntimeError("AsyncAPI workers are called by the dispatcher only")
