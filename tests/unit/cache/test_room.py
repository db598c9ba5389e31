"""The room rules on their own (:class:`~cortex_ray.cache.room.Room`), over entries made by
hand: who is evicted for a load, who never is, how a load waits and what the 503 says, and the
estimates a load reserves. The tiers' tests cover the same rules through real loads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cortex_ray.cache.callbacks import TierCallbacks
from cortex_ray.cache.entry import Entry, Holder, Key, LoadedModel
from cortex_ray.cache.room import Room
from cortex_ray.cache.tier import Tier
from cortex_ray.cache.usage import Usage
from cortex_ray.clock import ManualClock
from cortex_ray.errors import CacheFullError, ModelLoadError
from cortex_ray.spec.quantity import Budget


class Table:
    """A room over a memory budget in bytes, and the evictions it asked for."""

    def __init__(self, memory: int, *, pinned: set[Key] | None = None, wait: float = 30.0) -> None:
        self.clock = ManualClock()
        self.entries: dict[Key, Entry] = {}
        self.evicted: list[Key] = []
        self.memory = Tier("memory", Budget(memory, "bytes"), lambda e: e.memory_bytes)
        disk = Tier("disk", None, lambda e: 0)
        gpu = Tier("gpu", None, lambda e: e.gpu_bytes)
        self.usage = Usage(clock=self.clock)
        self.room = Room(
            self.entries,
            self.memory,
            disk,
            gpu,
            usage=self.usage,
            callbacks=TierCallbacks(is_pinned=lambda key: key in (pinned or set())),
            clock=self.clock,
            memory_wait=wait,
            drop_memory=self.drop,
            drop_disk=lambda entry: None,
            evicted=lambda tier: None,
        )

    def loaded(self, name: str, size: int, uses: int = 1) -> Entry:
        entry = self.entries[(name, 1)] = Entry((name, 1))
        entry.loaded = LoadedModel(name, 1, "fp", object(), size=size, size_source="measured")
        self.memory.add(entry.key)
        for _ in range(uses):
            self.usage.use(entry.key)
        return entry

    def loading(self, name: str) -> Entry:
        entry = self.entries[(name, 1)] = Entry((name, 1))
        entry.load = asyncio.get_running_loop().create_future()
        return entry

    def drop(self, entry: Entry) -> None:
        self.evicted.append(entry.key)
        entry.loaded = None
        self.memory.discard(entry.key)
        self.room.notify()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_load_evicts_the_least_used_models_until_its_estimate_fits() -> None:
    async def main() -> None:
        t = Table(memory=1000)
        t.loaded("hot", 400, uses=5)
        t.loaded("warm", 300, uses=2)
        t.loaded("cold", 200, uses=1)
        new = t.loading("new")
        await t.room.reserve_memory(new, "fp", estimate=500)
        assert t.evicted == [("cold", 1), ("warm", 1)]  # least used first, and no more than needed
        assert new.load_slot and new.reserved == 500
        assert t.memory.used(t.entries.values()) == 900

    run(main())


def test_models_in_use_and_pinned_ones_are_never_evicted_and_the_503_names_them() -> None:
    async def main() -> None:
        t = Table(memory=1000, pinned={("pin", 1)}, wait=5.0)
        t.loaded("pin", 400)
        busy = t.loaded("busy", 500)
        request = Holder()
        assert busy.loaded is not None
        busy.loaded.holders.add(request)
        new = t.loading("new")
        waiting = asyncio.ensure_future(t.room.reserve_memory(new, "fp", estimate=300))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done() and t.evicted == []  # it waits: the request may end
        await t.clock.advance(5.0)
        with pytest.raises(CacheFullError) as full:
            await waiting
        message = str(full.value)
        assert "in 5s" in message and "(100B of 1000B free)" in message
        assert "busy v1 (1 request(s))" in message and "pinned models [pin v1]" in message
        assert t.evicted == []

    run(main())


def test_a_waiting_load_takes_the_room_a_request_frees() -> None:
    async def main() -> None:
        t = Table(memory=1000)
        busy = t.loaded("busy", 800)
        assert busy.loaded is not None
        request = Holder()
        busy.loaded.holders.add(request)
        new = t.loading("new")
        waiting = asyncio.ensure_future(t.room.reserve_memory(new, "fp", estimate=300))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        busy.loaded.holders.clear()  # the request ended
        t.room.notify()
        await waiting
        assert t.evicted == [("busy", 1)] and new.reserved == 300

    run(main())


def test_a_load_bigger_than_the_budget_fails_before_it_downloads_and_estimates_learn() -> None:
    t = Table(memory=1000)
    assert t.room.estimate("m", files=1500) == 1500  # nothing measured yet: its files
    with pytest.raises(ModelLoadError, match=r"'m' version 1 needs about .* its files.*more than cache_size"):
        t.room.check_estimate(("m", 1), 1500)
    t.room.learned(LoadedModel("m", 1, "fp", object(), size=600, size_source="measured"))
    assert t.room.estimate("m", files=1500) == 600
    t.room.check_estimate(("m", 2), 600)  # fits now
    t.room.learned(LoadedModel("m", 2, "fp", object(), size=900, size_source="estimated"))
    assert t.room.estimate("m", files=1500) == 600  # an estimate teaches nothing
