"""Triton's statistics extension: counts and durations of one replica's v2 inference requests,
per model version, as ``GET v2/models[/{m}[/versions/{v}]]/stats`` answers them.

Each replica counts what it served (a cluster's figures are the sum over its replicas: the
balancer routes a model's requests to the replicas that hold it, so one replica's answer is
that replica's share). Durations are nanoseconds, as Triton writes them:

* ``success`` / ``fail``: whole requests, from the route to the answer's body;
* ``compute_input``: decoding the request's tensors; ``compute_infer``: the model's run (with
  the wait for the handler's slot and, for a cold version, its load); ``compute_output``:
  encoding the outputs. ``queue``, ``cache_hit`` and ``cache_miss`` stay zero (no queue of
  Triton's kind, no response cache).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InferenceStats", "VersionStats"]

_DURATIONS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)


@dataclass
class VersionStats:
    inference_count: int = 0
    """Inferences: one per request (``max_batch_size`` is 0: no dimension is the batch's)."""
    execution_count: int = 0
    """Model runs (one per successful request: no batching across requests on this route)."""
    last_inference: int = 0
    """When the last request ended, milliseconds since the epoch (0: never)."""
    counts: dict[str, list[int]] = field(default_factory=lambda: {k: [0, 0] for k in _DURATIONS})
    """Per kind of duration: [count, nanoseconds]."""

    def as_json(self, name: str, version: int) -> dict[str, Any]:
        return {
            "name": name,
            "version": str(version),
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {k: {"count": c, "ns": ns} for k, (c, ns) in self.counts.items()},
            "batch_stats": [],
        }


class InferenceStats:
    def __init__(self, current: Callable[[str, int], bool] = lambda name, version: True) -> None:
        self._versions: dict[tuple[str, int], VersionStats] = {}
        self._current = current
        """Whether a version is still served: when a new one is counted, the others are forgotten."""

    def of(self, name: str, version: int) -> VersionStats:
        stats = self._versions.get((name, version))
        if stats is None:
            self._versions = {k: v for k, v in self._versions.items() if self._current(*k)}
            stats = self._versions[(name, version)] = VersionStats()
        return stats

    def record(
        self,
        name: str,
        version: int,
        ok: bool,
        total_ns: int,
        phases: dict[str, int] | None = None,
    ) -> None:
        """One request of a version ended: ``ok`` or not, how long it took, and (when it ran)
        how long its phases took (``compute_input``, ``compute_infer``, ``compute_output``)."""
        stats = self.of(name, version)
        outcome = stats.counts["success" if ok else "fail"]
        outcome[0] += 1
        outcome[1] += total_ns
        if ok:
            stats.inference_count += 1
            stats.execution_count += 1
            for phase, ns in (phases or {}).items():
                counted = stats.counts[phase]
                counted[0] += 1
                counted[1] += ns
        stats.last_inference = time.time_ns() // 1_000_000

    def keep(self, versions: set[tuple[str, int]]) -> None:
        """Forget the versions not in ``versions`` (gone from the model tree)."""
        for key in [k for k in self._versions if k not in versions]:
            del self._versions[key]

    def as_json(self, versions: list[tuple[str, int]]) -> dict[str, Any]:
        """``{"model_stats": [...]}`` for these versions (those never asked for count zero)."""
        empty = VersionStats()
        return {
            "model_stats": [
                self._versions.get((name, version), empty).as_json(name, version)
                for name, version in versions
            ]
        }
