"""When unloaded models are collected (:class:`~cortex_ray.cache.reclaim.Reclaimer`), on a
manual clock: a wrapper freed by reference counting can hide a cyclic model inside, so once the
bytes unloaded reach the backlog a collection runs, without waiting ``min_interval``."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from cortex_ray.cache.reclaim import Reclaimer
from cortex_ray.clock import ManualClock
from tests.unit.cache.conftest import Waits


class Inner:
    """A framework's model: in a reference cycle (only a collection frees it)."""

    def __init__(self) -> None:
        self.me = self


class Wrapper:
    """What the cache holds (as our TensorFlow SavedModel holds TensorFlow's object)."""

    def __init__(self) -> None:
        self.inner = Inner()


def test_bytes_unloaded_past_the_backlog_are_collected_even_when_their_wrappers_were_freed(
    monkeypatch: pytest.MonkeyPatch, clock: ManualClock, wait: Waits
) -> None:
    collections: list[int] = []
    real_collect = gc.collect

    def collect(*args: Any) -> int:
        collections.append(1)
        return real_collect(*args)

    monkeypatch.setattr(gc, "collect", collect)

    async def main() -> None:
        reclaimer = Reclaimer(delay=1.0, min_interval=60.0, clock=clock, backlog=lambda: 100)
        before = asyncio.all_tasks()
        for _ in range(2):  # 80 bytes: under the backlog, every wrapper freed: no collection
            reclaimer.release(Wrapper(), 40)
        await wait.until(lambda: clock.sleepers == 1, "the reclaimer waits for its delay")
        await clock.advance(1.0)
        await wait.drained(before)
        assert collections == [] and reclaimer.stats()["freed_by_refcount"] == 2
        reclaimer.release(Wrapper(), 40)  # 120 bytes since the last collection: due
        await wait.until(lambda: clock.sleepers == 1, "the reclaimer waits for its delay")
        await clock.advance(1.0)
        await wait.drained(before)
        assert len(collections) == 1
        reclaimer.release(Wrapper(), 40)  # counted again from zero: not due
        await wait.until(lambda: clock.sleepers == 1, "the reclaimer waits for its delay")
        await clock.advance(1.0)
        await wait.drained(before)
        assert len(collections) == 1
        for _ in range(2):  # 120 bytes again: due, 2 s after the last collection
            reclaimer.release(Wrapper(), 60)
        await wait.until(lambda: clock.sleepers == 1, "the reclaimer waits for its delay")
        await clock.advance(1.0)
        await wait.drained(before)
        assert len(collections) == 2  # at once, not min_interval (60 s) after the last
        stats = reclaimer.stats()
        assert stats["collections"] == 2 and stats["urgent_collections"] == 1

    asyncio.run(main())


def test_a_cyclic_model_alone_waits_for_min_interval_between_collections(
    monkeypatch: pytest.MonkeyPatch, clock: ManualClock, wait: Waits
) -> None:
    collections: list[float] = []
    real_collect = gc.collect

    def collect(*args: Any) -> int:
        collections.append(clock.monotonic())
        return real_collect(*args)

    monkeypatch.setattr(gc, "collect", collect)

    async def main() -> None:
        reclaimer = Reclaimer(delay=1.0, min_interval=10.0, clock=clock, backlog=lambda: 10**9)
        before = asyncio.all_tasks()
        start = clock.monotonic()
        reclaimer.release(Inner(), 40)
        await wait.until(lambda: clock.sleepers == 1, "the reclaimer waits for its delay")
        await clock.advance(1.0)
        await wait.drained(before)
        reclaimer.release(Inner(), 40)
        for _ in range(12):  # (one second at a time: the reclaimer looks again each second)
            await wait.until(
                lambda: clock.sleepers == 1 or reclaimer.stats()["collections"] == 2, "a sleep or its end"
            )
            await clock.advance(1.0)
        await wait.drained(before)
        assert [round(t - start) for t in collections] == [1, 11]

    asyncio.run(main())
