"""Every metric cortex-ray records about itself: name, kind, tags, meaning.

Ray exports them on its Prometheus endpoint with its ``ray_`` prefix (a counter also gets
``_total``, a histogram ``_bucket``/``_sum``/``_count``). The Grafana dashboard
(``deployments/grafana/cortex-ray.json``) queries only names from here, and a test checks it.

Tags stay bounded: ``api_name`` by the spec, ``status`` by HTTP, ``tier`` and ``outcome`` by a
few values, ``replica`` by the replicas running; ``model`` and ``version`` by
:data:`cortex_ray.metrics.recorder.MAX_MODELS` per process (beyond it, ``_other``), so a
``dir`` of 10,000 models exports at most that many model series per replica.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOGUE", "SECONDS", "MetricSpec"]

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Histogram boundaries for durations, in seconds."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str
    """``counter``, ``gauge`` or ``histogram``."""
    description: str
    tags: tuple[str, ...]


def _m(name: str, kind: str, description: str, *tags: str) -> MetricSpec:
    return MetricSpec(name, kind, description, ("api_name", *tags))


CATALOGUE: dict[str, MetricSpec] = {
    m.name: m
    for m in [
        # requests (both ingress paths)
        _m("cortex_ray_requests", "counter", "HTTP requests answered", "model", "version", "status"),
        _m("cortex_ray_request_seconds", "histogram", "time to answer a request, in the replica", "model"),
        # the model cache, per replica
        _m("cortex_ray_cache_hits", "counter", "model lookups served by a tier without waiting", "tier"),
        _m("cortex_ray_cache_misses", "counter", "model lookups a tier could not serve", "tier"),
        _m("cortex_ray_model_loads", "counter", "model loads (load_model) by outcome", "model", "outcome"),
        _m("cortex_ray_model_load_seconds", "histogram", "duration of successful model loads", "model"),
        _m("cortex_ray_downloads", "counter", "model downloads to the disk tier by outcome", "outcome"),
        _m("cortex_ray_download_bytes", "counter", "bytes of model files downloaded"),
        _m("cortex_ray_download_seconds", "histogram", "duration of successful model downloads"),
        _m("cortex_ray_cache_evictions", "counter", "versions evicted to make room", "tier"),
        _m("cortex_ray_cache_models", "gauge", "model versions held", "tier", "replica"),
        _m(
            "cortex_ray_cache_bytes",
            "gauge",
            "bytes of the versions held: on disk their files, in memory their sizes "
            "(stated, measured or estimated)",
            "tier",
            "replica",
        ),
        # live reloading (the reloader, one per API)
        _m("cortex_ray_reloader_polls", "counter", "storage polls by outcome", "outcome"),
        _m("cortex_ray_reloader_list_calls", "counter", "storage list calls (one per location per poll)"),
        _m("cortex_ray_reloader_list_errors", "counter", "failed storage polls"),
        _m("cortex_ray_reloader_last_success_timestamp_seconds", "gauge", "time of the last successful poll"),
        _m("cortex_ray_reloader_trees_published", "counter", "model trees published to the replicas"),
        _m(
            "cortex_ray_reloader_publish_delay_seconds",
            "histogram",
            "from a version's new files first seen to their publication (the settle time)",
        ),
        _m(
            "cortex_ray_replica_tree_lag_versions",
            "gauge",
            "trees a replica is behind its reloader",
            "replica",
        ),
        _m(
            "cortex_ray_replica_tree_lag_seconds",
            "gauge",
            "how long a replica has been behind its reloader's published tree",
            "replica",
        ),
        # AsyncAPI (the dispatcher, one per API)
        _m("cortex_ray_async_submitted", "counter", "workloads accepted"),
        _m("cortex_ray_async_queued", "gauge", "workloads waiting for a worker"),
        _m("cortex_ray_async_in_progress", "gauge", "workloads with a worker"),
        _m("cortex_ray_async_completed", "counter", "workloads completed"),
        _m("cortex_ray_async_failed", "counter", "workloads failed for good"),
        _m("cortex_ray_async_retried", "counter", "attempts retried after a worker failure"),
        _m("cortex_ray_async_seconds", "histogram", "from submission to the final status"),
    ]
}
