"""The disk tier's I/O is injected: a disk that fills during a download fails that version with
a clear reason, the version serving keeps serving, and nothing is left behind."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cortex_ray.cache import ModelCache
from cortex_ray.cache.files import StorageFiles
from cortex_ray.errors import ModelLoadError
from cortex_ray.models.tree import VersionInfo

if TYPE_CHECKING:
    from cortex_ray.clock import ManualClock
    from tests.unit.cache.conftest import Loader, Publisher, Waits


class FillingDisk(StorageFiles):
    """Real downloads, until ``full``: then each one fails as a full disk does."""

    def __init__(self) -> None:
        self.full = False

    def fetch(self, info: VersionInfo, dest: Path) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().fetch(info, dest)


def versions_on_disk(root: Path) -> list[str]:
    return sorted(p.name.split("-")[0] for p in root.iterdir() if not p.name.startswith("."))


def test_a_disk_that_fills_fails_the_new_version_clearly_and_the_old_one_serves_on(
    tmp_path: Path, publish: Publisher, loader: Loader, clock: ManualClock, wait: Waits
) -> None:
    async def main() -> None:
        disk = FillingDisk()
        cache = ModelCache(loader, tmp_path, tree=publish({"a/1/model.bin": b"a1"}), clock=clock, files=disk)
        assert (await cache.get("a")).model == "a1"
        disk.full = True
        cache.set_tree(publish({"a/2/model.bin": b"a2"}))
        await wait.idle(cache)
        state = cache.state("a", 2)
        assert state["state"] == "failed"
        assert "failed writing model 'a' of version 2 to the disk cache" in state["reason"]
        assert "No space left on device" in state["reason"]
        assert (await cache.get("a")).model == "a1"  # latest stays on version 1
        assert versions_on_disk(tmp_path / "a") == ["1"]  # nothing of version 2 left behind
        with pytest.raises(ModelLoadError, match="No space left"):
            await cache.get("a", "2")
        disk.full = False  # space freed: the retry after the backoff loads it
        await clock.advance(2)
        await wait.until(lambda: cache.latest_pointer("a") == 2, "version 2 loaded once there was room")
        await wait.idle(cache)
        assert versions_on_disk(tmp_path / "a") == ["1", "2"]  # (no cache limits: every version kept)
        await cache.close()

    asyncio.run(main())
