"""Per-replica gauges: what the cache holds, and the lag behind the reloader."""

from __future__ import annotations

from typing import Any

from cortex_ray.metrics.recorder import recorder

__all__ = ["record_cache_gauges", "record_lag"]


def record_lag(api_name: str, replica: str, lag: dict[str, float]) -> None:
    """This replica's lag behind its reloader (as the reloader answered its report)."""
    rec = recorder()
    rec.gauge("cortex_ray_replica_tree_lag_versions", lag["lag_versions"], api_name=api_name, replica=replica)
    rec.gauge("cortex_ray_replica_tree_lag_seconds", lag["lag_seconds"], api_name=api_name, replica=replica)


def record_cache_gauges(api_name: str, replica: str, report: dict[str, Any]) -> None:
    rec = recorder()
    for tier, models, size in (("memory", "in_memory", "memory_bytes"), ("disk", "on_disk", "disk_bytes")):
        rec.gauge(
            "cortex_ray_cache_models",
            len(report.get(models, [])),
            api_name=api_name,
            tier=tier,
            replica=replica,
        )
        rec.gauge(
            "cortex_ray_cache_bytes", report.get(size, 0), api_name=api_name, tier=tier, replica=replica
        )
