"""What a replica's cache knows of one version: its state (available, loading, failed with the
reason), which tiers hold it and how it got there (for ``/info`` and the cluster's view)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cortex_ray.cache.model_cache import ModelCache

__all__ = ["version_state"]


def version_state(cache: ModelCache, name: str, version: int) -> dict[str, Any]:
    key = (name, version)
    model = cache.tree.models.get(name)
    info = model.versions.get(version) if model else None
    held = cache.held(key)
    memory, disk = cache.entry_states(key)
    out: dict[str, Any] = {"in_memory": held is not None, "on_disk": key in cache._disk_lru}
    failure = cache._failures.get(key)
    if info is not None and info.error:
        out.update(state="failed", reason=info.error)
    elif info is not None and cache.in_flight(name, info):
        out["state"] = "loading"
    elif failure is not None and info is not None and failure.fingerprint == info.fingerprint:
        out.update(state="failed", reason=failure.reason, failed_at=failure.at, attempts=failure.attempts)
    else:
        out["state"] = "available"
    out["cache_state"] = {"memory": memory, "disk": disk}
    if held is not None:
        metadata = getattr(held.model, "cortex_metadata", None)
        if isinstance(metadata, dict):
            out.update(metadata)
        out["loaded_at"] = held.loaded_at
        out["load_seconds"] = round(held.load_seconds, 3)
        if info is not None and held.fingerprint != info.fingerprint:
            out["serving_previous_files"] = True
    if cache._latest.get(name) == version:
        out["serving_latest"] = True
    return out
