"""The AsyncAPI dispatcher's metrics: submitted, queued, in progress, outcomes, retries, duration."""

from __future__ import annotations

import time

from cortex_ray.metrics.recorder import recorder

__all__ = ["AsyncMetrics"]


class AsyncMetrics:
    def __init__(self, api_name: str) -> None:
        self.api = api_name
        self._rec = recorder()
        self._submitted_at: dict[str, float] = {}

    def submitted(self, workload_id: str) -> None:
        self._submitted_at[workload_id] = time.time()
        self._rec.count("cortex_ray_async_submitted", api_name=self.api)

    def sizes(self, queued: int, in_progress: int) -> None:
        self._rec.gauge("cortex_ray_async_queued", queued, api_name=self.api)
        self._rec.gauge("cortex_ray_async_in_progress", in_progress, api_name=self.api)

    def retried(self) -> None:
        self._rec.count("cortex_ray_async_retried", api_name=self.api)

    def forget(self, workload_id: str) -> None:
        """A workload found finished already (counted when it finished)."""
        self._submitted_at.pop(workload_id, None)

    def finished(self, workload_id: str, status: str) -> None:
        """A final status (``completed`` or ``failed``); the duration when this dispatcher saw
        the submission (not for workloads resumed after a restart)."""
        name = "cortex_ray_async_completed" if status == "completed" else "cortex_ray_async_failed"
        self._rec.count(name, api_name=self.api)
        since = self._submitted_at.pop(workload_id, None)
        if since is not None:
            self._rec.observe("cortex_ray_async_seconds", time.time() - since, api_name=self.api)
