"""The ``GET <endpoint>/info`` body.

Cortex's shape, ``{"model_metadata": {name: {"versions": [...], "timestamps":
[...]}}}``, is public. The operator's view adds, per version, its state (available,
loading, failed with the reason) and whether this replica holds it in memory or on
disk, the cache's contents, the reloader's status (storage errors included) and where
the replica runs. HTTP gives the operator's view only when the API says so (by default
on a loopback host); a Serve handle (the SDK, the CLI) always gets it.
"""

from __future__ import annotations

from typing import Any

from cortex_ray.cache import ModelCache
from cortex_ray.reload.subscriber import Subscriber

__all__ = ["api_info", "model_info", "public_info"]


async def api_info(
    cache: ModelCache, subscriber: Subscriber | None, disk_root: str, details: bool
) -> dict[str, Any]:
    if not details:
        return public_info(cache)
    body = model_info(cache)
    if subscriber is not None:
        body["reloader"] = await subscriber.reloader_status()
        body["replica"] = {**subscriber.info(), **_whereabouts(), "disk_cache": disk_root}
    return body


def public_info(cache: ModelCache) -> dict[str, Any]:
    """Cortex's fields only: the models, their versions and timestamps."""
    metadata = {}
    for name, model in sorted(cache.tree.models.items()):
        versions = sorted(model.versions)
        metadata[name] = {
            "versions": [str(v) for v in versions],
            "timestamps": [int(model.versions[v].timestamp) for v in versions],
        }
    return {"model_metadata": metadata}


def model_info(cache: ModelCache) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for name, model in sorted(cache.tree.models.items()):
        versions = sorted(model.versions)
        entry: dict[str, Any] = {
            "versions": [str(v) for v in versions],
            "timestamps": [int(model.versions[v].timestamp) for v in versions],
            "latest": str(model.latest) if model.latest is not None else None,
            "details": {},
        }
        if model.error:
            entry["error"] = model.error
        for v in versions:
            info = model.versions[v]
            entry["details"][str(v)] = {
                **cache.state(name, v),
                "size": info.size,
                "files": len(info.files),
            }
        metadata[name] = entry
    return {
        "model_metadata": metadata,
        "cache": {
            "memory_limit": cache.memory_limit,
            "disk_limit": cache.disk_limit,
            "in_memory": [f"{n}:{v}" for n, v in cache.in_memory],
            "on_disk": [f"{n}:{v}" for n, v in cache.on_disk],
            "loads": cache.load_count,
            "reclaim": cache.reclaimer.stats(),
        },
    }


def _whereabouts() -> dict[str, Any]:
    try:
        import ray
        from ray import serve

        context = ray.get_runtime_context()
        return {
            "node_id": context.get_node_id(),
            "replica_id": str(serve.get_replica_context().replica_id.unique_id),
        }
    except Exception:
        return {}
