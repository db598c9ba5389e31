"""The tiers on their own, driven through their callbacks (no model cache, no tree owner): what
they ask (current files, pins) decides what they do, and what they tell is all that happened.
Helpers are conftest.py's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cortex_ray.cache.callbacks import Superseded, TierCallbacks
from cortex_ray.cache.entry import Key, LoadedModel
from cortex_ray.cache.tiers import Tiers
from cortex_ray.errors import CacheFullError, ModelLoadError
from cortex_ray.models.tree import VersionInfo
from cortex_ray.spec.quantity import Budget

if TYPE_CHECKING:
    from cortex_ray.clock import ManualClock
    from tests.unit.cache.conftest import Loader, Publisher, Waits

MODELS: dict[str, bytes | None] = {f"{n}/1/model.bin": f"{n}1".encode() for n in "abc"}


class Owner:
    """Records what the tiers tell, and answers what they ask from the test's sets."""

    def __init__(self) -> None:
        self.loaded: list[Key] = []
        self.failed: list[tuple[Key, str]] = []
        self.pinned: set[Key] = set()
        self.stale: set[Key] = set()

    def callbacks(self) -> TierCallbacks:
        return TierCallbacks(
            is_current=lambda key, fingerprint: key not in self.stale,
            is_pinned=lambda key: key in self.pinned,
            on_loaded=lambda loaded: self.loaded.append((loaded.name, loaded.version)),
            on_failed=lambda name, info, reason: self.failed.append(((name, info.version), reason)),
        )


def _info(publish: Publisher, name: str) -> VersionInfo:
    return publish.tree().models[name].versions[1]


def test_tiers_without_an_owner_load_and_evict_by_their_budget_alone(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        publish(MODELS)
        tiers = Tiers(loader, tmp_path, clock=clock, memory=Budget(1, "versions"), disk=Budget(2, "versions"))
        for name in "abc":
            loaded = await wait.result(tiers.load(name, _info(publish, name)))
            assert isinstance(loaded, LoadedModel) and loaded.model == f"{name}1"
        snap = tiers.snapshot()
        assert (
            snap.memory.versions == (("c", 1),) and snap.memory.used == 1 and snap.memory.unit == "versions"
        )
        assert snap.disk.versions == (("b", 1), ("c", 1)) and snap.disk.limit == 2
        assert snap.loads == 3 and snap.disk.bytes == 4  # two folders of 2 bytes
        tiers.close()

    asyncio.run(main())


def test_the_owner_hears_of_each_load_and_of_each_failure_with_its_reason(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        publish(MODELS)
        owner = Owner()
        tiers = Tiers(
            loader, tmp_path, memory_limit=2, disk_limit=3, clock=clock, callbacks=owner.callbacks()
        )
        loader.fail_on.add(b"b1")
        await wait.result(tiers.load("a", _info(publish, "a")))
        with pytest.raises(ModelLoadError, match="cannot load"):
            await wait.result(tiers.load("b", _info(publish, "b")))
        assert owner.loaded == [("a", 1)]
        assert [key for key, _ in owner.failed] == [("b", 1)] and "cannot load b'b1'" in owner.failed[0][1]
        tiers.close()

    asyncio.run(main())


def test_a_version_the_owner_pins_is_never_the_victim(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        publish(MODELS)
        owner = Owner()
        tiers = Tiers(
            loader, tmp_path, memory_limit=2, disk_limit=3, clock=clock, callbacks=owner.callbacks()
        )
        for name in "ab":
            await wait.result(tiers.load(name, _info(publish, name)))
        owner.pinned.add(("a", 1))  # the least recently used, but pinned: b goes
        await wait.result(tiers.load("c", _info(publish, "c")))
        assert sorted(tiers.in_memory) == [("a", 1), ("c", 1)]
        owner.pinned.add(("c", 1))  # everything pinned: no room can come, it fails at once
        with pytest.raises(CacheFullError, match="pinned models"):
            await wait.result(tiers.load("b", _info(publish, "b")))
        assert owner.failed == []  # (a full cache is not the model's fault)
        tiers.close()

    asyncio.run(main())


def test_files_the_owner_no_longer_publishes_are_not_loaded(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        publish(MODELS)
        owner = Owner()
        tiers = Tiers(
            loader, tmp_path, memory_limit=2, disk_limit=3, clock=clock, callbacks=owner.callbacks()
        )
        owner.stale.add(("a", 1))
        with pytest.raises(Superseded):
            await wait.result(tiers.load("a", _info(publish, "a")))
        assert loader.calls == [] and owner.loaded == [] and owner.failed == []
        assert tiers.snapshot().memory.versions == () and tiers.snapshot().disk.versions == ()
        tiers.close()

    asyncio.run(main())
