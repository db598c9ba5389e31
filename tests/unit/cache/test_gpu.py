"""GPU memory as its own budget (``gpu_cache_size``): sizes stated or measured, least used
models unloaded for room, never one in use, a model bigger than the budget refused. Fakes
state the sizes here; the last test loads real PyTorch models on a GPU, and skips without one.
Helpers are conftest.py's."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cortex_ray.cache import Holder, ModelCache
from cortex_ray.cache.sizes import LoadMeter
from cortex_ray.errors import CacheFullError, ModelLoadError
from cortex_ray.spec.quantity import Budget

if TYPE_CHECKING:
    from cortex_ray.clock import ManualClock
    from tests.unit.cache.conftest import Publisher, Waits


class OnGpu:
    """A model object that states the GPU memory it takes (``cortex_gpu_bytes``)."""

    def __init__(self, name: str, gpu: int | None) -> None:
        self.name = name
        if gpu is not None:
            self.cortex_gpu_bytes = gpu
        self.cortex_size_bytes = 10


def _stating(path: str, name: str = "", version: int = 0) -> OnGpu:
    """``model.bin`` starts with the GPU bytes the object states."""
    return OnGpu(name, int((Path(path) / "model.bin").read_text().split()[0]))


def _models(**gpu: int) -> dict[str, bytes | None]:
    """Models whose files are as large as the GPU memory they state (the estimate is right)."""
    return {f"{name}/1/model.bin": f"{size} ".ljust(size).encode() for name, size in gpu.items()}


def _cache(tmp_path: Path, clock: ManualClock, gpu: int, loader: Any = _stating, **kw: Any) -> ModelCache:
    return ModelCache(
        loader,
        tmp_path,
        memory=Budget(10, "versions"),
        disk=Budget(10, "versions"),
        gpu=Budget(gpu, "bytes"),
        clock=clock,
        **kw,
    )


def test_a_load_unloads_the_least_used_models_holding_gpu_memory_until_its_size_fits(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        tree = publish({**_models(a=600, b=300), "cpu/1/model.bin": b"0"})
        cache = _cache(tmp_path, clock, 1000, tree=tree)
        for name in ("a", "cpu", "b"):
            await wait.result(cache.get(name))
        assert cache.snapshot().gpu.used == 900 and cache.snapshot().gpu.versions == (("a", 1), ("b", 1))
        assert cache.state("a", 1)["gpu_bytes"] == 600 and cache.state("a", 1)["gpu_source"] == "stated"
        cache.set_tree(publish(_models(c=500)))
        await wait.result(cache.get("c"))  # 100 free: a goes (the least used on the GPU), not cpu
        assert sorted(cache.tiers.in_memory) == [("b", 1), ("c", 1), ("cpu", 1)]
        assert cache.snapshot().gpu.used == 800
        await cache.close()

    asyncio.run(main())


def test_a_model_in_use_keeps_its_gpu_memory_and_the_load_fails_with_the_reason(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        tree = publish(_models(a=600, b=300, c=500))
        cache = _cache(tmp_path, clock, 1000, tree=tree, memory_wait=0)
        request = Holder()
        await wait.result(cache.get("a", requester=request))  # a request is using a
        await wait.result(cache.get("b"))
        with pytest.raises(
            CacheFullError, match=r"no GPU memory came free .*gpu_cache_size .*a v1 \(1 request"
        ):
            await wait.result(cache.get("c"))
        assert ("a", 1) in cache.tiers.in_memory  # b was unloaded trying; a never
        assert cache.snapshot().gpu.used <= 1000
        cache.let_go(request)
        await wait.result(cache.get("c"))  # (no failure recorded: the next request loads it)
        assert sorted(cache.tiers.in_memory) == [("c", 1)]
        await cache.close()

    asyncio.run(main())


def test_a_model_bigger_than_the_gpu_budget_fails_and_nothing_is_unloaded_for_it(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        tree = publish({**_models(a=600), "huge/1/model.bin": b"5000"})  # (its files say less)
        cache = _cache(tmp_path, clock, 1000, tree=tree)
        await wait.result(cache.get("a"))
        with pytest.raises(
            ModelLoadError, match=r"takes 4.9Ki of GPU memory \(stated\), more than gpu_cache_size"
        ):
            await wait.result(cache.get("huge"))
        assert cache.tiers.in_memory == [("a", 1)] and cache.snapshot().gpu.used == 600
        await cache.close()

    asyncio.run(main())


def test_gpu_memory_is_measured_when_not_stated_and_estimated_when_loads_overlap(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    allocated = [0]

    def allocate(path: str, name: str = "", version: int = 0) -> object:
        allocated[0] += int((Path(path) / "model.bin").read_text())
        return object()

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"400", "a/2/model.bin": b"450"})
        cache = _cache(tmp_path, clock, 1000, loader=allocate, tree=tree)
        cache.tiers.meter = LoadMeter(rss=lambda: None, gpu=lambda: allocated[0])
        await wait.result(cache.get("a", 1))
        assert cache.state("a", 1)["gpu_bytes"] == 400 and cache.state("a", 1)["gpu_source"] == "measured"
        cache.tiers.meter = LoadMeter(rss=lambda: None, gpu=lambda: None)  # as when loads overlap
        await wait.result(cache.get("a", 2))
        state = cache.state("a", 2)
        assert state["gpu_bytes"] == 400 and state["gpu_source"] == "estimated"  # the model's last size
        await cache.close()

    asyncio.run(main())


def test_a_gpu_budget_is_in_bytes() -> None:
    with pytest.raises(ValueError, match="in bytes"):
        ModelCache(_stating, "/tmp/unused", memory_limit=1, disk_limit=1, gpu=Budget(3, "versions"))


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU")
def test_evicting_a_torch_model_returns_its_cuda_memory_under_a_gpu_budget(
    tmp_path: Path, publish: Publisher, wait: Waits
) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    mib = 2**20

    def load_on_gpu(path: str, name: str = "", version: int = 0) -> Any:
        size = int((Path(path) / "model.bin").read_text())  # MiB of float32 weights on the GPU
        layer = torch.nn.Linear(size * mib // 4 // 1024, 1024, bias=False).to("cuda")
        return layer

    async def main() -> None:
        tree = publish({"a/1/model.bin": b"256", "b/1/model.bin": b"256", "c/1/model.bin": b"256"})
        cache = ModelCache(
            load_on_gpu, tmp_path, memory=Budget(10, "versions"), disk=Budget(10, "versions"),
            gpu=Budget(600 * mib, "bytes"), tree=tree,
        )  # fmt: skip
        torch.cuda.synchronize()
        base_allocated, base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
        for name in "ab":
            await wait.result(cache.get(name))
        assert cache.state("a", 1)["gpu_source"] == "measured"
        assert 256 * mib <= cache.state("a", 1)["gpu_bytes"] < 300 * mib
        await wait.result(cache.get("c"))  # 512 of 600 MiB held: a is unloaded for c
        assert sorted(cache.tiers.in_memory) == [("b", 1), ("c", 1)]
        assert cache.snapshot().gpu.used <= 600 * mib
        await wait.until(
            lambda: torch.cuda.memory_allocated() - base_allocated < 2 * 256 * mib + 16 * mib,
            "a's CUDA memory was freed",
        )
        await wait.until(
            lambda: torch.cuda.memory_reserved() - base_reserved < 2 * 256 * mib + 64 * mib,
            "the reclaimer gave torch's cached blocks back",
        )
        await cache.close()

    asyncio.run(main())


def test_a_new_latest_replaces_the_version_serving_when_the_gpu_holds_one_of_them(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        tree = publish(_models(m=700))
        cache = _cache(tmp_path, clock, 1000, tree=tree, memory_wait=0)
        assert (await wait.result(cache.get("m"))).version == 1
        v2 = f"{800} ".ljust(800).encode()
        cache.set_tree(publish({"m/2/model.bin": v2}))
        assert cache.try_get("m").version == 1  # type: ignore[union-attr]  # v2 loads in the background
        await wait.until(lambda: cache.latest_pointer("m") == 2, "m v2 took over")
        assert cache.tiers.in_memory == [("m", 2)] and cache.snapshot().gpu.used == 800
        await cache.close()

    asyncio.run(main())


def test_an_unmeasured_model_is_not_refused_for_its_files_size(
    tmp_path: Path, publish: Publisher, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        tree = publish({"cpu/1/model.bin": b"0 " + b"x" * 3000})  # 3 KB of files, no GPU memory
        cache = _cache(tmp_path, clock, 1000, tree=tree)
        loaded = await wait.result(cache.get("cpu"))
        assert loaded.gpu_bytes == 0 and cache.snapshot().gpu.used == 0
        await cache.close()

    asyncio.run(main())
