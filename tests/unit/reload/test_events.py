"""Storage events as hints: the reloader lists the models an event names (their prefixes only)
and publishes at once; a path maps to the model it belongs to. No Ray; the storage is the
in-memory fake and the events come from a queue."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.reload import reloader as reloader_module
from cortex_ray.reload.events import LocalWatch, QueuedEvents, event_source
from cortex_ray.reload.reloader import ModelReloader
from cortex_ray.spec import MultiModelsSpec, parse_spec
from cortex_ray.storage import open_storage
from cortex_ray.storage.memory import reset_memory_storage


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Any:
    reset_memory_storage()
    monkeypatch.setattr(reloader_module, "SEED_GRACE", 0.0)
    yield
    reset_memory_storage()


def api(tmp_path: Path, **models: Any) -> Any:
    (tmp_path / "handler.py").write_text("class Handler:\n    pass\n")
    spec = {
        "name": "ev",
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "multi_model_reloading": {"dir": "mem://ev/models/", "poll_interval": 3600, **models},
        },
    }
    return parse_spec([spec], base_dir=tmp_path).apis[0]


async def until(condition: Any, what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


def test_an_event_lists_the_models_it_names_and_publishes_their_change_alone(tmp_path: Path) -> None:
    store = open_storage("mem://ev/models/")
    for name in "ab":
        store.upload(f"{name}/1/m", name.encode())

    async def main() -> None:
        r = ModelReloader(api(tmp_path, settle_time=0))
        events = r.events = QueuedEvents()
        first = await r.snapshot(None, -1, timeout=5)
        assert first is not None and r.poll_count == 1
        store.upload("b/2/m", b"b2")
        store.upload("c/1/m", b"c1")  # no event says c: it waits for the next full listing
        calls = r.list_calls
        events.put({"b"})
        await until(lambda: r.version == first["version"] + 1, "b's change published")
        assert r.list_calls == calls + 1 and r.poll_count == 1  # b's prefix, not the whole dir
        delta = await r.snapshot(first["epoch"], first["version"], timeout=1)
        assert delta is not None and list(delta["delta"].models) == ["b"]
        assert sorted(delta["delta"].models["b"].versions) == [1, 2]
        events.put({"a"})  # nothing changed under a: nothing published
        await until(lambda: r.event_batches == 2, "the second batch")
        await r.poll_now()  # the full listing finds c
        assert r.tree is not None and sorted(r.tree.models) == ["a", "b", "c"]
        store.delete("a/1/m")
        events.put({"a"})  # removed: it settles like any removal (settle_time 0: at once)
        await until(lambda: r.tree is not None and "a" not in r.tree.models, "a removed")
        events.put(None)  # a change no model name says: everything is listed
        await until(lambda: r.poll_count == 3, "a full listing")

    asyncio.run(main())


def test_paths_map_to_the_models_they_belong_to(tmp_path: Path) -> None:
    watch = LocalWatch(MultiModelsSpec(dir=str(tmp_path / "models")))
    root = tmp_path / "models"
    assert watch.model_of(root / "iris" / "2" / "model.onnx") == "iris"
    assert watch.model_of(root / "iris") is None  # (a folder made or removed: its files say more)
    assert watch.model_of(root / "loose.txt") is None and watch.model_of(tmp_path / "elsewhere") is None
    paths = MultiModelsSpec(
        paths=[{"name": "a", "path": str(tmp_path / "x")}, {"name": "b", "path": str(tmp_path / "y")}]
    )
    watch = LocalWatch(paths)
    assert watch.model_of(tmp_path / "y" / "1" / "w.bin") == "b" and watch.model_of(tmp_path / "z") is None


def test_only_local_folders_are_watched(tmp_path: Path) -> None:
    assert event_source(MultiModelsSpec(dir=str(tmp_path))) is None  # (events: not asked)
    assert isinstance(event_source(MultiModelsSpec(dir=str(tmp_path), events="watch")), LocalWatch)
    assert event_source(MultiModelsSpec(dir="s3://bucket/models/", events="watch")) is None


def test_s3_keys_map_to_the_models_of_the_api_and_others_are_ignored() -> None:
    from cortex_ray.reload.events import SqsEvents

    events = SqsEvents(MultiModelsSpec(dir="s3://bucket/team/models/"), "arn:aws:sqs:us-east-1:1:q")
    assert events.model_of("bucket", "team/models/iris/2/model.onnx") == "iris"
    assert events.model_of("bucket", "team/models/readme.txt") is None  # the dir itself: list all
    assert events.model_of("bucket", "team/other/iris/1/m") is False  # not this API's
    assert events.model_of("another", "team/models/iris/1/m") is False
    paths = MultiModelsSpec(
        paths=[{"name": "a", "path": "s3://bucket/x/"}, {"name": "b", "path": "s3://b2/y"}]
    )
    events = SqsEvents(paths, "https://sqs.us-east-1.amazonaws.com/1/q")
    assert events.model_of("b2", "y/3/w.bin") == "b" and events.model_of("bucket", "x/1/m") == "a"
