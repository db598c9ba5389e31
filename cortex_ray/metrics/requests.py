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

    def record(
        self, used: dict[str, int | None] | dict[str, Any] | None, status: int, seconds: float
    ) -> None:
        """One answered request; ``used``: the model versions it used (``{}``: none)."""
        model, version = "", ""
        if used and len(used) == 1:
            [(name, number)] = used.items()
            model = self._rec.model_tag(name)
            version = self._rec.version_tag(name, number) if model == name else model
        elif used:
            model = SEVERAL
        rec = self._rec
        rec.count("cortex_ray_requests", api_name=self.api, model=model, version=version, status=str(status))
        rec.observe("cortex_ray_request_seconds", seconds, api_name=self.api, model=model)
