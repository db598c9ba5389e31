"""The ``GET <endpoint>/info`` body.

Cortex's shape, ``{"model_metadata": {name: {"versions": [...], "timestamps":
[...]}}}``, is public. The operator's view adds, per version, its state (available,
loading, failed with the reason) and whether this replica holds it in memory or on
disk, the cache's contents, the reloader's status (storage errors included) and where
the replica runs. With ``?all=1`` it adds the cluster's view: what every replica of the
API holds and what it failed to load, as each reported to the reloader. HTTP gives the
operator's view only when the API says so (by default on a loopback host); a Serve handle
(the SDK, the CLI) always gets it.
"""

from __future__ import annotations

import weakref
from typing import Any

from cortex_ray.cache import ModelCache
from cortex_ray.identity import replica_identity
from cortex_ray.models.tree import ModelTree
from cortex_ray.reload.subscriber import Subscriber

__all__ = ["api_info", "cluster_view", "model_info", "public_info", "replica_report"]


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
                "files": info.file_count,
            }
        metadata[name] = entry
    snap = cache.snapshot()
    return {
        "model_metadata": metadata,
        "cache": {
            "memory_limit": snap.memory.limit,
            "disk_limit": snap.disk.limit,
            "memory_unit": snap.memory.unit,
            "disk_unit": snap.disk.unit,
            "memory_used": snap.memory.used,
            "disk_used": snap.disk.used,
            "memory_bytes": snap.memory.bytes,
            "in_memory": [f"{n}:{v}" for n, v in snap.memory.versions],
            "on_disk": [f"{n}:{v}" for n, v in snap.disk.versions],
            "loads": snap.loads,
            "reclaim": snap.reclaim,
            **(
                {"gpu_limit": snap.gpu.limit, "gpu_used": snap.gpu.used} if snap.gpu.limit is not None else {}
            ),
        },
    }


def _whereabouts() -> dict[str, Any]:
    identity = replica_identity()
    return {"node_id": identity["node_id"], "replica_id": identity["replica"]}


def replica_report(cache: ModelCache) -> dict[str, Any]:
    """What this replica tells the reloader (for the cluster's view): the versions it holds per
    tier, with their sizes, and every version not available (loading, failed). Cheap enough for
    every 2 s at 10,000 models: it looks at what is held, loading or failed, and walks the tree
    for invalid versions only when the tree changed."""
    states: dict[str, dict[str, Any]] = {}
    for name, v in sorted({*cache.needing_attention(), *_invalid_versions(cache.tree)}):
        state = cache.state(name, v)
        if state["state"] != "available":
            states[f"{name}:{v}"] = {k: state[k] for k in ("state", "reason", "attempts") if k in state}
    snap = cache.snapshot()
    return {
        "in_memory": [f"{n}:{v}" for n, v in snap.memory.versions],
        "on_disk": [f"{n}:{v}" for n, v in snap.disk.versions],
        "memory_bytes": snap.memory.bytes,
        "disk_bytes": snap.disk.bytes,
        "not_available": states,
        "loads": snap.loads,
    }


_invalid: list[Any] = [None, []]
"""A weak reference to the last tree looked at, and its invalid versions."""


def _invalid_versions(tree: ModelTree) -> list[tuple[str, int]]:
    """The versions whose files are invalid, once per published tree."""
    seen = _invalid[0]() if _invalid[0] is not None else None
    if seen is not tree:
        found = [(n, v) for n, m in tree.models.items() for v, info in m.versions.items() if info.error]
        _invalid[:] = [weakref.ref(tree), found]
    return list(_invalid[1])


def cluster_view(replicas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every replica's report, and per version which replicas hold it and which cannot."""
    versions: dict[str, dict[str, Any]] = {}
    for replica, report in sorted(replicas.items()):
        for tier in ("in_memory", "on_disk"):
            for key in report.get(tier, []):
                versions.setdefault(key, {"in_memory": [], "on_disk": [], "not_available": {}})[tier].append(
                    replica
                )
        for key, state in report.get("not_available", {}).items():
            entry = versions.setdefault(key, {"in_memory": [], "on_disk": [], "not_available": {}})
            entry["not_available"][replica] = state
    return {"replicas": replicas, "versions": dict(sorted(versions.items()))}
