"""Request metrics: count by API, model, version and status; latency by API and model."""

from __future__ import annotations

import time
from typing import Any

from cortex_ray.metrics.recorder import recorder

__all__ = ["SEVERAL", "RequestMetrics"]

SEVERAL = "_several"
"""The model tag of a request that used more than one model."""


LATENCY_SAMPLES_PER_S = 200
"""Above this many requests a second in one replica, ``cortex_ray_request_seconds`` observes
one request in k (k from the last second's rate): each observation is a call into Ray's
metrics (microseconds), which at 25,000 requests a second costs a fifth of the replica's
time. Its quantiles and mean stay right; ``cortex_ray_requests`` counts every request."""


class Sampler:
    """One in k, with k set each second so that about ``per_second`` are taken."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._every = 1
        self._seen = 0
        self._window_start = time.monotonic()
        self._in_window = 0

    def take(self) -> bool:
        self._in_window += 1
        if self._in_window >= self.per_second:  # enough this second: look at the rate
            now = time.monotonic()
            elapsed = now - self._window_start
            if elapsed >= 1.0:
                rate = self._in_window / elapsed
                self._every = max(1, int(rate // self.per_second))
                self._window_start, self._in_window = now, 0
        self._seen += 1
        if self._seen >= self._every:
            self._seen = 0
            return True
        return False


class RequestMetrics:
    def __init__(self, api_name: str) -> None:
        self.api = api_name
        self._rec = recorder()
        self._sampler = Sampler(LATENCY_SAMPLES_PER_S)
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
        if self._sampler.take():
            rec.observe_tagged("cortex_ray_request_seconds", tags[1], seconds)
