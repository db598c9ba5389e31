"""``idle_timeout``: a version no request used for that long leaves memory (its files stay on
disk), never while a request uses it; the sweep runs only while something is in memory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from cortex_ray.cache import Holder, ModelCache
from cortex_ray.spec import MultiModelsSpec

if TYPE_CHECKING:
    from cortex_ray.clock import ManualClock
    from tests.unit.cache.conftest import Loader, Publisher, Waits


def cache_of(loader: Loader, root: Path, publish: Publisher, clock: ManualClock) -> ModelCache:
    tree = publish({"a/1/model.bin": b"a1", "b/1/model.bin": b"b1"})
    return ModelCache(loader, root, memory_limit=4, disk_limit=4, tree=tree, clock=clock, idle_timeout=10)


def test_a_version_unused_for_idle_timeout_leaves_memory_and_stays_on_disk(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        cache = cache_of(loader, tmp_path, publish, clock)
        await cache.get("a")
        await cache.get("b")
        await clock.advance(7.5)
        await cache.get("b")  # b is used again; a is not
        await clock.advance(5)  # a: 12.5 s unused; b: 5 s
        assert cache.tiers.in_memory == [("b", 1)] and cache.tiers.is_on_disk(("a", 1))
        assert cache.tiers.entry_states(("a", 1)) == ("absent", "on_disk")
        again = await wait.result(cache.get("a"))  # loaded again from disk: no new download
        assert again.model == "a1" and loader.calls == [b"a1", b"b1", b"a1"]
        await cache.close()

    asyncio.run(main())


def test_a_version_in_use_never_expires_and_its_idle_time_starts_when_the_request_ends(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock
) -> None:
    async def main() -> None:
        cache = cache_of(loader, tmp_path, publish, clock)
        request = Holder()
        await cache.get("a", requester=request)
        await clock.advance(60)  # a request running for a minute
        assert cache.tiers.in_memory == [("a", 1)]
        cache.let_go(request)
        await clock.advance(7.5)
        assert cache.tiers.in_memory == [("a", 1)] and 7 <= (cache.tiers.idle_for(("a", 1)) or 0) <= 8
        await clock.advance(5)
        assert cache.tiers.in_memory == []
        await cache.close()

    asyncio.run(main())


def test_the_sweep_stops_when_memory_is_empty_and_idle_timeout_is_off_by_default(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock
) -> None:
    async def main() -> None:
        cache = cache_of(loader, tmp_path, publish, clock)
        await cache.get("a")
        await clock.advance(15)
        assert cache.tiers.in_memory == []
        await clock.advance(60)  # the reclaimer's wait passes too
        assert clock.sleepers == 0  # nothing wakes while nothing is in memory
        await cache.close()
        forever = ModelCache(loader, tmp_path / "f", tree=cache.tree, clock=clock)
        await forever.get("a")
        await clock.advance(3600)
        assert forever.tiers.in_memory == [("a", 1)] and clock.sleepers == 0
        await forever.close()

    asyncio.run(main())


def test_idle_timeout_is_a_duration_in_the_spec() -> None:
    assert MultiModelsSpec(dir="/m", idle_timeout="5m").idle_timeout == 300
    assert MultiModelsSpec(dir="/m").idle_timeout is None
