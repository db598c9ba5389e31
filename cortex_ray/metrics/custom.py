"""``metrics_client``: the handler's own metrics (Cortex's custom metrics), through Ray's.

Values appear on Ray's Prometheus endpoint (``ray_<metric>``), tagged with ``api_name`` and the
handler's tags. Names starting with ``cortex_`` (or ``istio_``) are reserved, as in Cortex.
``CORTEX_RAY_METRICS=0`` records nothing, as for cortex-ray's own metrics
(:mod:`cortex_ray.metrics.recorder`); names are still checked.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from cortex_ray.metrics import recorder

__all__ = ["MetricsClient"]

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_BOUNDARIES = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000]


class MetricsClient:
    def __init__(self, api_name: str) -> None:
        self._api = api_name
        self._metrics: dict[tuple[str, str, tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()

    def increment(self, metric: str, value: float = 1, tags: dict[str, str] | None = None) -> None:
        found = self._get("counter", metric, tags)
        if found is not None:
            found.inc(value, tags=self._tags(tags))

    def gauge(self, metric: str, value: float, tags: dict[str, str] | None = None) -> None:
        found = self._get("gauge", metric, tags)
        if found is not None:
            found.set(value, tags=self._tags(tags))

    def histogram(self, metric: str, value: float, tags: dict[str, str] | None = None) -> None:
        found = self._get("histogram", metric, tags)
        if found is not None:
            found.observe(value, tags=self._tags(tags))

    def _tags(self, tags: dict[str, str] | None) -> dict[str, str]:
        return {"api_name": self._api, **{str(k): str(v) for k, v in (tags or {}).items()}}

    def _get(self, kind: str, metric: str, tags: dict[str, str] | None) -> Any:
        """The metric object (``None`` when metrics are off)."""
        if metric.startswith(("cortex_", "istio_")):
            raise ValueError(f"metric name {metric!r} starts with a cortex exclusive prefix")
        if not _NAME.match(metric):
            raise ValueError(f"metric name {metric!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
        if not recorder.ENABLED:
            return None
        keys = tuple(sorted({"api_name", *(tags or {})}))
        index = (kind, metric, keys)
        with self._lock:
            found = self._metrics.get(index)
            if found is None:
                description = f"cortex-ray custom metric {metric}"
                found = recorder.ray_metric(kind, metric, description, keys, _BOUNDARIES)
                self._metrics[index] = found
        return found
