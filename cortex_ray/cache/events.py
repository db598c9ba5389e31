"""What the cache reports as it works (metrics subscribe; the cache knows nothing of them)."""

from __future__ import annotations

__all__ = ["CacheEvents"]


class CacheEvents:
    """No-op hooks; :class:`cortex_ray.metrics.cache.CacheMetrics` records them."""

    def hit(self, tier: str) -> None:
        """A lookup found what it needed in ``tier`` (``memory``, ``disk``)."""

    def miss(self, tier: str) -> None:
        """A lookup had to wait: a load (memory) or a download (disk)."""

    def loaded(self, model: str, seconds: float | None) -> None:
        """A load finished (``seconds``) or failed (``None``)."""

    def downloaded(self, size: int, seconds: float | None) -> None:
        """A download of ``size`` bytes finished (``seconds``) or failed (``None``)."""

    def evicted(self, tier: str) -> None:
        """A version was evicted from ``tier`` to make room."""
