"""How much each model version is used: the eviction order of the cache's tiers.

Plain LRU evicts a model used a hundred times a minute to make room for one asked for
once, which under the skewed traffic of real multi-model APIs (a few hot models, a long
tail) costs many reloads. Each version keeps a use count that halves every
``HALF_LIFE`` seconds (frequency and recency in one number, as LRFU does); the version
evicted is the one with the lowest count, the least recently used among equals. A
version evicted keeps its count, so a popular model that comes back is not the next to go.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TypeVar

from cortex_ray.clock import SYSTEM, Clock

__all__ = ["HALF_LIFE", "Usage"]

K = TypeVar("K", bound=Hashable)

HALF_LIFE = 60.0


class Usage:
    def __init__(self, half_life: float = HALF_LIFE, clock: Clock = SYSTEM) -> None:
        self.half_life = half_life
        self.clock = clock
        self._counts: dict[Hashable, tuple[float, float]] = {}
        """key -> (count, when it was last updated)."""

    def use(self, key: Hashable, now: float | None = None) -> None:
        now = self.clock.monotonic() if now is None else now
        self._counts[key] = (self.count(key, now) + 1.0, now)
        if len(self._counts) > 4096 and len(self._counts) % 1024 == 0:
            self._forget_faded(now)

    def count(self, key: Hashable, now: float | None = None) -> float:
        found = self._counts.get(key)
        if found is None:
            return 0.0
        now = self.clock.monotonic() if now is None else now
        count, at = found
        return count * 0.5 ** ((now - at) / self.half_life)

    def order(self, keys: Iterable[K]) -> list[K]:
        """``keys`` (least recently used first) in eviction order: least used first."""
        now = self.clock.monotonic()
        ranked = list(keys)
        position = {k: i for i, k in enumerate(ranked)}
        return sorted(ranked, key=lambda k: (self.count(k, now), position[k]))

    def _forget_faded(self, now: float) -> None:
        self._counts = {k: v for k, v in self._counts.items() if self.count(k, now) >= 0.01}
