"""Budgets in bytes: sizes stated, measured or estimated; the budget holds at every moment, in-
flight loads included; a model bigger than the budget fails clearly; swaps load beside the
version they replace only when nothing else can make room. Helpers are conftest.py's."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cortex_ray.cache import ModelCache
from cortex_ray.cache.sizes import LoadMeter, Measured, cuda_allocated
from cortex_ray.errors import CacheFullError, ModelLoadError
from cortex_ray.spec.quantity import Budget

if TYPE_CHECKING:
    from cortex_ray.clock import ManualClock
    from tests.unit.cache.conftest import Publisher, Waits


class Sized:
    """A model whose ``load_model`` states its size (``model.bin`` holds ``name:bytes``)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.cortex_size_bytes = int(text.split(":")[1])


class SizedLoader:
    def __init__(self) -> None:
        self.gate: threading.Event | None = None
        self.cache: ModelCache | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.used_during_loads: list[int] = []

    def __call__(self, path: str, name: str, version: int) -> Any:
        if self.cache is not None and self.loop is not None:  # what the cache counts while this loads
            used = asyncio.run_coroutine_threadsafe(self._used(), self.loop).result(10)
            self.used_during_loads.append(used)
        if self.gate is not None:
            self.gate.wait(30)
        text = (Path(path) / "model.bin").read_text()
        return Sized(text) if ":" in text else text

    async def _used(self) -> int:
        assert self.cache is not None
        return self.cache.tiers.memory_used()


def files(**sizes: int) -> dict[str, bytes | None]:
    return {f"{name}/1/model.bin": f"{name}:{size}".encode() for name, size in sizes.items()}


def cache_of(
    publish: Publisher, loader: SizedLoader, root: Path, clock: ManualClock, tree: Any, memory: int
) -> ModelCache:
    cache = ModelCache(
        loader, root, tree=tree, clock=clock, memory=Budget(memory, "bytes"), disk=Budget(10**6, "bytes")
    )
    loader.cache, loader.loop = cache, asyncio.get_running_loop()
    return cache


def test_models_of_different_sizes_share_a_byte_budget_which_holds_at_every_moment(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        loader = SizedLoader()
        cache = cache_of(publish, loader, tmp_path, clock, publish(files(a=600, b=300, c=500, d=50)), 1000)
        for name in "ab":
            await wait.result(cache.get(name))
        assert cache.tiers.memory_used() == 900 and cache.state("a", 1)["size_source"] == "stated"
        await wait.result(cache.get("b"))  # b more used than a
        await wait.result(cache.get("c"))  # 500 more: a (600) goes, b stays
        assert sorted(cache.tiers.in_memory) == [("b", 1), ("c", 1)] and cache.tiers.memory_used() == 800
        await wait.result(cache.get("d"))  # 50 fits beside them: nothing goes
        assert (
            sorted(cache.tiers.in_memory) == [("b", 1), ("c", 1), ("d", 1)]
            and cache.tiers.memory_used() == 850
        )
        assert max(loader.used_during_loads) <= 1000  # reservations included, at every load
        await cache.close()

    asyncio.run(main())


def test_the_estimate_is_reserved_before_the_load_and_corrected_after(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        loader = SizedLoader()
        tree = publish(files(a=700, b=500))  # files of 5 bytes; a states 700 once loaded
        cache = cache_of(publish, loader, tmp_path, clock, tree, 1000)
        loader.gate = threading.Event()
        loading = asyncio.create_task(cache.get("a"))
        await wait.until(lambda: loader.used_during_loads, "a's load started")
        assert loader.used_during_loads == [5]  # its files' size, reserved while it loads
        loader.gate.set()
        await wait.result(loading)
        assert cache.tiers.memory_used() == 700
        await wait.result(cache.get("b"))  # reserved 5, took 500: over the budget, so a goes
        assert cache.tiers.in_memory == [("b", 1)] and cache.tiers.memory_used() == 500
        publish({"a/2/model.bin": b"a:650"})
        cache.set_tree(publish.tree())
        loader.used_during_loads.clear()
        await wait.result(cache.get("a", "2"))  # a's next version is estimated at a's last size
        assert loader.used_during_loads == [700]  # b went to make room for 700, not for 5
        assert cache.tiers.in_memory == [("a", 2)] and cache.tiers.memory_used() == 650
        await cache.close()

    asyncio.run(main())


def test_a_model_bigger_than_the_whole_budget_fails_clearly_and_evicts_nothing(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        loader = SizedLoader()
        tree = publish({**files(a=100, huge=5000), "big/1/model.bin": b"x" * 2000})
        cache = cache_of(publish, loader, tmp_path, clock, tree, 1000)
        await wait.result(cache.get("a"))
        with pytest.raises(
            ModelLoadError,
            match=r"needs about 2\.0Ki in memory \(its estimate: its files\), more than cache_size \(1000B\)",
        ):
            await wait.result(cache.get("big"))
        with pytest.raises(ModelLoadError, match=r"takes 4\.9Ki in memory \(stated\), more than cache_size"):
            await wait.result(cache.get("huge"))
        assert cache.tiers.in_memory == [("a", 1)] and cache.tiers.memory_used() == 100
        assert not cache.tiers.is_on_disk(("big", 1))  # not even downloaded: its files alone are too big
        assert cache.state("huge", 1)["state"] == "failed"
        await cache.close()

    asyncio.run(main())


def test_a_swap_loads_beside_the_version_it_replaces_only_when_nothing_else_can_make_room(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        loader = SizedLoader()
        cache = cache_of(publish, loader, tmp_path, clock, publish(files(a=600, b=300)), 1000)
        await wait.result(cache.get("a"))
        await wait.result(cache.get("b"))
        publish({"a/2/model.bin": b"a:600"})
        cache.set_tree(publish.tree())
        assert (await cache.get("a")).model.text == "a:600"  # v1 serves; v2 loads behind it
        await wait.until(lambda: cache.latest_pointer("a") == 2, "a v2 took over")
        assert sorted(cache.tiers.in_memory) == [("a", 2)]  # b went first; then v2 loaded beside v1
        assert loader.used_during_loads[-1] <= 1000
        publish({"a/3/model.bin": b"a:900"})
        cache.set_tree(publish.tree())
        await wait.until(lambda: cache.latest_pointer("a") == 3, "a v3 took over")  # 600 + 900 > 1000
        assert cache.tiers.in_memory == [("a", 3)] and cache.tiers.memory_used() == 900
        await cache.close()

    asyncio.run(main())


def test_a_disk_budget_in_bytes_evicts_the_least_used_files(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        tree = publish({f"{n}/1/model.bin": n.encode() * 40 for n in "abc"})
        cache = ModelCache(
            lambda path, name, version: "m",
            tmp_path,
            tree=tree,
            clock=clock,
            memory=Budget(1, "versions"),
            disk=Budget(100, "bytes"),
        )
        for name in "abc":
            await wait.result(cache.get(name))
        assert cache.tiers.on_disk == [("b", 1), ("c", 1)] and cache.tiers.disk_used() == 80
        await cache.close()

    asyncio.run(main())


def test_the_meter_measures_loads_that_ran_alone_only() -> None:
    rss = iter([100, 250, 1000, 1000, 1000, 1000])
    gpu = iter([0, 4096, 0, 0, 0, 0])
    meter = LoadMeter(lambda: next(rss), lambda: next(gpu))
    assert meter.measure(lambda: "m") == ("m", Measured(150, 4096))
    inner: list[Any] = []
    outer = meter.measure(lambda: inner.append(meter.measure(lambda: "inner")) or "outer")
    assert outer == ("outer", Measured(None, None)) and inner == [
        ("inner", Measured(None, None))
    ]  # overlapped
    assert LoadMeter(lambda: None, lambda: None).measure(lambda: 1) == (
        1,
        Measured(None, None),
    )  # no RSS, no GPU


def test_cuda_memory_is_read_only_from_a_torch_already_imported_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys
    import types

    def fake_torch(available: bool, allocated: Any) -> types.ModuleType:
        torch = types.ModuleType("torch")
        torch.cuda = types.SimpleNamespace(is_available=lambda: available, memory_allocated=allocated)  # type: ignore[attr-defined]
        return torch

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert cuda_allocated() is None  # torch never imported: nothing imported for it
    monkeypatch.setitem(sys.modules, "torch", fake_torch(True, lambda: 123))
    assert cuda_allocated() == 123
    monkeypatch.setitem(sys.modules, "torch", fake_torch(False, lambda: 123))
    assert cuda_allocated() is None

    def broken() -> int:
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setitem(sys.modules, "torch", fake_torch(True, broken))
    assert cuda_allocated() is None  # a broken CUDA setup never fails a load


def test_a_model_just_loaded_is_counted_once_and_evicts_nothing_that_fits(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    """Files as big as the models state (an estimate that is right): 400 + 400 + 190 fit in 1000."""

    async def main() -> None:
        loader = SizedLoader()
        tree = publish(
            {
                f"{n}/1/model.bin": f"{n}:{size}".ljust(size).encode()
                for n, size in (("a", 400), ("b", 400), ("c", 190))
            }
        )
        cache = cache_of(publish, loader, tmp_path, clock, tree, 1000)
        for name in "abc":
            await wait.result(cache.get(name))
        assert (
            sorted(cache.tiers.in_memory) == [("a", 1), ("b", 1), ("c", 1)]
            and cache.tiers.memory_used() == 990
        )
        await cache.close()

    asyncio.run(main())


def test_a_model_bigger_than_the_budget_left_by_pins_fails_instead_of_staying_above_it(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        loader = SizedLoader()
        tree = publish(files(a=600, b=500))
        cache = ModelCache(
            loader,
            tmp_path,
            tree=tree,
            clock=clock,
            memory=Budget(1000, "bytes"),
            disk=Budget(10**6, "bytes"),
            pinned=[("a", None)],
        )
        await cache.load_pinned()
        with pytest.raises(
            ModelLoadError, match=r"more than cache_size \(1000B, less 600B that pinned models hold\)"
        ):
            await wait.result(cache.get("b"))
        assert cache.tiers.in_memory == [("a", 1)] and cache.tiers.memory_used() == 600
        await cache.close()

    asyncio.run(main())


def test_pinned_models_filling_the_budget_still_move_to_their_new_versions(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    """Two pinned "latest" models of 300 in 640: a's version 2 loads beside version 1 (the budget
    holds one of them) and replaces it; the other pin is all that is counted against it."""

    async def main() -> None:
        loader = SizedLoader()
        cache = ModelCache(
            loader,
            tmp_path,
            tree=publish({**files(a=300, b=300), "c/1/model.bin": b"c:100".ljust(100)}),  # c: estimated right
            clock=clock,
            memory=Budget(640, "bytes"),
            disk=Budget(10**6, "bytes"),
            pinned=[("a", None), ("b", None)],
        )
        await cache.load_pinned()
        publish({"a/2/model.bin": b"a:300"})
        cache.set_tree(publish.tree())
        await wait.until(lambda: cache.latest_pointer("a") == 2, "a v2 took over from a v1")
        assert sorted(cache.tiers.in_memory) == [("a", 2), ("b", 1)] and cache.tiers.memory_used() == 600
        with pytest.raises(CacheFullError, match=r"\(40B of 640B free\).*held by pinned models"):
            await wait.result(cache.get("c"))  # 100 more cannot fit beside the pins: said with numbers
        await cache.close()

    asyncio.run(main())
