"""The cache's state machine: swaps, slots and limits at every step (issue: fix first, 8-13).

Driven without Ray on the in-memory storage fake, with a loader the test can hold and fail.
"""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.cache import ModelCache, parse_version
from cortex_ray.cache.reclaim import Reclaimer
from cortex_ray.errors import InvalidVersionError, ModelLoadError
from cortex_ray.models import ModelTree, discover_models
from cortex_ray.spec import MultiModelsSpec
from cortex_ray.storage import open_storage
from cortex_ray.storage.memory import reset_memory_storage

URI = "mem://states/models/"


@pytest.fixture(autouse=True)
def _clean_memory() -> Any:
    reset_memory_storage()
    yield
    reset_memory_storage()


def publish(files: dict[str, bytes | None]) -> ModelTree:
    """Upload (or delete, for ``None``) files, then list the tree as the reloader would."""
    s = open_storage(URI)
    for key, data in files.items():
        if data is None:
            s.delete(key)
        else:
            s.upload(key, data)
    return discover_models(MultiModelsSpec(dir=URI), "python")


class Loader:
    """Loads ``model.bin``; the test can hold loads of given contents and make them fail."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.held: dict[bytes, threading.Event] = {}
        self.fail_on: set[bytes] = set()
        self.cache: ModelCache | None = None
        self.max_memory_seen = 0
        self.read_after_hold: list[bytes] = []
        self.active = 0
        self.delay: random.Random | None = None
        self._lock = threading.Lock()

    def hold(self, data: bytes) -> threading.Event:
        self.held[data] = threading.Event()
        return self.held[data]

    def __call__(self, path: str, name: str = "", version: int = 0) -> str:
        with self._lock:
            self.active += 1
        try:
            return self._load(path)
        finally:
            with self._lock:
                self.active -= 1

    def _load(self, path: str) -> str:
        first = (Path(path) / "model.bin").read_bytes()
        self.calls.append(first)
        if self.delay is not None:
            time.sleep(self.delay.random() * 0.02)
        if self.cache is not None:
            self.max_memory_seen = max(self.max_memory_seen, self.cache.memory_used())
        gate = self.held.get(first)
        if gate is not None:
            gate.wait(10)
            data = (Path(path) / "model.bin").read_bytes()  # reads its files again after the wait
            self.read_after_hold.append(data)
        if first in self.fail_on:
            raise RuntimeError(f"cannot load {first!r}")
        return first.decode()


async def idle(cache: ModelCache, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cache.idle:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the cache's downloads and loads did not finish")


async def quickly(coro: Any, seconds: float = 0.5) -> Any:
    """Await ``coro``, failing the test if it had to wait on a load."""
    return await asyncio.wait_for(coro, seconds)


# --- 8: a new version reuses the slot of the version it replaces ----------------


def test_a_new_version_loads_without_evicting_the_one_serving(tmp_path: Path) -> None:
    loader = Loader()

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"v1"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=2, tree=tree)
        loader.cache = cache
        assert (await cache.get("a")).version == 1
        gate = loader.hold(b"v2")
        cache.set_tree(publish({"a/2/model.bin": b"v2"}))
        for _ in range(5):  # while version 2 loads, version 1 serves at once
            assert (await quickly(cache.get("a"))).version == 1
            await asyncio.sleep(0.02)
        assert cache.in_memory == [("a", 1)] and cache.memory_used() == 1
        gate.set()
        await idle(cache)
        assert (await quickly(cache.get("a"))).version == 2
        assert cache.in_memory == [("a", 2)]
        assert loader.calls.count(b"v1") == 1 and loader.max_memory_seen <= 1

    asyncio.run(main())


def test_retries_of_a_broken_version_never_evict_the_one_serving(tmp_path: Path) -> None:
    loader = Loader()
    loader.fail_on = {b"broken"}

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"v1"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=2, tree=tree)
        await cache.get("a")
        cache.set_tree(publish({"a/2/model.bin": b"broken"}))
        deadline = asyncio.get_running_loop().time() + 3.5  # backoff 1 s, 2 s: at least 2 retries
        while asyncio.get_running_loop().time() < deadline:
            loaded = await quickly(cache.get("a"))
            assert (loaded.version, loaded.model) == (1, "v1")
            await asyncio.sleep(0.05)
        assert loader.calls.count(b"broken") >= 2  # retried with backoff
        assert loader.calls.count(b"v1") == 1  # and never reloaded cold
        assert cache.state("a", 2)["state"] == "failed"
        await cache.close()

    asyncio.run(main())


# --- 9: a running load's folder is never deleted under it ------------------------


def test_new_files_landing_during_a_cold_load_never_delete_its_folder(tmp_path: Path) -> None:
    loader = Loader()

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"old"})
        cache = ModelCache(loader, tmp_path, memory_limit=2, disk_limit=2, tree=tree)
        gate = loader.hold(b"old")
        cold = asyncio.create_task(cache.get("a"))
        while not loader.calls:
            await asyncio.sleep(0.01)
        cache.set_tree(publish({"a/1/model.bin": b"new"}))  # not in memory: old folder is stale
        await asyncio.sleep(0.1)
        gate.set()
        loaded = await asyncio.wait_for(cold, 5)  # no FileNotFoundError: the request is served
        assert loaded.model == "new"
        assert loader.read_after_hold == [b"old"]  # the held load could still read its files
        await idle(cache)
        folders = [p.name for p in (tmp_path / "a").iterdir()]
        assert len(folders) == 1  # the old folder went once nothing read it

    asyncio.run(main())


# --- 6: only the published bytes are ever loaded ---------------------------------


def test_files_changed_after_publication_are_not_loaded_as_the_old_version(tmp_path: Path) -> None:
    loader = Loader()

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"v1", "a/2/saved.bin": b"old", "a/2/model.bin": b"v2-old"})
        cache = ModelCache(loader, tmp_path, memory_limit=2, disk_limit=2, tree=tree)
        open_storage(URI).upload("a/2/model.bin", b"v2-new")  # an upload under way, not yet settled
        with pytest.raises(ModelLoadError, match="changed since it was listed"):
            await cache.get("a", "2")  # never a mix of old and new files labelled as the old version
        assert (await cache.get("a")).model == "v1"  # latest falls back to what loads
        assert loader.calls == [b"v1"]
        cache.set_tree(discover_models(MultiModelsSpec(dir=URI), "python"))  # the settled listing
        assert (await cache.get("a", "2")).model == "v2-new"

    asyncio.run(main())


# --- 10: an in-place swap holds its slot ------------------------------------------


def test_an_in_place_swap_keeps_its_slot_so_memory_never_exceeds_the_limit(tmp_path: Path) -> None:
    loader = Loader()

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"a-old", "b/1/model.bin": b"b"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=2, tree=tree)
        loader.cache = cache
        await cache.get("a")
        gate = loader.hold(b"a-new")
        cache.set_tree(publish({"a/1/model.bin": b"a-new"}))
        assert (await quickly(cache.get("a"))).model == "a-old"  # starts the swap, serves the old
        want_b = asyncio.create_task(cache.get("b"))
        for _ in range(10):
            await asyncio.sleep(0.02)
            assert cache.memory_used() <= 1 and len(cache.in_memory) <= 1
        assert not want_b.done()  # b waits for the slot the swap holds
        gate.set()
        assert (await asyncio.wait_for(want_b, 5)).model == "b"
        await idle(cache)
        assert cache.in_memory == [("b", 1)]
        assert loader.max_memory_seen <= 1

    asyncio.run(main())


def test_a_swap_whose_version_is_removed_keeps_its_slot_until_its_load_ends(tmp_path: Path) -> None:
    loader = Loader()

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"a-old", "b/1/model.bin": b"b"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=2, tree=tree)
        await cache.get("a")
        gate = loader.hold(b"a-new")
        cache.set_tree(publish({"a/1/model.bin": b"a-new"}))
        await quickly(cache.get("a"))  # the swap starts
        while loader.active == 0:
            await asyncio.sleep(0.01)
        cache.set_tree(publish({"a/1/model.bin": None}))  # a is removed while its new files load
        assert cache.in_memory == []
        want_b = asyncio.create_task(cache.get("b"))
        await asyncio.sleep(0.1)
        assert not want_b.done() and cache.memory_used() == 1  # the running load still holds it
        gate.set()
        assert (await asyncio.wait_for(want_b, 5)).model == "b"
        await idle(cache)
        assert cache.in_memory == [("b", 1)]

    asyncio.run(main())


# --- 11: unloads never collect garbage on the event loop --------------------------


class Cyclic:
    def __init__(self) -> None:
        self.me = self


class Plain:
    pass


def test_unloads_in_a_burst_collect_once_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real_collect = gc.collect

    def collect(*args: Any) -> int:
        threads.append(threading.get_ident())
        return real_collect(*args)

    monkeypatch.setattr(gc, "collect", collect)

    async def main() -> None:
        loop_thread = threading.get_ident()
        reclaimer = Reclaimer(delay=0.05, min_interval=0.0)
        for _ in range(5):
            reclaimer.release(Cyclic())
        assert threads == []  # nothing on the loop, nothing yet
        await asyncio.sleep(0.3)
        assert len(threads) == 1 and threads[0] != loop_thread
        for _ in range(5):
            reclaimer.release(Plain())  # freed by reference counting: no collection needed
        await asyncio.sleep(0.3)
        assert len(threads) == 1
        assert reclaimer.stats()["freed_by_refcount"] >= 5

    asyncio.run(main())


# --- 12: the event loop's lookup follows the same rules ---------------------------


def test_try_get_serves_the_held_version_while_a_new_one_loads_or_fails(tmp_path: Path) -> None:
    loader = Loader()
    loader.fail_on = {b"broken"}

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=publish({"a/1/model.bin": b"v1"}))
        await cache.get("a")
        gate = loader.hold(b"v2")
        cache.set_tree(publish({"a/2/model.bin": b"v2"}))
        held = cache.try_get("a", "latest")
        assert held is not None and held.version == 1  # v2 loading: v1 still serves
        gate.set()
        await idle(cache)
        assert cache.try_get("a").version == 2  # type: ignore[union-attr]
        cache.set_tree(publish({"a/3/model.bin": b"broken"}))
        await idle(cache)
        assert cache.try_get("a").version == 2  # type: ignore[union-attr]  # v3 broken: v2 serves
        assert cache.try_get("a", "1") is None  # not held: needs a load, which try_get never does
        await cache.close()

    asyncio.run(main())


# --- 13: a successful lookup does not build per-tree lists ------------------------


def test_lookups_do_not_sort_or_join_the_model_names(tmp_path: Path) -> None:
    files: dict[str, bytes | None] = {f"m{i}/1/model.bin": b"x" for i in range(300)}
    tree = publish(files)
    loader = Loader()

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=tree)
        await cache.get("m7")
        for _ in range(50):
            cache.try_get("m7")
            cache.try_get("m7", "1")
        assert "names" not in tree.__dict__  # the sorted name list was never built
        assert tree.models["m7"].__dict__.get("candidates") == (1,)  # computed once, kept

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


SEEDS = int(__import__("os").environ.get("CORTEX_RAY_CACHE_SEEDS", "12"))


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_traffic_and_trees_never_break_a_limit(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cortex_ray.storage import memory

    rng = random.Random(seed)
    slow = random.Random(seed + 1000)
    original = memory.MemoryStorage._download_object

    def download(self: Any, key: str, dest: Path, expected: Any) -> None:
        time.sleep(slow.random() * 0.01)  # downloads interleave with loads, swaps and new trees
        original(self, key, dest, expected)

    monkeypatch.setattr(memory.MemoryStorage, "_download_object", download)
    memory_limit, disk_limit = rng.choice([(1, 1), (1, 2), (2, 3), (3, 3)])
    loader = Loader()
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

    async def check(cache: ModelCache) -> None:
        assert cache.memory_used() <= memory_limit
        assert len(cache.in_memory) <= memory_limit
        assert cache.disk_used() <= disk_limit
        assert loader.max_memory_seen <= memory_limit
        # objects in memory plus loads building one: over the limit only by the swaps, whose
        # new object shares the slot of the one it replaces until it lands
        sharing = sum(
            1 for e in cache._entries.values() if e.borrowed_from or (e.loaded and e.load is not None)
        )
        assert len(cache.in_memory) + loader.active - sharing <= memory_limit

    async def request(cache: ModelCache) -> None:
        name = rng.choice(names)
        version = rng.choice(["latest", "latest", "1", "2"])
        try:
            loaded = await asyncio.wait_for(cache.get(name, version), 10)
        except ModelLoadError:
            return
        except Exception as exc:  # 404s for versions that do not exist are fine
            assert getattr(exc, "status_code", 500) in (400, 404), exc
            return
        assert not loaded.model.startswith("bad-")

    async def main() -> None:
        for name in names:
            contents[f"{name}/1/model.bin"] = f"{name}1-init".encode()
        cache = ModelCache(loader, tmp_path, memory_limit, disk_limit, tree=publish(dict(contents)))
        loader.cache = cache
        for _ in range(60):
            if rng.random() < 0.3:
                cache.set_tree(publish(step_tree()))
            burst = [asyncio.create_task(request(cache)) for _ in range(rng.randint(1, 4))]
            while not all(t.done() for t in burst):
                await check(cache)
                await asyncio.sleep(0.001)
            for t in burst:
                t.result()
            await check(cache)
        await idle(cache, 20)
        await check(cache)
        folders = [v for m in tmp_path.iterdir() for v in m.iterdir() if not v.name.startswith(".")]
        assert len(folders) <= disk_limit
        await cache.close()

    asyncio.run(main())


# --- sequences a review found (slow downloads interleaved with swaps) ------------------


@pytest.fixture
def slow_downloads(monkeypatch: pytest.MonkeyPatch) -> dict[bytes, threading.Event]:
    """Downloads of an object whose content is a key of the returned dict wait for its event."""
    from cortex_ray.storage import memory

    gates: dict[bytes, threading.Event] = {}
    original = memory.MemoryStorage._download_object

    def download(self: Any, key: str, dest: Path, expected: Any) -> None:
        gate = gates.get(self._get(key).data)
        if gate is not None:
            gate.wait(10)
        original(self, key, dest, expected)

    monkeypatch.setattr(memory.MemoryStorage, "_download_object", download)
    return gates


async def until(condition: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


def test_the_version_serving_never_swaps_while_a_new_latest_borrows_its_slot(
    tmp_path: Path, slow_downloads: dict[bytes, threading.Event]
) -> None:
    loader = Loader()

    async def main() -> None:
        cache = ModelCache(
            loader, tmp_path, memory_limit=1, disk_limit=3, tree=publish({"a/1/model.bin": b"v1"})
        )
        await cache.get("a")
        v2 = loader.hold(b"v2")
        cache.set_tree(publish({"a/2/model.bin": b"v2"}))
        await until(lambda: b"v2" in loader.calls)
        slow_downloads[b"v1-new"] = threading.Event()
        cache.set_tree(publish({"a/1/model.bin": b"v1-new"}))  # the lender's own files change too
        v2.set()
        await until(lambda: cache.held(("a", 2)) is not None)
        slow_downloads[b"v1-new"].set()
        for version in ("latest", "2", "1"):  # nothing hangs, the limit holds
            assert (await asyncio.wait_for(cache.get("a", version), 3)).model in ("v2", "v1-new")
            assert cache.memory_used() <= 1 and len(cache.in_memory) <= 1
        await cache.close()

    asyncio.run(main())


def test_equal_limits_with_a_swap_and_a_cold_load_do_not_deadlock(
    tmp_path: Path, slow_downloads: dict[bytes, threading.Event]
) -> None:
    loader = Loader()

    async def main() -> None:
        tree = publish({"y/1/model.bin": b"y", "x/1/model.bin": b"x"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=1, tree=tree)
        await cache.get("y")
        slow_downloads[b"x"] = threading.Event()
        want_x = asyncio.create_task(cache.get("x"))
        await asyncio.sleep(0.05)  # x downloading: it holds the only disk slot
        cache.set_tree(publish({"y/1/model.bin": b"y2"}))  # y swaps: it needs the disk slot too
        assert cache.try_get("y").model == "y"  # type: ignore[union-attr]
        slow_downloads[b"x"].set()
        assert (await asyncio.wait_for(want_x, 5)).model == "x"
        assert (await asyncio.wait_for(cache.get("y"), 5)).model == "y2"
        await idle(cache)
        assert cache.disk_used() <= 1
        await cache.close()

    asyncio.run(main())


def test_two_new_versions_in_a_row_keep_latest_pointing_at_a_held_version(tmp_path: Path) -> None:
    loader = Loader()

    async def main() -> None:
        cache = ModelCache(
            loader, tmp_path, memory_limit=1, disk_limit=3, tree=publish({"a/1/model.bin": b"v1"})
        )
        await cache.get("a")
        v2, v3 = loader.hold(b"v2"), loader.hold(b"v3")
        cache.set_tree(publish({"a/2/model.bin": b"v2"}))
        cache.try_get("a")
        await until(lambda: b"v2" in loader.calls)
        cache.set_tree(publish({"a/3/model.bin": b"v3"}))
        v2.set()
        await until(lambda: cache.held(("a", 2)) is not None)
        held = cache.try_get("a")  # what a sync get_model on the event loop gets: never None
        assert held is not None and held.version == 2
        assert (await quickly(cache.get("a"))).version == 2  # no request waits for v3
        v3.set()
        await idle(cache)
        assert (await quickly(cache.get("a"))).version == 3 and cache.in_memory == [("a", 3)]
        assert loader.calls.count(b"v1") == 1 and loader.calls.count(b"v2") == 1

    asyncio.run(main())


def test_changed_files_and_a_new_version_at_once_never_evict_the_one_serving(tmp_path: Path) -> None:
    loader = Loader()

    async def main() -> None:
        cache = ModelCache(
            loader, tmp_path, memory_limit=1, disk_limit=3, tree=publish({"a/1/model.bin": b"v1"})
        )
        await cache.get("a")
        v1b, v2 = loader.hold(b"v1b"), loader.hold(b"v2")
        cache.set_tree(publish({"a/1/model.bin": b"v1b", "a/2/model.bin": b"v2"}))
        cache.try_get("a")
        await until(lambda: b"v1b" in loader.calls)
        v1b.set()
        await until(lambda: b"v2" in loader.calls)
        assert cache.in_memory == [("a", 1)]  # v2 borrowed v1's slot once v1's swap was done
        assert (await quickly(cache.get("a"))).model == "v1b"
        v2.set()
        await idle(cache)
        assert (await quickly(cache.get("a"))).version == 2

    asyncio.run(main())


def test_a_queued_load_of_a_removed_version_evicts_nothing(tmp_path: Path) -> None:
    loader = Loader()

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"a1", "b/1/model.bin": b"b1"})
        cache = ModelCache(loader, tmp_path, memory_limit=1, disk_limit=3, tree=tree)
        await cache.get("a")
        a2 = loader.hold(b"a2")
        cache.set_tree(publish({"a/1/model.bin": b"a2"}))
        cache.try_get("a")  # a swaps: its slot is busy
        want_b = asyncio.create_task(cache.get("b"))  # b queues for the slot
        await asyncio.sleep(0.05)
        cache.set_tree(publish({"b/1/model.bin": None}))  # b is removed while it waits
        a2.set()
        with pytest.raises(Exception) as info:
            await asyncio.wait_for(want_b, 5)
        assert getattr(info.value, "status_code", None) == 404
        await idle(cache)
        assert cache.in_memory == [("a", 1)] and b"b1" not in loader.calls

    asyncio.run(main())


def test_closing_fails_what_waits_instead_of_hanging(tmp_path: Path) -> None:
    loader = Loader()

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, tree=publish({"a/1/model.bin": b"a"}))
        gate = loader.hold(b"a")
        waiting = asyncio.create_task(cache.get("a"))
        await until(lambda: bool(loader.calls))
        await cache.close()
        with pytest.raises(ModelLoadError, match="shutting down"):
            await asyncio.wait_for(waiting, 2)
        gate.set()

    asyncio.run(main())
