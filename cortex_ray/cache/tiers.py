"""The cache's tiers (memory, disk, GPU memory): which versions each holds, and the single-flight
downloads and loads that fill them.

Every model version is an :class:`~cortex_ray.cache.entry.Entry` whose state says which
slots it holds (see that module). A download or load first takes its room
(:class:`~cortex_ray.cache.room.Room`: what is evicted for it, how long it waits, and the 503
when nothing can go), so no tier ever holds more than its budget, in-flight work included, and
no request loses a model it is using to another request's load. One download and one load per
version at a time, however many callers ask. Folders are named by the files' fingerprint and
are deleted only once no load reads them. All bookkeeping runs on the replica's event loop (no
locks); downloads and the user's ``load_model`` run in threads, and unloaded objects are
reclaimed off the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cortex_ray.cache.callbacks import Superseded, TierCallbacks
from cortex_ray.cache.entry import Entry, Folder, Holder, Key, LoadedModel
from cortex_ray.cache.events import CacheEvents
from cortex_ray.cache.files import ModelFiles, StorageFiles
from cortex_ray.cache.introspect import CacheSnapshot, TierSnapshot
from cortex_ray.cache.reclaim import BACKLOG_FLOOR, Reclaimer
from cortex_ray.cache.room import Room
from cortex_ray.cache.sizes import LoadMeter, gpu_size, memory_size
from cortex_ray.cache.tier import Tier
from cortex_ray.cache.usage import Usage
from cortex_ray.clock import SYSTEM, Clock
from cortex_ray.errors import CacheFullError, CortexRayError, ModelLoadError
from cortex_ray.models.tree import VersionInfo
from cortex_ray.spec.quantity import Budget, format_bytes

__all__ = [
    "MEMORY_WAIT",
    "Holder",
    "Key",
    "LoadedModel",
    "Loader",
    "Tiers",
    "WarmUp",
    "WarmUpRun",
]

log = logging.getLogger("cortex_ray.cache")

MEMORY_WAIT = 120.0
"""Seconds a load waits for a memory slot held by models in use or loads in flight."""

Loader = Callable[[str, str, int], Any]
"""``loader(local_path, model_name, version)`` -> the model object."""
WarmUpRun = Callable[[], Awaitable[None]]
WarmUp = Callable[[LoadedModel, Path], Awaitable[WarmUpRun | None]]
"""``warm_up(loaded, folder)``, after a load while its folder is read: ``None`` (nothing to do),
or what to run before the version serves (raising fails the load)."""


class Tiers:
    """Memory and disk tiers; their owner decides what is current and hears of loads
    (:class:`~cortex_ray.cache.callbacks.TierCallbacks`)."""

    def __init__(
        self,
        loader: Loader,
        root: Path,
        memory_limit: int | None = None,
        disk_limit: int | None = None,
        clock: Clock = SYSTEM,
        memory_wait: float = MEMORY_WAIT,
        *,
        memory: Budget | None = None,
        disk: Budget | None = None,
        files: ModelFiles | None = None,
        callbacks: TierCallbacks | None = None,
        gpu: Budget | None = None,
    ) -> None:
        """Budgets: ``memory`` / ``disk`` (versions or bytes), or ``memory_limit`` /
        ``disk_limit`` as counts of versions (Cortex's ``cache_size``); ``gpu`` in bytes
        (``gpu_cache_size``)."""
        self.callbacks = callbacks or TierCallbacks()
        """What the tiers ask of their owner (current files, pins, "latest") and tell it."""
        self._loader = loader
        self.files: ModelFiles = files or StorageFiles()
        """Downloads and deletions of the disk tier's folders (the cache's only I/O)."""
        self._last_used: dict[Key, float] = {}
        """When each version in memory was last used (given to a request, or let go by one)."""
        self.clock = clock
        """Time as the cache sees it (backoffs, use counts, durations): a test's own."""
        self._root = root
        if memory is None and memory_limit is not None:
            memory = Budget(memory_limit, "versions")
        if disk is None and disk_limit is not None:
            disk = Budget(disk_limit, "versions")
        self.memory = Tier("memory", memory, _memory_weight(memory))
        self.disk = Tier("disk", disk, _disk_weight(disk))
        if gpu is not None and gpu.unit != "bytes":
            raise ValueError(f"a GPU budget is in bytes (got {gpu})")
        self.gpu = Tier("gpu", gpu, lambda e: e.gpu_bytes)
        """GPU memory (``gpu_cache_size``): the versions whose objects hold some, by their bytes."""
        self._entries: dict[Key, Entry] = {}
        self.meter = LoadMeter()
        self._work: set[asyncio.Future[Any]] = set()
        # (unloaded objects waiting for a collection count against no budget: about what the
        # cache holds may wait, whatever the interval between collections)
        self.reclaimer = Reclaimer(clock=clock, backlog=lambda: max(BACKLOG_FLOOR, self.loaded_bytes()))
        self.usage = Usage(clock=clock)
        # downloads and loads wait on storage and on the user's load_model: threads of their own,
        # enough that loads of different models never queue behind each other
        self._threads = ThreadPoolExecutor(max_workers=32, thread_name_prefix="cortex-ray-cache")
        self.load_count = 0
        self.events = CacheEvents()
        """Told of hits, misses, loads, downloads and evictions (metrics)."""
        self.warm_up: WarmUp | None = None
        """Run on each loaded object before it is installed (the replica's warm-up requests)."""
        self.room = Room(
            self._entries,
            self.memory,
            self.disk,
            self.gpu,
            usage=self.usage,
            callbacks=self.callbacks,
            clock=clock,
            memory_wait=memory_wait,
            drop_memory=self._drop_memory,
            drop_disk=self._drop_disk,
            evicted=lambda tier: self.events.evicted(tier),
        )
        """Which versions leave to make room for a download or load, and how long a load waits."""

    # --- queries -----------------------------------------------------------

    def held(self, key: Key) -> LoadedModel | None:
        """The object in memory for ``key``, whatever files it came from."""
        entry = self._entries.get(key)
        return entry.loaded if entry is not None else None

    def peek(self, name: str, info: VersionInfo) -> LoadedModel | None:
        """The loaded model if it is in memory with these files, without loading it."""
        held = self.held((name, info.version))
        if held is None or held.fingerprint != info.fingerprint:
            return None
        self.touch((name, info.version))
        return held

    def entry(self, key: Key) -> Entry | None:
        """The version's state (read it, never change it: the tiers own it)."""
        return self._entries.get(key)

    def loading(self) -> set[Key]:
        """Versions with a load running."""
        return {k for k, e in self._entries.items() if e.load is not None}

    def in_flight(self, name: str, info: VersionInfo) -> bool:
        entry = self._entries.get((name, info.version))
        return entry is not None and entry.load is not None and entry.load_fp == info.fingerprint

    def touch(self, key: Key) -> None:
        """A request used ``key``: most recently used, and one use more."""
        now = self.clock.monotonic()
        self.usage.use(key, now)
        if key in self.memory:
            self.memory.touch(key)
            self._last_used[key] = now
        self.gpu.touch(key)
        self.disk.touch(key)

    def hold(self, loaded: LoadedModel, holder: Holder) -> None:
        """``holder``'s request was given ``loaded``: it is in use until :meth:`let_go` (a holder
        already let go holds nothing: its request ended)."""
        if not holder.closed and holder not in loaded.holders:
            loaded.holders.add(holder)
            holder.held.append(loaded)

    def let_go(self, holder: Holder) -> None:
        """``holder``'s request ended: what only it used can be evicted again."""
        freed = False
        now = self.clock.monotonic()
        for loaded in holder.held:
            loaded.holders.discard(holder)
            freed = freed or not loaded.holders
            key = (loaded.name, loaded.version)
            if key in self._last_used:
                self._last_used[key] = now  # used until now
        holder.held.clear()
        holder.closed = True
        if freed:
            self.room.notify()

    def in_use(self, key: Key) -> int:
        """How many running requests use the object in memory for ``key``."""
        held = self.held(key)
        return len(held.holders) if held is not None else 0

    def idle_for(self, key: Key) -> float | None:
        """Seconds since the version in memory was last used (``None``: not in memory)."""
        at = self._last_used.get(key)
        return None if at is None else self.clock.monotonic() - at

    def is_on_disk(self, key: Key) -> bool:
        return key in self.disk

    @property
    def in_memory(self) -> list[Key]:
        """Keys in memory, least recently used first."""
        return self.memory.versions()

    @property
    def on_disk(self) -> list[Key]:
        return self.disk.versions()

    @property
    def memory_limit(self) -> int | None:
        """The memory budget's amount (versions or bytes: ``memory.budget.unit``)."""
        return self.memory.limit

    @property
    def disk_limit(self) -> int | None:
        return self.disk.limit

    @property
    def idle(self) -> bool:
        """No download, load or folder removal is running."""
        return not self._work and not any(e.load or e.download for e in self._entries.values())

    def memory_used(self) -> int:
        """Of the memory budget, in its unit (versions, or bytes), in-flight loads included."""
        return self.memory.used(self._entries.values())

    def disk_used(self) -> int:
        return self.disk.used(self._entries.values())

    def loaded_bytes(self) -> int:
        """The sizes of the objects in memory (whatever the budget's unit)."""
        return sum(e.loaded.size for e in self._entries.values() if e.loaded is not None)

    def memory_bytes(self, key: Key) -> int | None:
        """The size of the object in memory for ``key`` (``None``: not in memory)."""
        held = self.held(key)
        return held.size if held is not None else None

    def snapshot(self) -> CacheSnapshot:
        """Both tiers as they are now (for ``/info``, the reloader's reports and tests)."""
        entries = list(self._entries.values())

        def tier(t: Tier, size: Callable[[Entry], int]) -> TierSnapshot:
            keys = tuple(t.versions())
            held = sum(size(self._entries[k]) for k in keys if k in self._entries)
            unit = t.budget.unit if t.budget is not None else None
            return TierSnapshot(t.limit, unit, t.used(entries), keys, held)

        return CacheSnapshot(
            memory=tier(self.memory, lambda e: e.loaded.size if e.loaded is not None else 0),
            disk=tier(self.disk, lambda e: e.folder.size if e.folder is not None else 0),
            gpu=tier(self.gpu, lambda e: (e.loaded.gpu_bytes or 0) if e.loaded is not None else 0),
            loads=self.load_count,
            reclaim=self.reclaimer.stats(),
        )

    def entry_states(self, key: Key) -> tuple[str, str]:
        entry = self._entries.get(key)
        return (entry.memory_state, entry.disk_state) if entry else ("absent", "absent")

    # --- disk --------------------------------------------------------------

    async def ensure_on_disk(self, name: str, info: VersionInfo, pin: bool = False) -> Folder:
        """Download the version's files once, however many callers ask.

        Without ``pin`` (a prefetch) it returns once a download of these files finished (the
        folder may be evicted again at once). With ``pin`` it returns the folder with one more
        reader, which the caller must give back: while such a caller waits, the fresh folder
        cannot be evicted before it is pinned.
        """
        key = (name, info.version)
        entry = self._entry(key)
        if pin:
            entry.wanted += 1
        try:
            while True:
                if entry.folder is not None and entry.folder.fingerprint == info.fingerprint:
                    self.disk.touch(key)
                    if pin:
                        entry.folder.readers += 1
                    return entry.folder
                self.callbacks.check_current(key, info.fingerprint)
                if entry.download is None:
                    entry.download = asyncio.get_running_loop().create_future()
                    entry.download_fp = info.fingerprint
                    self._spawn(self._download(entry, info, entry.download))
                folder = await _outcome(entry.download, entry.download_fp == info.fingerprint)
                if folder is not None and not pin:
                    return folder  # loop otherwise: the folder is checked again
        finally:
            if pin:
                entry.wanted -= 1

    async def _download(self, entry: Entry, info: VersionInfo, done: asyncio.Future[Folder]) -> None:
        name, version = entry.key
        try:
            await self.room.reserve_disk(entry, info)
            unique = f"{version}-{info.fingerprint[:12]}-{uuid.uuid4().hex[:6]}"  # never a deleted one's path
            dest = self._root / name.replace("/", "_") / unique
            started = self.clock.monotonic()
            try:
                fetch = functools.partial(self.files.fetch, info, dest)
                await asyncio.get_running_loop().run_in_executor(self._threads, fetch)
            except CortexRayError as exc:
                raise ModelLoadError(
                    f"failed downloading model {name!r} of version {version} from {info.uri}: {exc}",
                    model=name,
                    version=version,
                ) from exc
            except OSError as exc:  # the disk tier's side: full, read-only, gone
                raise ModelLoadError(
                    f"failed writing model {name!r} of version {version} to the disk cache "
                    f"({self._root}): {exc}",
                    model=name,
                    version=version,
                ) from exc
            folder = Folder(dest, info.fingerprint, info.size)
            if not self.callbacks.is_current(entry.key, info.fingerprint):  # removed or changed meanwhile
                self._delete_folders([folder])
                raise Superseded(f"model {name!r} version {version} changed while downloading", model=name)
            if entry.folder is not None:
                entry.old_folders.append(entry.folder)  # kept while the serving object came from it
            entry.folder = folder
            self.disk.add(entry.key)
            elapsed = self.clock.monotonic() - started
            log.info("downloaded model %s version %s in %.2fs", name, version, elapsed)
            self.events.downloaded(info.size, elapsed)
            done.set_result(folder)
        except Exception as exc:  # the load that asked for it records the failure
            if not isinstance(exc, Superseded):
                self.events.downloaded(info.size, None)
            done.set_exception(exc)
            done.exception()  # retrieved: background downloads need no awaiting caller
        finally:
            entry.download, entry.download_fp, entry.download_slot = None, None, False
            entry.download_reserved = 0
            self._sweep(entry)
            self.room.notify()

    # --- memory ------------------------------------------------------------

    async def load(self, name: str, info: VersionInfo, requester: Holder | None = None) -> LoadedModel:
        """Load ``info`` (once, however many callers ask at the same time). The load that
        starts may evict models only ``requester`` (the request asking, if any) uses."""
        key = (name, info.version)
        while True:
            held = self.peek(name, info)
            if held is not None:
                return held
            self.callbacks.check_current(key, info.fingerprint)
            entry = self._entry(key)
            if entry.load is None:
                entry.load = asyncio.get_running_loop().create_future()
                entry.load_fp = info.fingerprint
                self._spawn(self._load(entry, info, entry.load, requester))
            loaded = await _outcome(entry.load, entry.load_fp == info.fingerprint)
            if loaded is not None:
                return loaded  # this caller's load: served even if evicted since it landed

    async def _load(
        self, entry: Entry, info: VersionInfo, done: asyncio.Future[LoadedModel], requester: Holder | None
    ) -> None:
        name, version = entry.key
        try:
            # download (the model serving stays in memory meanwhile), then take a memory slot,
            # then pin the files; a load waiting for memory pins nothing, so a swap that needs
            # its disk slot can take it (no deadlock), and the load downloads again if so
            on_disk = entry.folder is not None and entry.folder.fingerprint == info.fingerprint
            (self.events.hit if on_disk else self.events.miss)("disk")
            room = self.room
            estimate, gpu_estimate = room.estimate(name, info.size), room.gpu_estimate(name, info.size)
            room.check_estimate(entry.key, estimate, gpu_estimate)  # (no download for what cannot fit)
            await self.ensure_on_disk(name, info)
            await room.reserve_memory(entry, info.fingerprint, requester, estimate)
            await room.reserve_gpu(entry, info.fingerprint, requester, gpu_estimate)
            folder = await self.ensure_on_disk(name, info, pin=True)  # never deleted while read
            warm_up: WarmUpRun | None = None
            try:
                loaded = await self._run_loader(
                    folder, name, version, info.fingerprint, estimate, gpu_estimate
                )
                room.check_fits(loaded)
                if self.warm_up is not None:
                    warm_up = await self.warm_up(loaded, folder.path)  # (reads its requests)
            except BaseException:
                if "loaded" in locals():
                    self.reclaimer.release(loaded.model, loaded.size)
                raise
            finally:
                folder.readers -= 1  # warm-up requests may need other models' files: not these
            room.correct(entry, loaded, estimate, gpu_estimate)
            if warm_up is not None and self.callbacks.is_current(entry.key, info.fingerprint):
                try:
                    await warm_up()
                except BaseException:
                    self.reclaimer.release(loaded.model, loaded.size)
                    raise
            self.load_count += 1
            if not self.callbacks.is_current(entry.key, info.fingerprint):
                self.reclaimer.release(loaded.model, loaded.size)
                raise Superseded(f"model {name!r} version {version} changed while loading", model=name)
            replaced = entry.loaded is not None
            self._install(entry, loaded, folder)
            room.learned(loaded)
            log.info(
                "%s model %s version %s in %.2fs (%s in memory, %s)",
                "reloaded" if replaced else "loaded",
                name,
                version,
                loaded.load_seconds,
                format_bytes(loaded.size),
                loaded.size_source,
            )
            room.shrink_to_budget(entry.key)
            self.callbacks.on_loaded(loaded)
            self.events.loaded(name, loaded.load_seconds)
            done.set_result(loaded)
        except Exception as exc:
            if not isinstance(exc, (Superseded, CacheFullError)):  # (a full cache is not the model's fault)
                self.events.loaded(name, None)
                self.callbacks.on_failed(name, info, str(exc))
            done.set_exception(exc)
            done.exception()
        finally:
            self._end_load(entry)
            self._sweep(entry)
            self.room.notify()

    async def _run_loader(
        self, folder: Folder, name: str, version: int, fingerprint: str, estimate: int, gpu_estimate: int
    ) -> LoadedModel:
        started = self.clock.monotonic()
        try:
            load = functools.partial(self._loader, str(folder.path), name, version)
            measured = functools.partial(self.meter.measure, load)
            obj, grown = await asyncio.get_running_loop().run_in_executor(self._threads, measured)
        except Exception as exc:
            raise ModelLoadError(
                f"failed loading model {name!r} of version {version}: {type(exc).__name__}: {exc}",
                model=name,
                version=version,
            ) from exc
        size, source = memory_size(obj, grown, folder.size, estimate)
        gpu, gpu_source = gpu_size(obj, grown, gpu_estimate if self.gpu.budget is not None else None)
        return LoadedModel(
            name,
            version,
            fingerprint,
            obj,
            loaded_at=self.clock.time(),
            load_seconds=self.clock.monotonic() - started,
            size=size,
            size_source=source,
            gpu_bytes=gpu,
            gpu_source=gpu_source,
        )

    def _install(self, entry: Entry, loaded: LoadedModel, folder: Folder) -> None:
        if entry.borrowed_from is not None:
            lender = self._entries.get(entry.borrowed_from)
            entry.borrowed_from = None
            if lender is not None:
                lender.lent_to = None
                log.info("model %s version %s replaced by version %s", *lender.key, loaded.version)
                self.callbacks.on_replaced(lender.key, loaded)
                self._drop_memory(lender)
        old = entry.loaded
        entry.loaded, entry.loaded_from, entry.load_slot, entry.reserved = loaded, folder, False, 0
        entry.gpu_reserved = entry.borrowed_bytes = entry.gpu_borrowed = 0
        self.memory.add(entry.key)
        if loaded.gpu_bytes:
            self.gpu.add(entry.key)
        else:
            self.gpu.discard(entry.key)
        self._last_used[entry.key] = self.clock.monotonic()
        self.usage.use(entry.key)  # the request that loaded it
        if old is not None:
            self.reclaimer.release(old.model, old.size)

    def _end_load(self, entry: Entry) -> None:
        entry.load, entry.load_fp, entry.load_slot, entry.reserved = None, None, False, 0
        entry.gpu_reserved = entry.borrowed_bytes = entry.gpu_borrowed = 0
        if entry.borrowed_from is not None:
            lender = self._entries.get(entry.borrowed_from)
            if lender is not None:
                lender.lent_to = None
            entry.borrowed_from = None

    # --- leaving the tiers -------------------------------------------------

    def _drop_memory(self, entry: Entry) -> None:
        """Unload: requests holding the object finish with it; its memory is reclaimed after."""
        if entry.loaded is None:
            return
        if entry.lent_to is not None:  # the borrower now needs a slot of its own: it takes this one
            borrower = self._entries.get(entry.lent_to)
            if borrower is not None:
                borrower.borrowed_from, borrower.load_slot = None, True
                borrower.reserved += borrower.borrowed_bytes  # (what it took over is its own now)
                borrower.gpu_reserved += borrower.gpu_borrowed
                borrower.borrowed_bytes = borrower.gpu_borrowed = 0
            entry.lent_to = None
        if entry.load is not None and not entry.load_slot:
            entry.load_slot = True  # a swap in flight keeps the slot until it ends
        obj, size = entry.loaded.model, entry.loaded.size
        entry.loaded, entry.loaded_from = None, None
        self.memory.discard(entry.key)
        self.gpu.discard(entry.key)
        self._last_used.pop(entry.key, None)
        self.reclaimer.release(obj, size)
        self._sweep(entry)
        self.room.notify()

    def _drop_disk(self, entry: Entry) -> None:
        """Forget the version's files; each folder is deleted as soon as no load reads it."""
        if entry.folder is not None:
            entry.old_folders.append(entry.folder)
            entry.folder = None
        entry.loaded_from = None
        self.disk.discard(entry.key)
        self._sweep(entry)
        self.room.notify()

    def expire_idle(self, idle_timeout: float) -> list[Key]:
        """Unload every version in memory that no request used for ``idle_timeout`` seconds and
        none uses now (its files stay on disk); the keys unloaded."""
        gone: list[Key] = []
        for key in self.memory.versions():
            entry, idle = self._entries.get(key), self.idle_for(key)
            if entry is None or idle is None or idle < idle_timeout or not entry.evictable_from_memory:
                continue
            if self.callbacks.is_pinned(key):
                continue
            log.info("unloading model %s version %s: unused for %.0fs (idle_timeout)", key[0], key[1], idle)
            self.events.evicted("memory")
            self._drop_memory(entry)
            gone.append(key)
        return gone

    def drop_stale_folder(self, key: Key) -> None:
        """The version's files on disk are no longer the published ones (and it is not in memory)."""
        entry = self._entries.get(key)
        if entry is not None and entry.folder is not None:
            self._drop_disk(entry)

    def remove(self, key: Key) -> None:
        """The version left the tree: free memory and disk (what runs ends and is discarded)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._drop_memory(entry)
            self._drop_disk(entry)

    def _sweep(self, entry: Entry) -> None:
        self._delete_folders(entry.deletable_folders())
        if entry.idle:
            self._entries.pop(entry.key, None)

    def close(self) -> None:
        """Stop: downloads and loads are cancelled, and nobody awaiting one hangs."""
        for task in list(self._work):
            task.cancel()
        for entry in self._entries.values():
            for future in (entry.load, entry.download):
                if future is not None and not future.done():
                    future.set_exception(ModelLoadError("the replica is shutting down"))
                    future.exception()
        self.reclaimer.close()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # --- helpers -----------------------------------------------------------

    def _entry(self, key: Key) -> Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Entry(key)
        return entry

    def _spawn(self, coro: Any) -> asyncio.Future[Any]:
        # an empty context: a load or download is nobody's request (no holder, no versions)
        task = contextvars.Context().run(asyncio.ensure_future, coro)
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return task

    def _delete_folders(self, folders: list[Folder]) -> None:
        """Delete model folders in a thread (model folders can be gigabytes)."""
        for folder in folders:
            try:
                self._spawn(asyncio.to_thread(self.files.remove, folder.path))
            except RuntimeError:  # no running loop (shutdown): do it here
                self.files.remove(folder.path)


def _memory_weight(budget: Budget | None) -> Callable[[Entry], int]:
    if budget is not None and budget.unit == "bytes":
        return lambda e: e.memory_bytes
    return lambda e: 1 if e.holds_memory_slot else 0


def _disk_weight(budget: Budget | None) -> Callable[[Entry], int]:
    if budget is not None and budget.unit == "bytes":
        return lambda e: e.disk_bytes
    return lambda e: 1 if e.holds_disk_slot else 0


async def _outcome(future: asyncio.Future[Any], mine: bool) -> Any:
    """Wait for a download or load: its result and error are the caller's when it was for the
    caller's files; one for other files only makes the caller look again (``None``)."""
    if mine:
        return await asyncio.shield(future)
    await asyncio.wait([future])
    return None
