"""The reloader class itself, driven directly on the in-memory storage fake (no Ray)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.models import discover_models
from cortex_ray.reload.reloader import ModelReloader
from cortex_ray.spec import MultiModelsSpec, parse_spec
from cortex_ray.storage import open_storage
from cortex_ray.storage.memory import reset_memory_storage


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Any:
    reset_memory_storage()
    monkeypatch.setattr(ModelReloader, "seed_grace", 0.0)
    yield
    reset_memory_storage()


def api(tmp_path: Path, **models: Any) -> Any:
    (tmp_path / "handler.py").write_text("class Handler:\n    pass\n")
    spec = {
        "name": "r",
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "multi_model_reloading": {"dir": "mem://rel/models/", "poll_interval": 60, **models},
        },
    }
    return parse_spec([spec], base_dir=tmp_path).apis[0]


def test_long_poll_returns_on_change_and_times_out_otherwise(tmp_path: Path) -> None:
    store = open_storage("mem://rel/models/")
    store.upload("a/1/m", b"1")

    async def main() -> None:
        r = ModelReloader(api(tmp_path, settle_time=0))
        first = await r.snapshot(None, -1, timeout=5)
        assert first is not None and list(first["tree"].models) == ["a"]
        assert await r.snapshot(first["epoch"], first["version"], timeout=0.2) is None
        waiter = asyncio.ensure_future(r.snapshot(first["epoch"], first["version"], timeout=5))
        store.upload("b/1/m", b"2")
        await r.poll_now()
        changed = await waiter
        assert changed is not None and changed["base"] == first["version"]  # the change, not the tree
        assert list(changed["delta"].models) == ["b"] and changed["version"] == first["version"] + 1
        status = await r.status()
        assert status["list_calls"] >= 2 and status["last_error"] is None

    asyncio.run(main())


def test_a_failed_listing_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_storage("mem://rel/models/").upload("a/1/m", b"1")

    async def main() -> None:
        r = ModelReloader(api(tmp_path, settle_time=0))
        first = await r.snapshot(None, -1, timeout=5)
        assert first is not None

        def broken(*_: Any, **__: Any) -> Any:
            raise ConnectionError("storage down")

        monkeypatch.setattr(r, "_opener", broken)  # every storage the reloader opens is down
        await r.poll_now()
        assert r.tree is first["tree"] and r.version == first["version"]
        status = await r.status()
        assert status["failed_polls"] == 1 and "storage down" in status["last_error"]

    asyncio.run(main())


def test_a_restarted_reloader_seeded_by_a_replica_does_not_publish_a_half_upload(tmp_path: Path) -> None:
    store = open_storage("mem://rel/models/")
    store.upload("a/1/m", b"1")
    held = discover_models(api(tmp_path).handler.multi_model_reloading, "python")
    store.upload("a/2/part-0", b"uploading...")  # an upload in progress when the reloader restarts

    async def main() -> None:
        r = ModelReloader(api(tmp_path, settle_time=30))
        assert await r.seed(held) is True
        first = await r.snapshot("old-epoch", 7, timeout=5)
        assert first is not None and list(first["tree"].models["a"].versions) == [1]
        assert await r.seed(held) is False  # only before anything was published

    asyncio.run(main())


def test_a_local_dir_moved_away_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "a" / "1").mkdir(parents=True)
    (root / "a" / "1" / "m").write_bytes(b"1")

    async def main() -> None:
        r = ModelReloader(api(tmp_path, dir=str(root), settle_time=0))
        first = await r.snapshot(None, -1, timeout=5)
        assert first is not None and list(first["tree"].models) == ["a"]
        root.rename(tmp_path / "models.old")  # unmounted, or the first half of a swap with two mv
        await r.poll_now()
        assert r.version == first["version"] and list(r.tree.models) == ["a"]  # type: ignore[union-attr]
        assert "does not exist" in (await r.status())["last_error"]
        (tmp_path / "models.old").rename(root)
        await r.poll_now()
        assert r.version == first["version"]  # back as it was: nothing to publish

    asyncio.run(main())


def test_a_change_travels_as_a_delta_and_a_poll_with_nothing_new_publishes_nothing(tmp_path: Path) -> None:
    store = open_storage("mem://rel/models/")
    for name in "ab":
        store.upload(f"{name}/1/m", name.encode())

    async def main() -> None:
        r = ModelReloader(api(tmp_path, settle_time=0))
        first = await r.snapshot(None, -1, timeout=5)
        assert first is not None and "tree" in first
        assert await r.poll_now() == first["version"]  # the same listing: nothing published
        store.upload("a/2/m", b"a2")
        await r.poll_now()
        delta = await r.snapshot(first["epoch"], first["version"], timeout=1)
        assert delta is not None and list(delta["delta"].models) == ["a"]
        assert sorted(delta["delta"].models["a"].versions) == [1, 2]
        assert r.tree is not None and r.tree.models["b"] is first["tree"].models["b"]  # (unchanged: kept)
        whole = await r.snapshot(
            "another-epoch", first["version"], timeout=1
        )  # a restarted reloader's replica
        assert whole is not None and sorted(whole["tree"].models) == ["a", "b"]
        status = await r.status()
        assert (status["full_syncs"], status["delta_syncs"]) == (2, 1)

    asyncio.run(main())


def test_a_restarted_reloader_asks_one_replica_at_a_time_for_its_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_storage("mem://rel/models/").upload("a/1/m", b"1")
    monkeypatch.setattr(ModelReloader, "seed_grace", 3600.0)  # (no listing during the test)

    async def main() -> None:
        r = ModelReloader(api(tmp_path))
        assert await r.wants_seed() is True
        assert await r.wants_seed() is False  # promised to the first replica: the others keep theirs
        monkeypatch.setattr(ModelReloader, "seed_promise", 0.0)  # the first never sent it
        assert await r.wants_seed() is True
        seeded = discover_models(MultiModelsSpec(dir="mem://rel/models/"), "python")
        assert await r.seed(seeded) is True
        assert await r.wants_seed() is False  # seeded: nobody else's tree is wanted

    asyncio.run(main())
