"""The reloader's bounded log of published deltas, as Kubernetes' watch cache keeps events: a
replica that says which tree version it holds gets every change since, merged into one delta;
a replica too far behind (or new, or from another reloader epoch) gets the whole tree."""

from __future__ import annotations

from collections import deque

from cortex_ray.models.delta import TreeDelta, merge_deltas

__all__ = ["MAX_DELTA_MODELS", "MAX_LOG", "DeltaLog"]

MAX_LOG = 256
"""Deltas kept: a replica more versions behind than this gets the whole tree."""
MAX_DELTA_MODELS = 2000
"""A merged delta of more models than this is sent as the whole tree instead."""


class DeltaLog:
    def __init__(self, capacity: int = MAX_LOG, max_models: int = MAX_DELTA_MODELS) -> None:
        self._entries: deque[tuple[int, TreeDelta]] = deque(maxlen=capacity)
        self._max_models = max_models

    def append(self, version: int, delta: TreeDelta) -> None:
        """``delta`` took the tree from ``version - 1`` to ``version`` (versions in order, no gap)."""
        if self._entries and self._entries[-1][0] != version - 1:
            self._entries.clear()  # (a gap: what came before cannot be merged across it)
        self._entries.append((version, delta))

    def clear(self) -> None:
        self._entries.clear()

    @property
    def oldest_base(self) -> int | None:
        """The oldest version a replica may hold and still get a delta."""
        return self._entries[0][0] - 1 if self._entries else None

    def since(self, known: int, current: int) -> TreeDelta | None:
        """Every change from version ``known`` to ``current``, merged; ``None`` when the log
        cannot say (``known`` older than the log, newer than ``current``, or too many models
        changed: send the whole tree)."""
        base = self.oldest_base
        if base is None or known < base or known >= current or self._entries[-1][0] != current:
            return None
        merged = merge_deltas(d for v, d in self._entries if v > known)
        return merged if len(merged) <= self._max_models else None
