"""A model a running request uses is never evicted for another request's load; the load waits
(at most ``memory_wait``, then a 503 naming what holds the slots). Helpers are conftest.py's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cortex_ray.cache import Holder, ModelCache
from cortex_ray.errors import CacheFullError, to_response_body

if TYPE_CHECKING:
    from cortex_ray.clock import ManualClock
    from tests.unit.cache.conftest import Loader, Publisher, Waits

MODELS = {"a/1/model.bin": b"a1", "b/1/model.bin": b"b1", "c/1/model.bin": b"c1"}


def cache_of(
    loader: Loader, root: Path, publish: Publisher, clock: ManualClock, limit: int = 1
) -> ModelCache:
    return ModelCache(
        loader, root, memory_limit=limit, disk_limit=10, tree=publish(MODELS), clock=clock, memory_wait=60
    )


def test_a_model_in_use_is_not_evicted_for_another_request_until_that_request_ends(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        cache = cache_of(loader, tmp_path, publish, clock)
        slow_request, other = Holder(), Holder()
        a = await cache.get("a", requester=slow_request)
        assert cache.tiers.in_use(("a", 1)) == 1 and cache.state("a", 1)["in_use"] == 1
        b = asyncio.create_task(cache.get("b", requester=other))
        await wait.until(lambda: cache.tiers.entry_states(("b", 1))[0] == "queued", "b waits for a slot")
        await wait.turns()
        assert cache.tiers.in_memory == [("a", 1)] and not b.done()  # a is not taken from the slow request
        cache.let_go(slow_request)  # the slow request answered
        loaded = await wait.result(b)
        assert loaded.model == "b1" and cache.tiers.in_memory == [("b", 1)]
        assert a.model == "a1"  # what the slow request had was never touched
        assert cache.tiers.memory_used() <= 1

    asyncio.run(main())


def test_a_model_only_idle_requests_used_is_evicted_at_once(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        cache = cache_of(loader, tmp_path, publish, clock, limit=2)
        first, second, third = Holder(), Holder(), Holder()
        await cache.get("a", requester=first)
        await cache.get("b", requester=second)
        cache.let_go(second)
        assert cache.tiers.in_use(("b", 1)) == 0 and cache.tiers.in_use(("a", 1)) == 1
        c = await wait.result(cache.get("c", requester=third))
        assert c.model == "c1"  # b went, although a was used less recently: a is in use
        assert sorted(cache.tiers.in_memory) == [("a", 1), ("c", 1)]

    asyncio.run(main())


def test_a_request_may_evict_its_own_models_for_its_next_one(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    """A handler that uses two models with cache_size 1 is not left waiting on itself."""

    async def main() -> None:
        cache = cache_of(loader, tmp_path, publish, clock)
        request = Holder()
        a = await cache.get("a", requester=request)
        b = await wait.result(cache.get("b", requester=request))
        assert (a.model, b.model) == ("a1", "b1") and cache.tiers.in_memory == [("b", 1)]
        cache.let_go(request)
        assert cache.tiers.in_use(("b", 1)) == 0

    asyncio.run(main())


def test_the_wait_is_bounded_then_a_503_names_what_holds_the_slots_and_nothing_is_marked_failed(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        cache = cache_of(loader, tmp_path, publish, clock)
        slow_request = Holder()
        await cache.get("a", requester=slow_request)
        b = asyncio.create_task(cache.get("b", requester=Holder()))
        await wait.until(lambda: clock.sleepers == 1, "b waits for a slot, on the clock")
        await clock.advance(59)
        assert not b.done()
        await clock.advance(2)
        await wait.until(b.done, "b gave up")
        with pytest.raises(CacheFullError) as raised:
            b.result()
        status, body = to_response_body(raised.value)
        assert status == 503 and body["error"] == "model_cache_full"
        assert "'b' version 1 in 60s" in body["message"] and "a v1 (1 request(s))" in body["message"]
        assert cache.state("b", 1)["state"] == "available"  # a full cache is not the model's fault
        cache.let_go(slow_request)
        assert (await wait.result(cache.get("b"))).model == "b1"  # no backoff: loads at once

    asyncio.run(main())


def test_a_model_in_use_may_still_be_replaced_by_its_new_files(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    """Live reloading is load before unload: the request using the old object keeps it."""

    async def main() -> None:
        cache = cache_of(loader, tmp_path, publish, clock)
        request = Holder()
        old = await cache.get("a", requester=request)
        cache.set_tree(publish({"a/2/model.bin": b"a2"}))
        assert (await cache.get("a")).model == "a1"  # serving the old one; v2 loads behind it
        await wait.until(lambda: cache.latest_pointer("a") == 2, "v2 took over a's slot")
        assert cache.tiers.in_memory == [("a", 2)] and old.model == "a1"
        cache.let_go(request)  # the old object's holds are dropped without error
        assert not old.holders

    asyncio.run(main())


def test_a_request_that_ended_holds_nothing_more_and_an_impatient_one_never_waits(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        cache = cache_of(loader, tmp_path, publish, clock)
        ended = Holder()
        await cache.get("a", requester=ended)
        cache.let_go(ended)
        await cache.get("a", requester=ended)  # e.g. a thread of a cancelled request, still running
        assert cache.tiers.in_use(("a", 1)) == 0
        busy, impatient = Holder(), Holder()
        await cache.get("a", requester=busy)
        impatient.patient = False  # (a warm-up request)
        with pytest.raises(CacheFullError, match="a warm-up request does not wait for it"):
            await wait.result(cache.get("b", requester=impatient))
        assert clock.sleepers == 0
        await cache.close()

    asyncio.run(main())
