"""One tier of the cache (memory or disk): its budget, its usage order, and which entry goes
to make room. The same rules serve both tiers, counted in model versions (Cortex's
``cache_size: 3``) or in bytes (``cache_size: 6Gi``): only an entry's weight differs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from cortex_ray.cache.entry import Entry, Key
from cortex_ray.cache.usage import Usage
from cortex_ray.spec.quantity import Budget

__all__ = ["Tier"]


class Tier:
    def __init__(self, name: str, budget: Budget | None, weight: Callable[[Entry], int]) -> None:
        self.name = name
        """``memory`` or ``disk`` (in logs, metrics and errors)."""
        self.budget = budget
        self._weight = weight
        """What an entry takes of this tier now: 0 or 1 (versions), or its bytes."""
        self.order: OrderedDict[Key, None] = OrderedDict()
        """The versions this tier holds, least recently used first."""

    @property
    def limit(self) -> int | None:
        return self.budget.amount if self.budget is not None else None

    @property
    def in_bytes(self) -> bool:
        return self.budget is not None and self.budget.unit == "bytes"

    def need(self, size: int) -> int:
        """What a version of ``size`` bytes takes of this tier."""
        return max(size, 1) if self.in_bytes else 1

    def used(self, entries: Iterable[Entry]) -> int:
        return sum(self._weight(e) for e in entries)

    def fits(self, entries: Iterable[Entry], need: int) -> bool:
        """Whether ``need`` more fits under the budget now."""
        return self.budget is None or self.used(entries) + need <= self.budget.amount

    # --- usage order -------------------------------------------------------------

    def add(self, key: Key) -> None:
        """``key`` is held here, as the most recently used."""
        self.order[key] = None
        self.order.move_to_end(key)

    def touch(self, key: Key) -> None:
        if key in self.order:
            self.order.move_to_end(key)

    def discard(self, key: Key) -> None:
        self.order.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self.order

    def versions(self) -> list[Key]:
        return list(self.order)

    # --- making room -------------------------------------------------------------

    def victim(
        self,
        entries: Mapping[Key, Entry],
        usage: Usage,
        can_go: Callable[[Entry], bool],
        exclude: Key,
        prefer: Callable[[Entry], bool] | None = None,
    ) -> Entry | None:
        """The entry to evict for room: the least used that ``can_go`` (ties: the least recently
        used), among those ``prefer`` says (if it says any), or ``None``."""
        keys = usage.order(k for k in self.order if k != exclude and k in entries)
        candidates = [e for e in (entries[k] for k in keys) if can_go(e)]
        if prefer is not None:
            candidates.sort(key=lambda e: not prefer(e))  # (stable: the usage order stays within)
        return candidates[0] if candidates else None
