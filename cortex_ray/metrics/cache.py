"""The model cache's events as metrics, tagged by API (and model where it applies)."""

from __future__ import annotations

from cortex_ray.cache.events import CacheEvents
from cortex_ray.metrics.recorder import recorder

__all__ = ["CacheMetrics"]

TIERS = ("memory", "disk")
"""The tiers a lookup hits or misses."""


class CacheMetrics(CacheEvents):
    def __init__(self, api_name: str) -> None:
        self.api = api_name
        self._rec = recorder()
        # (a hit is counted on every request that uses a model: its tags are made once)
        rec = self._rec
        self._hits = {t: rec.tags("cortex_ray_cache_hits", api_name=api_name, tier=t) for t in TIERS}
        self._misses = {t: rec.tags("cortex_ray_cache_misses", api_name=api_name, tier=t) for t in TIERS}

    def hit(self, tier: str) -> None:
        tags = self._hits.get(tier)
        if tags is None:
            self._rec.count("cortex_ray_cache_hits", api_name=self.api, tier=tier)
        else:
            self._rec.count_tagged("cortex_ray_cache_hits", tags)

    def miss(self, tier: str) -> None:
        tags = self._misses.get(tier)
        if tags is None:
            self._rec.count("cortex_ray_cache_misses", api_name=self.api, tier=tier)
        else:
            self._rec.count_tagged("cortex_ray_cache_misses", tags)

    def loaded(self, model: str, seconds: float | None) -> None:
        tag = self._rec.model_tag(model)
        outcome = "failed" if seconds is None else "ok"
        self._rec.count("cortex_ray_model_loads", api_name=self.api, model=tag, outcome=outcome)
        if seconds is not None:
            self._rec.observe("cortex_ray_model_load_seconds", seconds, api_name=self.api, model=tag)

    def downloaded(self, size: int, seconds: float | None) -> None:
        outcome = "failed" if seconds is None else "ok"
        self._rec.count("cortex_ray_downloads", api_name=self.api, outcome=outcome)
        if seconds is not None:
            self._rec.count("cortex_ray_download_bytes", size, api_name=self.api)
            self._rec.observe("cortex_ray_download_seconds", seconds, api_name=self.api)

    def evicted(self, tier: str) -> None:
        self._rec.count("cortex_ray_cache_evictions", api_name=self.api, tier=tier)
