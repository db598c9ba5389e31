"""Pinned models: loaded at start, never evicted nor expired, counted in the budget; a pinned
"latest" follows the latest version as it moves. Helpers are conftest.py's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cortex_ray.cache import Holder, ModelCache
from cortex_ray.errors import CacheFullError, SpecErrors
from cortex_ray.spec import parse_spec

if TYPE_CHECKING:
    from cortex_ray.clock import ManualClock
    from tests.unit.cache.conftest import Loader, Publisher, Waits

MODELS: dict[str, bytes | None] = {f"{n}/1/model.bin": f"{n}1".encode() for n in "abcd"}


def test_a_pinned_model_is_loaded_at_start_and_never_evicted_by_the_churn_of_others(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        tree = publish(MODELS)
        pins = [("a", None), ("d", 1)]
        cache = ModelCache(
            loader, tmp_path, memory_limit=3, disk_limit=4, tree=tree, clock=clock, pinned=pins
        )
        await cache.load_pinned()
        assert sorted(cache.tiers.in_memory) == [("a", 1), ("d", 1)] and loader.calls == [b"a1", b"d1"]
        assert cache.state("a", 1)["pinned"] and "pinned" not in cache.state("b", 1)
        for name in "bcbcbc":  # one slot left for the others: they take turns
            assert (await wait.result(cache.get(name))).model == f"{name}1"
        assert sorted(cache.tiers.in_memory) == [("a", 1), ("c", 1), ("d", 1)]
        await cache.close()

    asyncio.run(main())


def test_a_pinned_latest_follows_the_new_version_and_its_old_one_goes(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        cache = ModelCache(
            loader,
            tmp_path,
            memory_limit=2,
            disk_limit=4,
            tree=publish(MODELS),
            clock=clock,
            pinned=[("a", None)],
        )
        await cache.load_pinned()
        cache.set_tree(publish({"a/2/model.bin": b"a2"}))  # no request needed: the pin loads it
        await wait.until(lambda: cache.latest_pointer("a") == 2, "a v2 took over")
        assert (
            cache.tiers.in_memory == [("a", 2)]
            and cache.is_pinned(("a", 2))
            and not cache.is_pinned(("a", 1))
        )
        await cache.close()

    asyncio.run(main())


def test_a_pin_missing_at_start_loads_once_it_appears_and_a_failing_one_does_not_stop_the_start(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        loader.fail_on.add(b"b1")
        pins = [("b", None), ("e", None)]
        cache = ModelCache(
            loader, tmp_path, memory_limit=3, disk_limit=4, tree=publish(MODELS), clock=clock, pinned=pins
        )
        await cache.load_pinned()  # b fails, e is not there: the replica starts all the same
        assert cache.tiers.in_memory == [] and cache.state("b", 1)["state"] == "failed"
        cache.set_tree(publish({"e/1/model.bin": b"e1"}))
        await wait.until(lambda: cache.tiers.in_memory == [("e", 1)], "the pin e loaded once it appeared")
        loader.fail_on.clear()
        await clock.advance(2)  # the retry loop tries the failed pin again
        await wait.until(lambda: ("b", 1) in cache.tiers.in_memory, "the failed pin b retried and loaded")
        await cache.close()

    asyncio.run(main())


def test_pins_are_never_expired_and_a_full_cache_names_them(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        cache = ModelCache(
            loader,
            tmp_path,
            memory_limit=2,
            disk_limit=4,
            tree=publish(MODELS),
            clock=clock,
            pinned=[("a", None)],
            idle_timeout=5,
            memory_wait=10,
        )
        await cache.load_pinned()
        request = Holder()
        await cache.get("b", requester=request)
        c = asyncio.create_task(cache.get("c"))
        await wait.until(lambda: clock.sleepers >= 2, "c waits for a slot")  # (and the idle sweep)
        await clock.advance(11)
        await wait.until(c.done, "c gave up")
        with pytest.raises(CacheFullError, match=r"pinned models \[a v1\]"):
            c.result()
        cache.let_go(request)
        await clock.advance(20)
        assert cache.tiers.in_memory == [("a", 1)]  # b expired, the pinned a stays
        await cache.close()

    asyncio.run(main())


def spec_problem(models: dict[str, Any]) -> str:
    api = {
        "name": "p",
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": "h.py", "multi_model_reloading": models},
    }
    with pytest.raises(SpecErrors) as raised:
        parse_spec([api], base_dir="/tmp")
    return str(raised.value)


def test_the_spec_checks_pins() -> None:
    paths = [{"name": "a", "path": "/m/a"}, {"name": "b", "path": "/m/b"}]
    assert "pinned[1]: model 'z' is not in paths (it has a, b)" in spec_problem(
        {"paths": paths, "pinned": ["a", "z@2"]}
    )
    assert "3 pinned models cannot fit in cache_size (2)" in spec_problem(
        {"dir": "/m", "pinned": ["a", "b", "c"], "cache_size": 2, "disk_cache_size": 4}
    )
    assert "the version after '@' must be a positive integer" in spec_problem(
        {"dir": "/m", "pinned": ["a@latest"]}
    )
    assert "a single `path` is one model" in spec_problem({"path": "/m/a", "pinned": ["a"]})


def test_a_load_that_only_pins_stand_in_the_way_of_fails_at_once(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock
) -> None:
    async def main() -> None:
        pins = [("a", None), ("b", None)]
        cache = ModelCache(
            loader, tmp_path, memory_limit=2, disk_limit=4, tree=publish(MODELS), clock=clock, pinned=pins
        )
        await cache.load_pinned()
        await cache.tiers.ensure_on_disk("c", cache.tree.models["c"].versions[1])  # (no wait for a download)
        with pytest.raises(CacheFullError, match=r"is held by pinned models \[a v1, b v1\]"):
            await cache.get("c")  # nothing will ever free memory: no 120 s wait for nothing
        assert clock.sleepers == 0
        await cache.close()

    asyncio.run(main())
