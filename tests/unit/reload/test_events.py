"""Storage events as hints: the reloader lists the models an event names (their prefixes only)
and publishes at once; a path maps to the model it belongs to. No Ray; the storage is the
in-memory fake and the events come from a queue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.reload.events import LocalWatch, QueuedEvents, event_source
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


class FakeQueue:
    """Stands in for :class:`~cortex_ray.storage.sqs.SqsQueue`: hands out the batches given,
    then nothing; records what is deleted."""

    def __init__(self, *batches: Any) -> None:
        self.batches = list(batches)
        self.deleted: list[str] = []

    def receive(self, wait: float = 0) -> Any:
        from cortex_ray.storage.sqs import QueueBatch

        if self.batches:
            return self.batches.pop(0)
        time.sleep(0.001)  # (in a thread, as the real long poll)
        return QueueBatch()

    def delete(self, receipts: list[str]) -> None:
        self.deleted += receipts


def test_sqs_messages_are_deleted_only_once_their_listing_succeeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cortex_ray.reload.events import SqsEvents
    from cortex_ray.storage.sqs import QueueBatch

    store = open_storage("mem://ev/models/")
    store.upload("a/1/m", b"a1")

    def broken(*args: Any) -> Any:
        raise OSError("storage unreachable")

    async def main() -> None:
        spec = api(tmp_path, settle_time=0)
        r = ModelReloader(spec)
        events = SqsEvents(spec.handler.multi_model_reloading, "arn:aws:sqs:us-east-1:1:q")
        queue = events.queue = FakeQueue(  # type: ignore[assignment]
            QueueBatch([("ev", "models/a/2/m")], ["first"])
        )
        assert await r.snapshot(None, -1, timeout=5) is not None
        opener = r._opener
        monkeypatch.setattr(r, "_opener", broken)  # (the instance's: see ModelReloader's timings)
        store.upload("a/2/m", b"a2")
        r.events = events
        r._event_task = asyncio.get_running_loop().create_task(r._follow_events(events))
        await until(lambda: events.kept == 1, "the failed batch kept in the queue")
        assert queue.deleted == [] and r.last_error is not None
        monkeypatch.setattr(r, "_opener", opener)
        queue.batches += [  # (the first comes back after its visibility timeout)
            QueueBatch([("ev", "models/a/2/m")], ["again"]),
            QueueBatch([("other", "models/a/2/m")], ["not ours"]),
        ]
        await until(lambda: events.messages == 2, "the next batches handled")
        assert queue.deleted == ["again", "not ours"]  # (ours once listed; another's at once)
        assert r.tree is not None and sorted(r.tree.models["a"].versions) == [1, 2]
        events.close()
        r._event_task.cancel()

    asyncio.run(main())
