"""What a replica's cache shows: a snapshot of its tiers (:class:`CacheSnapshot`), and what it
knows of one version: its state (available, loading, failed with the reason), which tiers hold
it and how it got there (for ``/info`` and the cluster's view).

It reads the cache through public queries only (:class:`CacheView`, which
:class:`~cortex_ray.cache.model_cache.ModelCache` satisfies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cortex_ray.cache.entry import Key, LoadedModel
from cortex_ray.models.tree import ModelTree, VersionInfo

__all__ = ["CacheSnapshot", "CacheView", "Failure", "TierSnapshot", "version_state"]


@dataclass(frozen=True)
class TierSnapshot:
    """One tier at one moment."""

    limit: int | None
    """Its budget (``None``: unlimited), in ``unit``."""
    unit: str | None
    """``versions`` or ``bytes`` (``None``: no budget)."""
    used: int
    """Of the budget, in ``unit``, in-flight downloads or loads included."""
    versions: tuple[Key, ...]
    """The versions it holds, least recently used first."""
    bytes: int
    """What the versions it holds take: objects' sizes in memory, files on disk."""


@dataclass(frozen=True)
class CacheSnapshot:
    memory: TierSnapshot
    disk: TierSnapshot
    gpu: TierSnapshot
    """GPU memory (``gpu_cache_size``): the versions whose objects hold some."""
    loads: int
    """Loads installed since the replica started."""
    reclaim: dict[str, Any]
    """How unloaded objects were freed (:class:`~cortex_ray.cache.reclaim.Reclaimer`)."""


class Failure(Protocol):
    """The last failed load of a version's files."""

    fingerprint: str
    reason: str
    attempts: int
    at: float


class TiersView(Protocol):
    def held(self, key: Key) -> LoadedModel | None: ...

    def in_use(self, key: Key) -> int: ...

    def entry_states(self, key: Key) -> tuple[str, str]: ...

    def is_on_disk(self, key: Key) -> bool: ...

    def in_flight(self, name: str, info: VersionInfo) -> bool: ...


class CacheView(Protocol):
    @property
    def tree(self) -> ModelTree: ...

    @property
    def tiers(self) -> TiersView: ...

    def is_pinned(self, key: Key) -> bool: ...

    def failure(self, key: Key) -> Failure | None: ...

    def latest_pointer(self, name: str) -> int | None: ...


def version_state(cache: CacheView, name: str, version: int) -> dict[str, Any]:
    key = (name, version)
    model = cache.tree.models.get(name)
    info = model.versions.get(version) if model else None
    tiers = cache.tiers
    held = tiers.held(key)
    memory, disk = tiers.entry_states(key)
    out: dict[str, Any] = {"in_memory": held is not None, "on_disk": tiers.is_on_disk(key)}
    failure = cache.failure(key)
    if info is not None and info.error:
        out.update(state="failed", reason=info.error)
    elif info is not None and tiers.in_flight(name, info):
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
        out["in_use"] = tiers.in_use(key)  # running requests that hold it (never evicted for others)
        out["memory_bytes"] = held.size
        out["size_source"] = held.size_source  # stated by the model, measured, or estimated
        if held.gpu_bytes is not None:
            out["gpu_bytes"] = held.gpu_bytes
            out["gpu_source"] = held.gpu_source
        out["loaded_at"] = held.loaded_at
        out["load_seconds"] = round(held.load_seconds, 3)
        if info is not None and held.fingerprint != info.fingerprint:
            out["serving_previous_files"] = True
    if cache.latest_pointer(name) == version:
        out["serving_latest"] = True
    if cache.is_pinned(key):
        out["pinned"] = True
    return out
