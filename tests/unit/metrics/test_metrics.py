"""cortex-ray's own metrics, recorded into the in-memory sink (no Ray)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import cortex_ray.metrics.recorder as recorder_module
from cortex_ray.cache import ModelCache
from cortex_ray.metrics import CATALOGUE, MemorySink, Recorder
from cortex_ray.metrics.asyncapi import AsyncMetrics
from cortex_ray.metrics.cache import CacheMetrics
from cortex_ray.metrics.reloader import ReloaderMetrics
from cortex_ray.metrics.replica import record_lag
from cortex_ray.metrics.requests import SEVERAL, RequestMetrics
from cortex_ray.models import ModelTree, discover_models
from cortex_ray.spec import MultiModelsSpec
from cortex_ray.storage import open_storage
from cortex_ray.storage.memory import reset_memory_storage


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> MemorySink:
    """A fresh process recorder writing into memory."""
    sink = MemorySink()
    fresh = Recorder(sink)
    monkeypatch.setattr(recorder_module, "_RECORDER", fresh)
    return sink


def flushed(sink: MemorySink) -> MemorySink:
    recorder_module.recorder().flush()
    return sink


def test_every_metric_is_named_and_tagged_by_api() -> None:
    for name, spec in CATALOGUE.items():
        assert name.startswith("cortex_ray_") and spec.kind in {"counter", "gauge", "histogram"}
        assert spec.tags[0] == "api_name"


def test_an_unknown_metric_or_tag_is_a_bug(sink: MemorySink) -> None:
    with pytest.raises(KeyError):
        recorder_module.recorder().count("cortex_ray_nope", api_name="a")
    recorder_module.recorder().count("cortex_ray_async_submitted", api_name="a", stray="x")
    assert flushed(sink).get("cortex_ray_async_submitted", api_name="a") == 1
    assert not any("stray" in dict(tags) for _, tags in sink.values)


def test_counters_add_up_until_flushed(sink: MemorySink) -> None:
    metrics = RequestMetrics("api")
    for _ in range(5):
        metrics.record({"m": 2}, 200, 0.01)
    metrics.record({}, 404, 0.001)
    metrics.record({"a": 1, "b": 1}, 200, 0.02)
    assert sink.get("cortex_ray_requests") is None  # not yet flushed
    flushed(sink)
    assert sink.get("cortex_ray_requests", model="m", version="2", status="200") == 5
    assert sink.get("cortex_ray_requests", model="", status="404") == 1
    assert sink.get("cortex_ray_requests", model=SEVERAL) == 1
    assert len(sink.get("cortex_ray_request_seconds", api_name="api")) == 7


def test_model_and_version_tags_are_bounded(sink: MemorySink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "MAX_MODELS", 3)
    metrics = RequestMetrics("api")
    for i in range(10_000):
        metrics.record({f"model-{i}": 1}, 200, 0.001)
    for v in range(1, 30):
        metrics.record({"model-0": v}, 200, 0.001)
    flushed(sink)
    models = {dict(t)["model"] for n, t in sink.values if n == "cortex_ray_requests"}
    assert models == {"model-0", "model-1", "model-2", "_other"}
    versions = {dict(t)["version"] for n, t in sink.values if n == "cortex_ray_requests"}
    assert versions == {str(v) for v in range(1, 30)} | {"_other"}  # a model's versions are its own
    assert sink.get("cortex_ray_requests", model="_other") == 10_000 - 3
    assert sum(v for (n, _), v in sink.values.items() if n == "cortex_ray_requests") == 10_000 + 29


@pytest.fixture
def tree() -> Any:
    reset_memory_storage()
    s = open_storage("mem://metrics/models/")
    for name in ("a", "b", "c"):
        s.upload(f"{name}/1/model.bin", b"x" * 100)
    yield discover_models(MultiModelsSpec(dir="mem://metrics/models/"), "python")
    reset_memory_storage()


def test_n_requests_to_one_model_are_one_miss_one_load_and_n_minus_1_hits(
    sink: MemorySink, tree: ModelTree, tmp_path: Path
) -> None:
    async def main() -> None:
        cache = ModelCache(lambda p, n, v: n, tmp_path, 2, 2, tree, events=CacheMetrics("api"))
        for _ in range(10):
            assert (await cache.get("a")).model == "a"
        await cache.close()

    asyncio.run(main())
    flushed(sink)
    assert sink.get("cortex_ray_cache_misses", tier="memory") == 1
    assert sink.get("cortex_ray_cache_hits", tier="memory") == 9
    assert sink.get("cortex_ray_model_loads", model="a", outcome="ok") == 1
    assert sink.get("cortex_ray_cache_misses", tier="disk") == 1
    assert sink.get("cortex_ray_downloads", outcome="ok") == 1
    assert sink.get("cortex_ray_download_bytes") == 100
    assert len(sink.get("cortex_ray_model_load_seconds", model="a")) == 1
    assert sink.get("cortex_ray_cache_evictions") is None


def test_evictions_and_failed_loads_are_counted(sink: MemorySink, tree: ModelTree, tmp_path: Path) -> None:
    def loader(path: str, name: str, version: int) -> str:
        if name == "c":
            raise ValueError("broken")
        return name

    async def main() -> None:
        cache = ModelCache(loader, tmp_path, 1, 1, tree, events=CacheMetrics("api"))
        await cache.get("a")
        await cache.get("b")  # evicts a from memory and from disk
        with pytest.raises(Exception, match="broken"):
            await cache.get("c")
        await cache.close()

    asyncio.run(main())
    flushed(sink)
    assert sink.get("cortex_ray_cache_evictions", tier="memory") == 2
    assert sink.get("cortex_ray_cache_evictions", tier="disk") == 2
    assert sink.get("cortex_ray_model_loads", outcome="ok") == 2
    assert sink.get("cortex_ray_model_loads", model="c", outcome="failed") == 1


def test_reloader_and_async_metrics(sink: MemorySink) -> None:
    reloader = ReloaderMetrics("api")
    reloader.polled(2, ok=True, at=123.0)
    reloader.polled(1, ok=False)
    reloader.delays([0.5, 5.0])
    reloader.published()
    record_lag("api", "r1", {"lag_versions": 2, "lag_seconds": 7.5})
    asyncapi = AsyncMetrics("api")
    for i in range(3):
        asyncapi.submitted(f"w{i}")
    asyncapi.sizes(2, 1)
    asyncapi.retried()
    asyncapi.finished("w0", "completed")
    asyncapi.finished("w1", "failed")
    asyncapi.finished("resumed", "completed")  # submitted before a restart: no duration
    flushed(sink)
    assert sink.get("cortex_ray_reloader_polls", outcome="ok") == 1
    assert sink.get("cortex_ray_reloader_polls", outcome="failed") == 1
    assert sink.get("cortex_ray_reloader_list_calls") == 3
    assert sink.get("cortex_ray_reloader_list_errors") == 1
    assert sink.get("cortex_ray_reloader_last_success_timestamp_seconds") == 123.0
    assert sink.get("cortex_ray_reloader_publish_delay_seconds") == [0.5, 5.0]
    assert sink.get("cortex_ray_replica_tree_lag_seconds", replica="r1") == 7.5
    assert sink.get("cortex_ray_async_submitted") == 3
    assert sink.get("cortex_ray_async_queued") == 2 and sink.get("cortex_ray_async_in_progress") == 1
    assert sink.get("cortex_ray_async_completed") == 2 and sink.get("cortex_ray_async_failed") == 1
    assert len(sink.get("cortex_ray_async_seconds")) == 2


def test_version_tags_follow_live_reloading(sink: MemorySink) -> None:
    metrics = RequestMetrics("api")
    for v in range(1, 40):  # 39 reloads: the newest version is always tagged as itself
        metrics.record({"m": v}, 200, 0.001)
    flushed(sink)
    assert sink.get("cortex_ray_requests", model="m", version="39") == 1
    assert sink.get("cortex_ray_requests", model="m", version="_other") is None


def test_one_bad_series_loses_no_other(sink: MemorySink, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = recorder_module.recorder()
    rec.count("cortex_ray_download_bytes", 0, api_name="api")  # a counter never goes by 0
    rec.count("cortex_ray_async_submitted", api_name="a")
    rec.count("cortex_ray_async_submitted", api_name="b")
    original = sink.inc

    def inc(name: str, tags: Any, value: float) -> None:
        if dict(tags)["api_name"] == "a":
            raise ValueError("refused")
        original(name, tags, value)

    monkeypatch.setattr(sink, "inc", inc)
    rec.flush()
    assert sink.get("cortex_ray_async_submitted", api_name="b") == 1
    assert sink.get("cortex_ray_download_bytes") is None


def test_latency_is_sampled_only_above_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from cortex_ray.metrics import requests as requests_module

    clock = [0.0]
    monkeypatch.setattr(requests_module.time, "monotonic", lambda: clock[0])
    slow, fast = requests_module.Sampler(10), requests_module.Sampler(10)
    taken_slow = 0
    for _ in range(50):  # 5 a second: every one is observed
        clock[0] += 0.2
        taken_slow += slow.take()
    assert taken_slow == 50
    taken = []
    for _second in range(5):  # 1,000 a second: about 10 a second once the rate is known
        count = 0
        for _ in range(1000):
            clock[0] += 0.001
            count += fast.take()
        taken.append(count)
    assert taken[0] >= 10 and all(8 <= n <= 12 for n in taken[2:]), taken
