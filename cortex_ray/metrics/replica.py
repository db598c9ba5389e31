"""Per-replica gauges (what the cache holds) and who this replica is."""

from __future__ import annotations

import os
from typing import Any

from cortex_ray.metrics.recorder import recorder

__all__ = ["record_cache_gauges", "record_lag", "replica_identity"]


def replica_identity() -> dict[str, Any]:
    """This process's Serve replica id, node and process id."""
    identity: dict[str, Any] = {"replica": f"pid-{os.getpid()}", "node_id": "", "pid": os.getpid()}
    try:
        import ray
        from ray import serve

        identity["node_id"] = ray.get_runtime_context().get_node_id()
        identity["replica"] = str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # not in a replica (tests, tools)
        pass
    return identity


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
