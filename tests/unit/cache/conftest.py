"""What the model cache's unit tests share: the storage fake, a loader the test controls, a manual
clock, and ways to wait that never depend on how fast this machine is.

The helpers are fixtures (this folder is not a package, so test modules cannot import this file
without loading it a second time). Type hints in the tests name these classes under
``TYPE_CHECKING`` only.

No test here sleeps to let time pass or asserts on wall-clock time:

* "answered without waiting" is :func:`at_once`: the call must complete without suspending;
* backoffs, retries, use counts and reclaim delays run on a :class:`~cortex_ray.clock.ManualClock`
  that moves only when a test advances it;
* a state reached by downloads and loads (which run in threads) is waited for as a condition
  (:meth:`Waits.until`); the time limits there only turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cortex_ray.cache import ModelCache
from cortex_ray.clock import ManualClock
from cortex_ray.models import ModelTree, discover_models
from cortex_ray.models.discovery import RememberingBuilder
from cortex_ray.spec import MultiModelsSpec
from cortex_ray.storage import open_storage
from cortex_ray.storage.memory import reset_memory_storage

T = TypeVar("T")

URI = "mem://cache/models/"
HANG = 30.0
"""Seconds after which a wait is reported as a hang (a limit for failing, never a measure)."""


@pytest.fixture(autouse=True)
def _clean_memory() -> Iterator[None]:
    reset_memory_storage()
    yield
    reset_memory_storage()


# --- the published tree -------------------------------------------------------------


class Publisher:
    """Writes model files to the in-memory storage and lists the tree as the reloader would."""

    def __call__(self, files: dict[str, bytes | None] | None = None) -> ModelTree:
        """Upload (or delete, for ``None``) ``files``, then list the tree."""
        self.upload(files or {})
        return self.tree()

    def upload(self, files: dict[str, bytes | None]) -> None:
        """Change files without listing them (an upload still under way)."""
        storage = open_storage(URI)
        for key, data in files.items():
            if data is None:
                storage.delete(key)
            else:
                storage.upload(key, data)

    def tree(self) -> ModelTree:
        """The tree as the reloader publishes it: no file lists (the cache lists a version's folder
        when it downloads it)."""
        return discover_models(MultiModelsSpec(dir=URI), "python", build=RememberingBuilder(keep_files=False))


@pytest.fixture
def publish() -> Publisher:
    return Publisher()


# --- the user's load_model ------------------------------------------------------------


class Loader:
    """Loads ``model.bin`` (the object is its text). The test can hold loads (all of them with
    ``gate``, or those of given contents with :meth:`hold`), make contents fail (``fail_on``),
    add random jitter (``delay``), and see what was loaded and what the cache held meanwhile."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        """The contents each load found, in the order loads started."""
        self.gate: threading.Event | None = None
        """When set to an event, every load waits for it."""
        self.held: dict[bytes, threading.Event] = {}
        self.fail_on: set[bytes] = set()
        self.read_after_hold: list[bytes] = []
        """What each held load read from its folder once released."""
        self.active = 0
        """Loads running in a thread now."""
        self.delay: random.Random | None = None
        """Jitter (up to 20 ms per load) for randomized interleavings."""
        self.observed: list[int] = []
        """How many models were in memory when each load ran (with :meth:`watch`)."""
        self.max_memory_seen = 0
        """The most memory slots held while a load ran (with :meth:`watch`)."""
        self.cache: ModelCache | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def watch(self, cache: ModelCache) -> None:
        """Record the cache's memory while each load runs (call it on the cache's event loop)."""
        self.cache = cache
        self._loop = asyncio.get_running_loop()

    def hold(self, data: bytes) -> threading.Event:
        """Loads of ``data`` wait until the returned event is set."""
        self.held[data] = threading.Event()
        return self.held[data]

    def release_all(self) -> None:
        for event in [self.gate, *self.held.values()]:
            if event is not None:
                event.set()

    def __call__(self, path: str, name: str = "", version: int = 0) -> str:
        with self._lock:
            self.active += 1
        try:
            return self._load(Path(path) / "model.bin")
        finally:
            with self._lock:
                self.active -= 1

    def _load(self, file: Path) -> str:
        first = file.read_bytes()
        with self._lock:
            self.calls.append(first)
        if self.delay is not None:
            time.sleep(self.delay.random() * 0.02)
        self._observe()
        if self.gate is not None:
            self.gate.wait(HANG)
        held = self.held.get(first)
        if held is not None:
            held.wait(HANG)
            self.read_after_hold.append(file.read_bytes())  # reads its files again after the wait
        if first in self.fail_on:
            raise RuntimeError(f"cannot load {first!r}")
        return first.decode()

    def _observe(self) -> None:
        """Look at the cache from its event loop (its bookkeeping is not for other threads)."""
        cache, loop = self.cache, self._loop
        if cache is None or loop is None:
            return

        answer: Future[tuple[int, int]] = Future()

        def snapshot() -> None:
            answer.set_result((len(cache.tiers.in_memory), cache.tiers.memory_used()))

        try:
            loop.call_soon_threadsafe(snapshot)
        except RuntimeError:  # the loop is closed: the test is over
            return
        in_memory, used = answer.result(HANG)
        with self._lock:
            self.observed.append(in_memory)
            self.max_memory_seen = max(self.max_memory_seen, used)


@pytest.fixture
def loader() -> Iterator[Loader]:
    loader = Loader()
    yield loader
    loader.release_all()  # a failed test leaves no thread waiting


@pytest.fixture
def slow_downloads(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[bytes, threading.Event]]:
    """Downloads of an object whose content is a key of the returned dict wait for its event."""
    from cortex_ray.storage import memory

    gates: dict[bytes, threading.Event] = {}
    original = memory.MemoryStorage._download_object

    def download(self: Any, key: str, dest: Path, expected: Any) -> None:
        gate = gates.get(self._get(key).data)
        if gate is not None:
            gate.wait(HANG)
        original(self, key, dest, expected)

    monkeypatch.setattr(memory.MemoryStorage, "_download_object", download)
    yield gates
    for gate in gates.values():
        gate.set()


# --- time and waiting -----------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    """Time for the cache and the reclaimer: it moves only by ``await clock.advance(seconds)``."""
    return ManualClock()


def at_once(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end without letting it wait: its value (or its exception), or a failure
    if it suspended even once (it had to wait on a load, a download or a slot).

    Call it from a coroutine on the running event loop (``ModelCache.get`` may start
    background work)."""
    try:
        waited_on = coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError(f"{coro!r} had to wait (on {waited_on!r})")


AtOnce = Callable[[Coroutine[Any, Any, Any]], Any]
"""The ``at_once`` fixture's type."""


@pytest.fixture(name="at_once")
def _at_once() -> AtOnce:
    return at_once


class Waits:
    """Waiting for a state that downloads and loads (in threads) reach, never for a time."""

    async def until(self, condition: Callable[[], object], what: str = "", seconds: float = HANG) -> None:
        """Poll ``condition`` until it holds (``seconds`` only turn a hang into a failure)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never happened: {what or condition}")
            await asyncio.sleep(0.001)

    async def idle(self, cache: ModelCache) -> None:
        """Until no download, load or folder removal of the cache runs."""
        await self.until(lambda: cache.idle, "the cache's downloads and loads finished")

    async def result(self, awaitable: Awaitable[T], seconds: float = HANG) -> T:
        """Await ``awaitable``, failing instead of hanging."""
        try:
            return await asyncio.wait_for(awaitable, seconds)
        except asyncio.TimeoutError:
            raise AssertionError(f"hung: {awaitable!r}") from None

    async def turns(self, rounds: int = 20) -> None:
        """Let the event loop run ``rounds`` times: work that needs no thread (a woken waiter
        taking a slot, a reservation evicting) happens within a few."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def drained(self, before: set[asyncio.Task[Any]]) -> None:
        """Until every task started since ``before`` (an ``asyncio.all_tasks()``) ended."""
        await self.until(lambda: asyncio.all_tasks() <= before, "the work started meanwhile ended")


@pytest.fixture
def wait() -> Waits:
    return Waits()
