"""``metrics_client``: Cortex's custom metrics, recorded through Ray's metrics.

Values appear on Ray's Prometheus endpoint (``ray_<metric>``). Names starting
with ``cortex_`` (or ``istio_``) are reserved, as in Cortex.
"""

from __future__ import annotations

import re
import threading
from typing import Any

__all__ = ["MetricsClient"]

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MetricsClient:
    def __init__(self, api_name: str) -> None:
        self._api = api_name
        self._metrics: dict[tuple[str, str, tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()

    def increment(self, metric: str, value: float = 1, tags: dict[str, str] | None = None) -> None:
        self._get("counter", metric, tags).inc(value, tags=self._tags(tags))

    def gauge(self, metric: str, value: float, tags: dict[str, str] | None = None) -> None:
        self._get("gauge", metric, tags).set(value, tags=self._tags(tags))

    def histogram(self, metric: str, value: float, tags: dict[str, str] | None = None) -> None:
        self._get("histogram", metric, tags).observe(value, tags=self._tags(tags))

    def _tags(self, tags: dict[str, str] | None) -> dict[str, str]:
        return {"api_name": self._api, **{str(k): str(v) for k, v in (tags or {}).items()}}

    def _get(self, kind: str, metric: str, tags: dict[str, str] | None) -> Any:
        if metric.startswith(("cortex_", "istio_")):
            raise ValueError(f"metric name {metric!r} starts with a cortex exclusive prefix")
        if not _NAME.match(metric):
            raise ValueError(f"metric name {metric!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
        keys = tuple(sorted({"api_name", *(tags or {})}))
        index = (kind, metric, keys)
        with self._lock:
            found = self._metrics.get(index)
            if found is None:
                from ray.util import metrics

                description = f"cortex-ray custom metric {metric}"
                if kind == "counter":
                    found = metrics.Counter(metric, description, tag_keys=keys)
                elif kind == "gauge":
                    found = metrics.Gauge(metric, description, tag_keys=keys)
                else:
                    found = metrics.Histogram(metric, description, boundaries=_BOUNDARIES, tag_keys=keys)
                self._metrics[index] = found
        return found


_BOUNDARIES = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000]
