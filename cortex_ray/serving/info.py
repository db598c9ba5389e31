"""The ``GET <endpoint>/info`` body.

Cortex's shape, ``{"model_metadata": {name: {"versions": [...], "timestamps":
[...]}}}``, plus per version its state (available, loading, failed with the
reason) and whether this replica holds it in memory or on disk.
"""

from __future__ import annotations

from typing import Any

from cortex_ray.cache import ModelCache

__all__ = ["model_info"]


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
        },
    }
