"""The eviction order: least used first (a count halving every minute), LRU among equals."""

from __future__ import annotations

from cortex_ray.cache.usage import Usage


def test_the_least_used_goes_first_and_ties_go_in_lru_order() -> None:
    usage = Usage(half_life=60)
    for _ in range(10):
        usage.use("hot", now=0)
    usage.use("cold-old", now=1)
    usage.use("cold-new", now=2)
    # least recently used first: hot, cold-old, cold-new
    assert usage.order(["hot", "cold-old", "cold-new"]) == ["cold-old", "cold-new", "hot"]


def test_counts_fade_so_yesterday_s_favourite_can_go() -> None:
    usage = Usage(half_life=60)
    for _ in range(100):
        usage.use("yesterday", now=0)
    for _ in range(5):
        usage.use("today", now=600)  # ten half-lives later: 100 -> ~0.1
    assert usage.count("yesterday", now=600) < 0.1 < usage.count("today", now=600)
    assert usage.count("never") == 0.0
