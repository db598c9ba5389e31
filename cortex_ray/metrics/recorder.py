"""Recording cortex-ray's own metrics: cheap on the request path, bounded in tags.

Counters add up in the process and go to Ray's metrics once a second (a dict update per
request instead of a call into Ray); gauges and histograms go at once. Without a running
Ray (unit tests, tools) the values stay in a :class:`MemorySink` that can be read back.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict, defaultdict
from typing import Any

from cortex_ray.metrics.catalogue import CATALOGUE, SECONDS

__all__ = ["ENABLED", "MAX_MODELS", "OTHER", "MemorySink", "Recorder", "ray_metric", "recorder"]

MAX_MODELS = int(os.environ.get("CORTEX_RAY_METRICS_MAX_MODELS", "50"))
"""Distinct model names a process tags its metrics with; later ones are tagged ``_other``. Per
model, the ``MAX_VERSIONS`` versions used last are tagged (live reloading brings new ones)."""
MAX_VERSIONS = 10
ENABLED = os.environ.get("CORTEX_RAY_METRICS", "1") not in ("0", "false", "off")
"""``CORTEX_RAY_METRICS=0`` (in the environment of Ray's processes) records nothing."""
OTHER = "_other"
FLUSH_EVERY = 1.0

Tags = tuple[tuple[str, str], ...]


class MemorySink:
    """Keeps every value (counters summed, gauges last, histograms as lists)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, Tags], Any] = {}

    def inc(self, name: str, tags: Tags, value: float) -> None:
        self.values[(name, tags)] = self.values.get((name, tags), 0) + value

    def set(self, name: str, tags: Tags, value: float) -> None:
        self.values[(name, tags)] = value

    def observe(self, name: str, tags: Tags, value: float) -> None:
        self.values.setdefault((name, tags), []).append(value)

    def get(self, name: str, **tags: str) -> Any:
        """The value of ``name`` summed over series whose tags include ``tags``."""
        found = [v for (n, t), v in self.values.items() if n == name and tags.items() <= dict(t).items()]
        if found and isinstance(found[0], list):
            return [x for v in found for x in v]
        return sum(found) if found else None


def ray_metric(
    kind: str, name: str, description: str, tag_keys: tuple[str, ...], boundaries: list[float]
) -> Any:
    """A Ray metric object (the only place one is made): ``kind`` is ``counter``, ``gauge`` or
    ``histogram`` (with ``boundaries``)."""
    from ray.util import metrics

    if kind == "counter":
        return metrics.Counter(name, description, tag_keys=tag_keys)
    if kind == "gauge":
        return metrics.Gauge(name, description, tag_keys=tag_keys)
    return metrics.Histogram(name, description, boundaries=boundaries, tag_keys=tag_keys)


class _RaySink:
    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _metric(self, name: str) -> Any:
        found = self._metrics.get(name)
        if found is None:
            spec = CATALOGUE[name]
            with self._lock:
                found = self._metrics.get(name)
                if found is None:
                    found = ray_metric(spec.kind, name, spec.description, spec.tags, list(SECONDS))
                    self._metrics[name] = found
        return found

    def inc(self, name: str, tags: Tags, value: float) -> None:
        self._metric(name).inc(value, tags=dict(tags))

    def set(self, name: str, tags: Tags, value: float) -> None:
        self._metric(name).set(value, tags=dict(tags))

    def observe(self, name: str, tags: Tags, value: float) -> None:
        self._metric(name).observe(value, tags=dict(tags))


class Recorder:
    """The process's recorder of cortex-ray metrics (see :func:`recorder`)."""

    def __init__(self, sink: Any = None) -> None:
        self._sink = sink
        self._counts: defaultdict[tuple[str, Tags], float] = defaultdict(float)
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._models: dict[str, OrderedDict[str, None]] = {}

    @property
    def sink(self) -> Any:
        if self._sink is None:
            self._sink = _RaySink() if _ray_running() else MemorySink()
        return self._sink

    # --- tags --------------------------------------------------------------

    def model_tag(self, model: str | None) -> str:
        """``model`` itself while this process tags fewer than ``MAX_MODELS``, else ``_other``."""
        if not model:
            return ""
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODELS:
            return OTHER
        self._models[model] = OrderedDict()
        return model

    def version_tag(self, model: str | None, version: int | str | None) -> str:
        if version is None or version == "":
            return ""
        versions = self._models.get(model or "")
        if versions is None:
            return OTHER
        text = str(version)
        versions[text] = None
        versions.move_to_end(text)
        if len(versions) > MAX_VERSIONS:
            versions.popitem(last=False)  # the version used longest ago (its series stays as it was)
        return text

    # --- recording ---------------------------------------------------------

    def count(self, name: str, value: float = 1, **tags: str) -> None:
        self.count_tagged(name, _tags(name, tags), value)

    def count_tagged(self, name: str, tags: Tags, value: float = 1) -> None:
        """:meth:`count` with the tags already in the catalogue's order (see :meth:`tags`)."""
        if value <= 0 or not ENABLED:  # a counter only goes up (Ray refuses 0 and less)
            return
        key = (name, tags)
        with self._lock:
            self._counts[key] += value
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="cortex-ray-metrics", daemon=True
                )
                self._flusher.start()

    def tags(self, name: str, **tags: str) -> Tags:
        """``tags`` in the catalogue's order for ``name`` (to keep for many records)."""
        return _tags(name, tags)

    def gauge(self, name: str, value: float, **tags: str) -> None:
        if ENABLED:
            self.sink.set(name, _tags(name, tags), value)

    def observe(self, name: str, value: float, **tags: str) -> None:
        if ENABLED:
            self.sink.observe(name, _tags(name, tags), value)

    def observe_tagged(self, name: str, tags: Tags, value: float) -> None:
        if ENABLED:
            self.sink.observe(name, tags, value)

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, defaultdict(float)
        for (name, tags), value in counts.items():
            try:
                self.sink.inc(name, tags, value)
            except Exception as exc:  # one bad series never loses the others
                logging.getLogger("cortex_ray.metrics").debug("metric %s not recorded: %s", name, exc)

    def _flush_loop(self) -> None:
        stop = threading.Event()
        while not stop.wait(FLUSH_EVERY):
            try:
                self.flush()
            except Exception:  # Ray shutting down: metrics are best effort, serving is not
                pass


def _tags(name: str, given: dict[str, str]) -> Tags:
    spec = CATALOGUE[name]  # a name outside the catalogue is a bug: KeyError
    return tuple((key, str(given.get(key, ""))) for key in spec.tags)


def _ray_running() -> bool:
    try:
        import ray

        return bool(ray.is_initialized())
    except Exception:
        return False


_RECORDER = Recorder()


def recorder() -> Recorder:
    """This process's recorder."""
    return _RECORDER
