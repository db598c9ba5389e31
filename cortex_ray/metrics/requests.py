"""Request metrics: count by API, model, version and status; latency by API and model."""

from __future__ import annotations

from typing import Any

from cortex_ray.metrics.recorder import recorder

__all__ = ["SEVERAL", "RequestMetrics"]

SEVERAL = "_several"
"""The model tag of a request that used more than one model."""


class RequestMetrics:
    def __init__(self, api_name: str) -> None:
        self.api = api_name
        self._rec = recorder()
        self._tags: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        """(model tag, version tag, status) -> the counter's and the histogram's tags."""

    def record(self, used: dict[str, Any] | None, status: int, seconds: float) -> None:
        """One answered request; ``used``: the model versions it used (``{}``: none)."""
        model, version = "", ""
        rec = self._rec
        if used and len(used) == 1:
            [(name, number)] = used.items()
            model = rec.model_tag(name)
            version = rec.version_tag(name, number) if model == name else model
        elif used:
            model = SEVERAL
        key = (model, version, status)
        tags = self._tags.get(key)
        if tags is None:
            if len(self._tags) > 10_000:  # bounded like the tags themselves
                self._tags.clear()
            tags = self._tags[key] = (
                rec.tags(
                    "cortex_ray_requests", api_name=self.api, model=model, version=version, status=str(status)
                ),
                rec.tags("cortex_ray_request_seconds", api_name=self.api, model=model),
            )
        rec.count_tagged("cortex_ray_requests", tags[0])
        rec.observe_tagged("cortex_ray_request_seconds", tags[1], seconds)
