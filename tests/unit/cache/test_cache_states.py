"""The cache's state machine: swaps, slots and limits at every step (issue: fix first, 8-13).

Driven without Ray on the in-memory storage fake, with a loader the test can hold and fail, on a
manual clock (helpers: the fixtures of conftest.py).
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cortex_ray.cache import ModelCache, parse_version
from cortex_ray.cache.reclaim import Reclaimer
from cortex_ray.errors import InvalidVersionError, ModelLoadError

if TYPE_CHECKING:
    from cortex_ray.clock import ManualClock
    from tests.unit.cache.conftest import AtOnce, Loader, Publisher, Waits


# --- 8: a new version reuses the slot of the version it replaces ----------------


def test_a_new_version_loads_without_evicting_the_one_serving(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits, at_once: AtOnce
) -> None:
    async def main() -> None:
        tree = publish({"a/1/model.bin": b"v1"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=2, tree=tree, clock=clock)
        loader.watch(cache)
        assert (await cache.get("a")).version == 1
        gate = loader.hold(b"v2")
        cache.set_tree(publish({"a/2/model.bin": b"v2"}))
        assert at_once(cache.get("a")).version == 1
        await wait.until(lambda: b"v2" in loader.calls, "version 2 is loading")
        for _ in range(5):  # while version 2 loads, version 1 serves at once
            assert at_once(cache.get("a")).version == 1
        assert cache.tiers.in_memory == [("a", 1)] and cache.tiers.memory_used() == 1
        gate.set()
        await wait.idle(cache)
        assert at_once(cache.get("a")).version == 2
        assert cache.tiers.in_memory == [("a", 2)]
        assert loader.calls.count(b"v1") == 1 and loader.max_memory_seen <= 1

    asyncio.run(main())


def test_retries_of_a_broken_version_never_evict_the_one_serving(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits, at_once: AtOnce
) -> None:
    loader.fail_on = {b"broken"}

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"v1"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=2, tree=tree, clock=clock)
        await cache.get("a")
        cache.set_tree(publish({"a/2/model.bin": b"broken"}))
        await wait.idle(cache)  # the first try failed

        def serving_v1() -> None:
            loaded = at_once(cache.get("a"))
            assert (loaded.version, loaded.model) == (1, "v1")
            assert cache.tiers.in_memory == [("a", 1)]

        for _ in range(7):  # 3.5 s in half seconds; backoff 1 s, then 2 s: retries at 1 s and 3 s
            serving_v1()
            await clock.advance(0.5)
            serving_v1()  # a retry may be loading now
            await wait.idle(cache)
        assert loader.calls.count(b"broken") == 3  # retried with backoff
        assert loader.calls.count(b"v1") == 1  # and never reloaded cold
        state = cache.state("a", 2)
        assert state["state"] == "failed" and state["attempts"] == 3
        await cache.close()

    asyncio.run(main())


# --- 9: a running load's folder is never deleted under it ------------------------


def test_new_files_landing_during_a_cold_load_never_delete_its_folder(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        tree = publish({"a/1/model.bin": b"old"})
        cache = ModelCache(loader, tmp_path, memory_limit=2, disk_limit=2, tree=tree, clock=clock)
        gate = loader.hold(b"old")
        cold = asyncio.create_task(cache.get("a"))
        await wait.until(lambda: loader.calls == [b"old"], "the cold load reads its files")
        before = asyncio.all_tasks()
        cache.set_tree(publish({"a/1/model.bin": b"new"}))  # not in memory: old folder is stale
        await wait.drained(before)  # a removal of its folder, had one started, is done
        assert cache.tiers.disk_used() == 1  # the folder being read still holds its slot
        gate.set()
        loaded = await wait.result(cold)  # no FileNotFoundError: the request is served
        assert loaded.model == "new"
        assert loader.read_after_hold == [b"old"]  # the held load could still read its files
        await wait.idle(cache)
        folders = [p.name for p in (tmp_path / "a").iterdir()]
        assert len(folders) == 1  # the old folder went once nothing read it

    asyncio.run(main())


# --- 6: only the published bytes are ever loaded ---------------------------------


def test_files_changed_after_publication_are_not_loaded_as_the_old_version(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock
) -> None:
    async def main() -> None:
        tree = publish({"a/1/model.bin": b"v1", "a/2/saved.bin": b"old", "a/2/model.bin": b"v2-old"})
        cache = ModelCache(loader, tmp_path, memory_limit=2, disk_limit=2, tree=tree, clock=clock)
        publish.upload({"a/2/model.bin": b"v2-new"})  # an upload under way, not yet settled
        with pytest.raises(ModelLoadError, match="changed since it was listed"):
            await cache.get("a", "2")  # never a mix of old and new files labelled as the old version
        assert (await cache.get("a")).model == "v1"  # latest falls back to what loads
        assert loader.calls == [b"v1"]
        cache.set_tree(publish())  # the settled listing
        assert (await cache.get("a", "2")).model == "v2-new"

    asyncio.run(main())


# --- 10: an in-place swap holds its slot ------------------------------------------


def test_an_in_place_swap_keeps_its_slot_so_memory_never_exceeds_the_limit(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits, at_once: AtOnce
) -> None:
    async def main() -> None:
        tree = publish({"a/1/model.bin": b"a-old", "b/1/model.bin": b"b"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=2, tree=tree, clock=clock)
        loader.watch(cache)
        await cache.get("a")
        gate = loader.hold(b"a-new")
        cache.set_tree(publish({"a/1/model.bin": b"a-new"}))
        assert at_once(cache.get("a")).model == "a-old"  # serves the old while the swap runs
        want_b = asyncio.create_task(cache.get("b"))

        def b_waits_for_the_slot() -> bool:
            assert cache.tiers.memory_used() <= 1 and len(cache.tiers.in_memory) <= 1  # at every step
            return b"a-new" in loader.calls and cache.tiers.entry_states(("b", 1)) == ("queued", "on_disk")

        await wait.until(b_waits_for_the_slot, "b's files are on disk and its load queues for memory")
        await wait.turns()  # had b's reservation taken the swap's slot, it would have by now
        assert b_waits_for_the_slot()
        assert not want_b.done() and b"b" not in loader.calls  # b waits for the slot the swap holds
        gate.set()
        assert (await wait.result(want_b)).model == "b"
        await wait.idle(cache)
        assert cache.tiers.in_memory == [("b", 1)]
        assert loader.max_memory_seen <= 1

    asyncio.run(main())


def test_a_swap_whose_version_is_removed_keeps_its_slot_until_its_load_ends(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits, at_once: AtOnce
) -> None:
    async def main() -> None:
        tree = publish({"a/1/model.bin": b"a-old", "b/1/model.bin": b"b"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=2, tree=tree, clock=clock)
        await cache.get("a")
        gate = loader.hold(b"a-new")
        cache.set_tree(publish({"a/1/model.bin": b"a-new"}))
        at_once(cache.get("a"))  # the swap starts
        await wait.until(lambda: loader.active == 1, "the swap's load runs")
        cache.set_tree(publish({"a/1/model.bin": None}))  # a is removed while its new files load
        assert cache.tiers.in_memory == []
        want_b = asyncio.create_task(cache.get("b"))
        await wait.until(
            lambda: cache.tiers.entry_states(("b", 1)) == ("queued", "on_disk"), "b's load queues for memory"
        )
        await wait.turns()
        assert cache.tiers.entry_states(("b", 1))[0] == "queued"
        assert not want_b.done() and cache.tiers.memory_used() == 1  # the running load still holds it
        assert b"b" not in loader.calls
        gate.set()
        assert (await wait.result(want_b)).model == "b"
        await wait.idle(cache)
        assert cache.tiers.in_memory == [("b", 1)]

    asyncio.run(main())


# --- 11: unloads never collect garbage on the event loop --------------------------


class Cyclic:
    def __init__(self) -> None:
        self.me = self


class Plain:
    pass


def test_unloads_in_a_burst_collect_once_off_the_loop(
    monkeypatch: pytest.MonkeyPatch, clock: ManualClock, wait: Waits
) -> None:
    threads: list[int] = []
    real_collect = gc.collect

    def collect(*args: Any) -> int:
        threads.append(threading.get_ident())
        return real_collect(*args)

    monkeypatch.setattr(gc, "collect", collect)

    async def main() -> None:
        loop_thread = threading.get_ident()
        reclaimer = Reclaimer(delay=1.0, min_interval=0.0, clock=clock)
        before = asyncio.all_tasks()
        for _ in range(5):
            reclaimer.release(Cyclic())
        assert threads == []  # nothing on the loop, nothing yet
        await wait.until(lambda: clock.sleepers == 1, "the reclaimer waits for its delay")
        await clock.advance(0.5)
        assert threads == []  # not before its delay
        await clock.advance(0.5)
        await wait.drained(before)  # its pass ended
        assert len(threads) == 1 and threads[0] != loop_thread
        assert reclaimer.stats()["collections"] == 1
        for _ in range(5):
            reclaimer.release(Plain())  # freed by reference counting: no collection needed
        await wait.until(lambda: clock.sleepers == 1, "the reclaimer waits for its delay")
        await clock.advance(1.0)
        await wait.drained(before)
        assert len(threads) == 1
        assert reclaimer.stats()["freed_by_refcount"] >= 5

    asyncio.run(main())


# --- 12: the event loop's lookup follows the same rules ---------------------------


def test_try_get_serves_the_held_version_while_a_new_one_loads_or_fails(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    loader.fail_on = {b"broken"}

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=publish({"a/1/model.bin": b"v1"}), clock=clock)
        await cache.get("a")
        gate = loader.hold(b"v2")
        cache.set_tree(publish({"a/2/model.bin": b"v2"}))
        held = cache.try_get("a", "latest")
        assert held is not None and held.version == 1  # v2 loading: v1 still serves
        await wait.until(lambda: b"v2" in loader.calls, "version 2 is loading")
        held = cache.try_get("a", "latest")
        assert held is not None and held.version == 1
        gate.set()
        await wait.idle(cache)
        assert cache.try_get("a").version == 2  # type: ignore[union-attr]
        cache.set_tree(publish({"a/3/model.bin": b"broken"}))
        await wait.idle(cache)
        assert b"broken" in loader.calls
        assert cache.try_get("a").version == 2  # type: ignore[union-attr]  # v3 broken: v2 serves
        assert cache.try_get("a", "1") is None  # not held: needs a load, which try_get never does
        await cache.close()

    asyncio.run(main())


# --- 13: a successful lookup does not build per-tree lists ------------------------


def test_lookups_do_not_sort_or_join_the_model_names(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock
) -> None:
    tree = publish({f"m{i}/1/model.bin": b"x" for i in range(300)})

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree, clock=clock)
        await cache.get("m7")
        for _ in range(50):
            cache.try_get("m7")
            cache.try_get("m7", "1")
        assert "names" not in tree.__dict__  # the sorted name list was never built
        m7 = tree.models["m7"]
        assert m7.candidates == (1,) and m7.candidates is m7.candidates  # computed once, kept

    asyncio.run(main())


# --- 14: versions --------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["²", "\u0661", "9" * 5000, "-1", "1.0", "0x10", "", True, -3, 10**20, 1.5])
def test_only_latest_or_a_decimal_integer_is_a_version(bad: Any) -> None:
    with pytest.raises(InvalidVersionError) as info:
        parse_version(bad)
    assert info.value.status_code == 400
    assert len(str(info.value)) < 300


def test_valid_versions_parse() -> None:
    assert parse_version("latest") is None and parse_version(None) is None
    assert parse_version(" 12 ") == 12 and parse_version(7) == 7 and parse_version("007") == 7


# --- every limit at every step -----------------------------------------------------


SEEDS = int(os.environ.get("CORTEX_RAY_CACHE_SEEDS", "12"))


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_traffic_and_trees_never_break_a_limit(
    tmp_path: Path,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
    publish: Publisher,
    loader: Loader,
    clock: ManualClock,
    wait: Waits,
) -> None:
    from cortex_ray.storage import memory

    rng = random.Random(seed)
    slow = random.Random(seed + 1000)
    ticks = random.Random(seed + 2000)
    original = memory.MemoryStorage._download_object

    def download(self: Any, key: str, dest: Path, expected: Any) -> None:
        time.sleep(slow.random() * 0.01)  # downloads interleave with loads, swaps and new trees
        original(self, key, dest, expected)

    monkeypatch.setattr(memory.MemoryStorage, "_download_object", download)
    memory_limit, disk_limit = rng.choice([(1, 1), (1, 2), (2, 3), (3, 3)])
    loader.delay = random.Random(seed)
    names = ["a", "b", "c", "d"]
    contents: dict[str, bytes | None] = {}

    def step_tree() -> dict[str, bytes | None]:
        change: dict[str, bytes | None] = {}
        name, version = rng.choice(names), rng.randint(1, 3)
        key = f"{name}/{version}/model.bin"
        roll = rng.random()
        if roll < 0.15 and contents.get(key):
            change[key] = None
        elif roll < 0.25:
            change[key] = b"bad-" + bytes(str(rng.random()), "ascii")
            loader.fail_on.add(change[key])  # type: ignore[arg-type]
        else:
            change[key] = bytes(f"{name}{version}-{rng.random()}", "ascii")
        contents.update(change)
        return change

    def check(cache: ModelCache) -> None:
        assert cache.tiers.memory_used() <= memory_limit
        assert len(cache.tiers.in_memory) <= memory_limit
        assert cache.tiers.disk_used() <= disk_limit
        assert loader.max_memory_seen <= memory_limit
        # objects in memory plus loads building one: over the limit only by the swaps, whose
        # new object shares the slot of the one it replaces until it lands
        sharing = sum(
            1 for e in cache.tiers._entries.values() if e.borrowed_from or (e.loaded and e.load is not None)
        )
        assert len(cache.tiers.in_memory) + loader.active - sharing <= memory_limit

    async def request(cache: ModelCache) -> None:
        name = rng.choice(names)
        version = rng.choice(["latest", "latest", "1", "2"])
        try:
            loaded = await wait.result(cache.get(name, version))
        except ModelLoadError:
            return
        except Exception as exc:  # 404s for versions that do not exist are fine
            assert getattr(exc, "status_code", 500) in (400, 404), exc
            return
        assert not loaded.model.startswith("bad-")

    async def answered(cache: ModelCache, burst: list[asyncio.Task[None]]) -> None:
        def done() -> bool:
            check(cache)  # at every step while the burst runs
            return all(t.done() for t in burst)

        await wait.until(done, "the requests were answered")
        for t in burst:
            t.result()

    async def main() -> None:
        for name in names:
            contents[f"{name}/1/model.bin"] = f"{name}1-init".encode()
        cache = ModelCache(
            loader, tmp_path, memory_limit, disk_limit, tree=publish(dict(contents)), clock=clock
        )
        loader.watch(cache)
        for _ in range(60):
            if rng.random() < 0.3:
                cache.set_tree(publish(step_tree()))
            await answered(cache, [asyncio.create_task(request(cache)) for _ in range(rng.randint(1, 4))])
            check(cache)
            # time moves on by the seed, not by the machine: now and then backoffs run out,
            # failed versions still asked for are retried, unloaded objects are reclaimed
            if ticks.random() < 0.25:
                await clock.advance(ticks.choice([0.5, 1.0, 2.0]))
            check(cache)
        await wait.idle(cache)
        check(cache)
        folders = [v for m in tmp_path.iterdir() for v in m.iterdir() if not v.name.startswith(".")]
        assert len(folders) <= disk_limit
        await cache.close()

    asyncio.run(main())


# --- sequences a review found (slow downloads interleaved with swaps) ------------------


def test_the_version_serving_never_swaps_while_a_new_latest_borrows_its_slot(
    tmp_path: Path,
    slow_downloads: dict[bytes, threading.Event],
    publish: Publisher,
    loader: Loader,
    clock: ManualClock,
    wait: Waits,
) -> None:
    async def main() -> None:
        cache = ModelCache(
            loader,
            tmp_path,
            memory_limit=1,
            disk_limit=3,
            tree=publish({"a/1/model.bin": b"v1"}),
            clock=clock,
        )
        await cache.get("a")
        v2 = loader.hold(b"v2")
        cache.set_tree(publish({"a/2/model.bin": b"v2"}))
        await wait.until(lambda: b"v2" in loader.calls, "version 2 is loading")
        slow_downloads[b"v1-new"] = threading.Event()
        cache.set_tree(publish({"a/1/model.bin": b"v1-new"}))  # the lender's own files change too
        v2.set()
        await wait.until(lambda: cache.tiers.held(("a", 2)) is not None, "version 2 is in memory")
        slow_downloads[b"v1-new"].set()
        for version in ("latest", "2", "1"):  # nothing hangs, the limit holds
            assert (await wait.result(cache.get("a", version))).model in ("v2", "v1-new")
            assert cache.tiers.memory_used() <= 1 and len(cache.tiers.in_memory) <= 1
        await cache.close()

    asyncio.run(main())


def test_equal_limits_with_a_swap_and_a_cold_load_do_not_deadlock(
    tmp_path: Path,
    slow_downloads: dict[bytes, threading.Event],
    publish: Publisher,
    loader: Loader,
    clock: ManualClock,
    wait: Waits,
) -> None:
    async def main() -> None:
        tree = publish({"y/1/model.bin": b"y", "x/1/model.bin": b"x"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=1, tree=tree, clock=clock)
        await cache.get("y")
        slow_downloads[b"x"] = threading.Event()
        want_x = asyncio.create_task(cache.get("x"))
        await wait.until(  # x downloading: it holds the only disk slot
            lambda: cache.tiers.entry_states(("x", 1))[1] == "downloading", "x downloads"
        )
        cache.set_tree(publish({"y/1/model.bin": b"y2"}))  # y swaps: it needs the disk slot too
        assert cache.try_get("y").model == "y"  # type: ignore[union-attr]
        slow_downloads[b"x"].set()
        assert (await wait.result(want_x)).model == "x"
        assert (await wait.result(cache.get("y"))).model == "y2"
        await wait.idle(cache)
        assert cache.tiers.disk_used() <= 1
        await cache.close()

    asyncio.run(main())


def test_two_new_versions_in_a_row_keep_latest_pointing_at_a_held_version(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits, at_once: AtOnce
) -> None:
    async def main() -> None:
        cache = ModelCache(
            loader,
            tmp_path,
            memory_limit=1,
            disk_limit=3,
            tree=publish({"a/1/model.bin": b"v1"}),
            clock=clock,
        )
        await cache.get("a")
        v2, v3 = loader.hold(b"v2"), loader.hold(b"v3")
        cache.set_tree(publish({"a/2/model.bin": b"v2"}))
        cache.try_get("a")
        await wait.until(lambda: b"v2" in loader.calls, "version 2 is loading")
        cache.set_tree(publish({"a/3/model.bin": b"v3"}))
        v2.set()
        await wait.until(lambda: cache.tiers.held(("a", 2)) is not None, "version 2 is in memory")
        held = cache.try_get("a")  # what a sync get_model on the event loop gets: never None
        assert held is not None and held.version == 2
        assert at_once(cache.get("a")).version == 2  # no request waits for v3
        v3.set()
        await wait.idle(cache)
        assert at_once(cache.get("a")).version == 3 and cache.tiers.in_memory == [("a", 3)]
        assert loader.calls.count(b"v1") == 1 and loader.calls.count(b"v2") == 1

    asyncio.run(main())


def test_changed_files_and_a_new_version_at_once_never_evict_the_one_serving(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits, at_once: AtOnce
) -> None:
    async def main() -> None:
        cache = ModelCache(
            loader,
            tmp_path,
            memory_limit=1,
            disk_limit=3,
            tree=publish({"a/1/model.bin": b"v1"}),
            clock=clock,
        )
        await cache.get("a")
        v1b, v2 = loader.hold(b"v1b"), loader.hold(b"v2")
        cache.set_tree(publish({"a/1/model.bin": b"v1b", "a/2/model.bin": b"v2"}))
        cache.try_get("a")
        await wait.until(lambda: b"v1b" in loader.calls, "version 1's new files are loading")
        v1b.set()
        await wait.until(lambda: b"v2" in loader.calls, "version 2 is loading")
        assert cache.tiers.in_memory == [("a", 1)]  # v2 borrowed v1's slot once v1's swap was done
        assert at_once(cache.get("a")).model == "v1b"
        v2.set()
        await wait.idle(cache)
        assert at_once(cache.get("a")).version == 2

    asyncio.run(main())


def test_a_queued_load_of_a_removed_version_evicts_nothing(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        tree = publish({"a/1/model.bin": b"a1", "b/1/model.bin": b"b1"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=3, tree=tree, clock=clock)
        await cache.get("a")
        a2 = loader.hold(b"a2")
        cache.set_tree(publish({"a/1/model.bin": b"a2"}))
        cache.try_get("a")  # a swaps: its slot is busy
        want_b = asyncio.create_task(cache.get("b"))  # b queues for the slot
        await wait.until(
            lambda: cache.tiers.entry_states(("b", 1)) == ("queued", "on_disk"), "b's load queues for memory"
        )
        await wait.turns()
        assert cache.tiers.entry_states(("b", 1))[0] == "queued" and not want_b.done()
        cache.set_tree(publish({"b/1/model.bin": None}))  # b is removed while it waits
        a2.set()
        with pytest.raises(Exception) as info:
            await wait.result(want_b)
        assert getattr(info.value, "status_code", None) == 404
        await wait.idle(cache)
        assert cache.tiers.in_memory == [("a", 1)] and b"b1" not in loader.calls

    asyncio.run(main())


def test_closing_fails_what_waits_instead_of_hanging(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=publish({"a/1/model.bin": b"a"}), clock=clock)
        gate = loader.hold(b"a")
        waiting = asyncio.create_task(cache.get("a"))
        await wait.until(lambda: bool(loader.calls), "the load runs")
        await cache.close()
        with pytest.raises(ModelLoadError, match="shutting down"):
            await wait.result(waiting)
        gate.set()

    asyncio.run(main())
