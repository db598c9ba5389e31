"""The reloader's metrics: polls, list calls and errors, trees published, settle delays, lag."""

from __future__ import annotations

from cortex_ray.metrics.recorder import recorder

__all__ = ["ReloaderMetrics"]


class ReloaderMetrics:
    def __init__(self, api_name: str) -> None:
        self.api = api_name
        self._rec = recorder()

    def polled(self, list_calls: int, ok: bool, at: float | None = None) -> None:
        rec, api = self._rec, self.api
        rec.count("cortex_ray_reloader_polls", api_name=api, outcome="ok" if ok else "failed")
        if list_calls:
            rec.count("cortex_ray_reloader_list_calls", list_calls, api_name=api)
        if not ok:
            rec.count("cortex_ray_reloader_list_errors", api_name=api)
        if at is not None:
            rec.gauge("cortex_ray_reloader_last_success_timestamp_seconds", at, api_name=api)

    def delays(self, delays: list[float]) -> None:
        for delay in delays:
            self._rec.observe("cortex_ray_reloader_publish_delay_seconds", delay, api_name=self.api)

    def published(self) -> None:
        self._rec.count("cortex_ray_reloader_trees_published", api_name=self.api)
