"""The per-replica model cache, on the in-memory storage fake (no Ray).

Helpers (``publish``, ``loader``, ``clock``, ``wait``, ``at_once``) are fixtures of conftest.py.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cortex_ray.cache import ModelCache, resolve_version
from cortex_ray.errors import (
    BadRequestError,
    InvalidVersionError,
    ModelLoadError,
    ModelNotFoundError,
    VersionNotFoundError,
)
from cortex_ray.models import ModelTree, discover_models
from cortex_ray.spec import MultiModelsSpec
from cortex_ray.storage import open_storage

if TYPE_CHECKING:
    from cortex_ray.clock import ManualClock
    from tests.unit.cache.conftest import AtOnce, Loader, Publisher, Waits


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_load_once_then_hit(tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock) -> None:
    tree = publish({"a/1/model.bin": b"a1", "a/2/model.bin": b"a2"})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        first = await cache.get("a")
        assert (first.model, first.version) == ("a2", 2)
        again = await cache.get("a", "latest")
        assert again is first
        old = await cache.get("a", "1")
        assert (old.model, old.version) == ("a1", 1)
        assert cache.tiers.load_count == 2

    run(main())


def test_ten_concurrent_requests_for_a_cold_model_load_once(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    tree = publish({"a/1/model.bin": b"a1"})
    loader.gate = threading.Event()

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        tasks = [asyncio.create_task(cache.get("a")) for _ in range(10)]
        await wait.until(lambda: loader.calls == [b"a1"], "the load started")
        assert not any(t.done() for t in tasks)  # all ten wait for that one load
        loader.gate.set()  # type: ignore[union-attr]
        results = await wait.result(asyncio.gather(*tasks))
        assert {r.model for r in results} == {"a1"}
        assert len(loader.calls) == 1

    run(main())


def test_slow_load_does_not_delay_a_warm_model(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits, at_once: AtOnce
) -> None:
    tree = publish({"a/1/model.bin": b"a1", "b/1/model.bin": b"b1"})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        await cache.get("b")
        loader.gate = threading.Event()
        slow = asyncio.create_task(cache.get("a"))
        await wait.until(lambda: b"a1" in loader.calls, "a's load started")
        warm = at_once(cache.get("b"))  # answered without waiting on a's load
        assert warm.model == "b1"
        assert not slow.done()
        loader.gate.set()
        assert (await wait.result(slow)).model == "a1"

    run(main())


def test_lru_order_and_both_limits_are_never_exceeded(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    tree = publish({f"{n}/1/model.bin": n.encode() for n in "abcde"})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path / "disk", memory_limit=2, disk_limit=3, tree=tree, clock=clock)
        loader.watch(cache)
        for name in "abc":
            await cache.get(name)
        assert cache.tiers.in_memory == [("b", 1), ("c", 1)]
        assert cache.tiers.on_disk == [("a", 1), ("b", 1), ("c", 1)]
        await cache.get("b")  # touch b: c becomes the LRU in memory
        await cache.get("d")
        assert cache.tiers.in_memory == [("b", 1), ("d", 1)]
        assert sorted(cache.tiers.on_disk) == [("b", 1), ("c", 1), ("d", 1)]
        await wait.idle(cache)  # (evicted folders are deleted in a thread)
        assert not (tmp_path / "disk" / "a").exists() or not any((tmp_path / "disk" / "a").iterdir())
        await cache.get("a")  # from storage again
        assert len(cache.tiers.in_memory) == 2 and len(cache.tiers.on_disk) == 3
        # while a load ran, memory never held more than limit - 1 other models
        assert len(loader.observed) == 5 and max(loader.observed) <= 1
        await wait.idle(cache)
        folders = [p for p in (tmp_path / "disk").iterdir() if p.is_dir() and not p.name.startswith(".")]
        on_disk = sum(1 for f in folders for v in f.iterdir() if not v.name.startswith("."))
        assert on_disk == 3

    run(main())


def test_concurrent_loads_respect_the_memory_limit(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock
) -> None:
    tree = publish({f"{n}/1/model.bin": n.encode() for n in "abcd"})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=4, tree=tree, clock=clock)
        loader.watch(cache)
        results = await asyncio.gather(*(cache.get(n) for n in "abcd"))
        assert [r.model for r in results] == list("abcd")
        assert len(cache.tiers.in_memory) == 1
        assert len(loader.observed) == 4 and max(loader.observed) == 0

    run(main())


def test_failed_load_is_reported_and_retried(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock
) -> None:
    tree = publish({"a/1/model.bin": b"bad"})
    loader.fail_on = {b"bad"}

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        with pytest.raises(ModelLoadError, match="cannot load b'bad'") as info:
            await cache.get("a")
        assert info.value.status_code == 503
        assert cache.state("a", 1)["state"] == "failed"
        loader.fail_on = set()
        with pytest.raises(ModelLoadError):  # backing off: no new attempt for a second
            await cache.get("a")
        await clock.advance(0.5)
        with pytest.raises(ModelLoadError):
            await cache.get("a")
        assert len(loader.calls) == 1
        await clock.advance(0.5)  # the backoff is over
        assert (await cache.get("a")).model == "bad"
        assert cache.state("a", 1)["state"] == "available"
        assert len(loader.calls) == 2

    run(main())


def test_new_tree_drops_removed_versions_and_reloads_changed_ones(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    tree = publish({"a/1/model.bin": b"a1", "a/2/model.bin": b"a2"})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        await cache.get("a", 1)
        await cache.get("a", 2)
        cache.set_tree(publish({"a/1/model.bin": None, "a/2/model.bin": b"a2-new"}))
        assert cache.tiers.in_memory == [("a", 2)]  # version 1 removed and freed; 2 reloads in the background
        with pytest.raises(VersionNotFoundError):
            await cache.get("a", 1)
        await wait.idle(cache)
        assert (await cache.get("a")).model == "a2-new"
        assert cache.tiers.on_disk == [("a", 2)]

    run(main())


def test_download_all_fetches_every_valid_version(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock
) -> None:
    tree = publish({"a/1/model.bin": b"a1", "a/2/model.bin": b"a2", "b/model.bin": b"b"})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        await cache.download_all()
        assert sorted(cache.tiers.on_disk) == [("a", 1), ("a", 2), ("b", 1)]
        assert cache.tiers.in_memory == [] and loader.calls == []

    run(main())


def test_resolve_errors(publish: Publisher) -> None:
    tree = publish({"a/1/model.bin": b"a1", "b/x/model.bin": b"x", "b/1/model.bin": b"y"})
    with pytest.raises(
        ModelNotFoundError, match="'zzz' model wasn't found in the list of available models: a, b"
    ):
        resolve_version(tree, "zzz")
    with pytest.raises(VersionNotFoundError, match="version 7 wasn't found \\(versions: 1\\)"):
        resolve_version(tree, "a", "7")
    with pytest.raises(InvalidVersionError, match="parse-able numeric value or 'latest'"):
        resolve_version(tree, "a", "v1")
    with pytest.raises(BadRequestError, match="model_name was not specified"):
        resolve_version(tree, None)
    with pytest.raises(ModelLoadError, match="cannot be served"):
        resolve_version(tree, "b")
    assert resolve_version(tree, "a", 1)[1].version == 1


def test_single_path_ignores_the_name() -> None:
    s = open_storage("mem://single/m/")
    s.upload("model.bin", b"x")
    tree = discover_models(MultiModelsSpec(path="mem://single/m/"), "python")
    assert resolve_version(tree, None)[0] == "_cortex_default"
    assert resolve_version(tree, "anything")[0] == "_cortex_default"


def test_in_place_update_keeps_serving_the_old_object_until_the_new_one_loaded(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits, at_once: AtOnce
) -> None:
    tree = publish({"a/1/model.bin": b"old"})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        assert (await cache.get("a")).model == "old"
        loader.gate = threading.Event()
        cache.set_tree(publish({"a/1/model.bin": b"new"}))
        assert at_once(cache.get("a")).model == "old"  # no request waits on the swap
        await wait.until(lambda: b"new" in loader.calls, "the new files are loading")
        for _ in range(3):
            assert at_once(cache.get("a")).model == "old"
        assert cache.state("a", 1)["state"] == "loading"
        loader.gate.set()
        await wait.idle(cache)
        assert (await cache.get("a")).model == "new"
        assert len(list((tmp_path / "a").iterdir())) == 1  # the old files were deleted

    run(main())


def test_new_version_becomes_latest_only_once_loaded(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits, at_once: AtOnce
) -> None:
    tree = publish({"a/1/model.bin": b"v1"})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        assert (await cache.get("a")).version == 1
        loader.gate = threading.Event()
        cache.set_tree(publish({"a/2/model.bin": b"v2"}))
        await wait.until(lambda: b"v2" in loader.calls, "version 2 is loading")
        assert at_once(cache.get("a")).version == 1
        loader.gate.set()
        await wait.idle(cache)
        assert (await cache.get("a")).version == 2
        assert cache.state("a", 2)["serving_latest"] is True

    run(main())


def test_failing_new_version_never_replaces_the_serving_one(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    tree = publish({"a/1/model.bin": b"v1"})
    loader.fail_on = {b"broken"}

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        await cache.get("a")
        cache.set_tree(publish({"a/2/model.bin": b"broken"}))
        await wait.idle(cache)
        assert (await cache.get("a")).version == 1
        state = cache.state("a", 2)
        assert state["state"] == "failed" and "cannot load b'broken'" in state["reason"]
        # fixed files are retried at once (the clock does not move: no backoff ran out), then served
        cache.set_tree(publish({"a/2/model.bin": b"fixed"}))
        await cache.get("a")
        await wait.idle(cache)
        loaded = await cache.get("a")
        assert (loaded.version, loaded.model) == (2, "fixed")

    run(main())


def test_cold_latest_falls_back_to_the_previous_version(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock
) -> None:
    tree = publish({"a/1/model.bin": b"v1", "a/2/model.bin": b"broken"})
    loader.fail_on = {b"broken"}

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        loaded = await cache.get("a")
        assert (loaded.version, loaded.model) == (1, "v1")
        with pytest.raises(ModelLoadError):  # an explicit request for 2 fails honestly
            await cache.get("a", 2)

    run(main())


def test_removed_latest_falls_back_and_is_freed(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock
) -> None:
    tree = publish({"a/1/model.bin": b"v1", "a/2/model.bin": b"v2"})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        assert (await cache.get("a")).version == 2
        cache.set_tree(publish({"a/2/model.bin": None}))
        assert ("a", 2) not in cache.tiers.in_memory and ("a", 2) not in cache.tiers.on_disk
        assert (await cache.get("a")).version == 1

    run(main())


def test_in_place_update_with_full_tiers_reloads_without_deadlock(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits, at_once: AtOnce
) -> None:
    tree = publish({"a/1/model.bin": b"a-old", "b/1/model.bin": b"b"})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=1, tree=tree, clock=clock)
        assert (await cache.get("a")).model == "a-old"
        cache.set_tree(publish({"a/1/model.bin": b"a-new"}))
        assert at_once(cache.get("a")).model == "a-old"  # the old object serves
        await wait.idle(cache)
        assert (await cache.get("a")).model == "a-new"
        assert (await wait.result(cache.get("b"))).model == "b"  # the tiers still turn over
        assert cache.tiers.in_memory == [("b", 1)] and cache.tiers.on_disk == [("b", 1)]

    run(main())


def test_a_non_string_model_name_is_a_bad_request(publish: Publisher) -> None:
    tree = publish({"a/1/model.bin": b"a1", "b/1/model.bin": b"b1"})
    with pytest.raises(BadRequestError, match="model_name must be a string, got list"):
        resolve_version(tree, ["a"], "1")  # type: ignore[arg-type]
    with pytest.raises(BadRequestError, match="model_name must be a string, got dict"):
        resolve_version(tree, {"a": 1})  # type: ignore[arg-type]


def test_a_failure_nothing_asks_for_again_wakes_nothing_and_a_cold_load_says_it_downloads(
    tmp_path: Path,
    publish: Publisher,
    loader: Loader,
    clock: ManualClock,
    wait: Waits,
    slow_downloads: dict[bytes, threading.Event],
) -> None:
    tree = publish({"a/1/model.bin": b"bad", "b/1/model.bin": b"b1"})
    loader.fail_on = {b"bad"}

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        with pytest.raises(ModelLoadError):
            await cache.get("a", "1")  # a version asked for once, not held, not latest
        await clock.advance(5)
        assert clock.sleepers == 0  # no retry loop waking every second for it
        slow_downloads[b"b1"] = threading.Event()
        b = asyncio.create_task(cache.get("b"))
        await wait.until(
            lambda: cache.tiers.entry_states(("b", 1)) == ("downloading", "downloading"), "b downloads"
        )
        slow_downloads[b"b1"].set()
        assert (await wait.result(b)).model == "b1"
        await cache.close()

    run(main())


def test_a_delta_reconciles_the_models_it_names_as_a_whole_tree_would(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    from cortex_ray.models.delta import apply_delta, delta_between

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"a1", "b/1/model.bin": b"b1", "c/1/model.bin": b"c1"})
        cache = ModelCache(loader, tmp_path, memory_limit=3, disk_limit=3, tree=tree, clock=clock)
        for name in "abc":
            await wait.result(cache.get(name))
        storage = open_storage("mem://cache/models/")
        storage.delete("a/1/model.bin")
        listed = publish({"b/1/model.bin": b"b1, new"})  # a removed, b changed in place, c as it was
        new = ModelTree({**listed.models, "c": tree.models["c"]})  # (the publisher keeps c's object)
        delta = delta_between(tree, new)
        assert sorted(delta.models) == ["a", "b"]
        changes = cache.set_tree(apply_delta(tree, delta), list(delta.models))
        assert [str(c) for c in changes] == [
            "model removed: a",
            "version removed: a v1",
            "version changed: b v1",
        ]
        await wait.idle(cache)
        assert sorted(cache.tiers.in_memory) == [("b", 1), ("c", 1)]
        assert cache.try_get("b").model == "b1, new"  # type: ignore[union-attr]
        assert cache.try_get("c").model == "c1"  # type: ignore[union-attr]
        await cache.close()

    run(main())
