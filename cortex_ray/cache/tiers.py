"""The two cache tiers (memory, disk) and single-flight loading.

Limits count model versions. A load first takes a slot in each tier it needs,
evicting the least recently used entries; slots taken by loads still running
count as used, and when every slot is taken by such loads the new load waits.
So neither tier ever holds more than its limit, in-flight loads included.
Disk folders are named by the files' fingerprint, so a version being reloaded
keeps its old folder until its new object has replaced the old one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex_ray.errors import ModelLoadError
from cortex_ray.models.tree import VersionInfo
from cortex_ray.storage import open_storage

__all__ = ["Key", "LoadedModel", "Loader", "Tiers"]

log = logging.getLogger("cortex_ray.cache")

Key = tuple[str, int]
Flight = tuple[str, int, str]
Loader = Callable[[str, str, int], Any]
"""``loader(local_path, model_name, version)`` -> the model object."""


@dataclass
class LoadedModel:
    """A model version held in memory."""

    name: str
    version: int
    fingerprint: str
    model: Any
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0


@dataclass
class _OnDisk:
    path: Path
    fingerprint: str


class Tiers:
    """Memory and disk tiers; subclasses decide what is current and react to loads."""

    def __init__(self, loader: Loader, root: Path, memory_limit: int | None, disk_limit: int | None) -> None:
        self._loader = loader
        self._root = root
        self.memory_limit = memory_limit
        self.disk_limit = disk_limit
        self._memory: OrderedDict[Key, LoadedModel] = OrderedDict()
        self._disk: OrderedDict[Key, _OnDisk] = OrderedDict()
        self._stale_paths: dict[Key, list[Path]] = {}
        self._loading: dict[Flight, asyncio.Future[LoadedModel]] = {}
        self._downloads: dict[Flight, asyncio.Future[Path]] = {}
        self._reserved = {"memory": 0, "disk": 0}
        self._slot_freed = asyncio.Condition()
        self.load_count = 0

    # --- hooks -------------------------------------------------------------

    def _is_current(self, key: Key, fingerprint: str) -> bool:
        """Whether these files are still the ones published for ``key`` (subclasses know the tree)."""
        return True

    def _on_loaded(self, loaded: LoadedModel) -> None:
        """Called after every successful load (the subclass moves "latest" there)."""

    def _on_failed(self, name: str, info: VersionInfo, reason: str) -> None:
        """Called after every failed download or load (the subclass records it and retries)."""

    # --- loading -----------------------------------------------------------

    def in_flight(self, name: str, info: VersionInfo) -> bool:
        return (name, info.version, info.fingerprint) in self._loading

    def touch(self, key: Key) -> None:
        self._memory.move_to_end(key)
        if key in self._disk:
            self._disk.move_to_end(key)

    def peek(self, name: str, info: VersionInfo) -> LoadedModel | None:
        """The loaded model if it is in memory with these files, without loading it."""
        held = self._memory.get((name, info.version))
        if held is None or held.fingerprint != info.fingerprint:
            return None
        self.touch((name, info.version))
        return held

    async def load(self, name: str, info: VersionInfo) -> LoadedModel:
        """Load ``info`` (once, however many callers ask at the same time)."""
        held = self.peek(name, info)
        if held is not None:
            return held
        flight = (name, info.version, info.fingerprint)
        pending = self._loading.get(flight)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[flight] = pending
            asyncio.get_running_loop().create_task(self._load(name, info, pending))
        return await asyncio.shield(pending)

    async def _load(self, name: str, info: VersionInfo, done: asyncio.Future[LoadedModel]) -> None:
        key = (name, info.version)
        try:
            path = await self.ensure_on_disk(name, info)
            swap = key in self._memory  # the new object takes the old one's slot
            if not swap:
                await self._reserve("memory", self._memory, self.memory_limit, self._unload)
            try:
                started = time.perf_counter()
                try:
                    obj = await asyncio.to_thread(self._loader, str(path), name, info.version)
                except Exception as exc:
                    raise ModelLoadError(
                        f"failed loading model {name!r} of version {info.version}: "
                        f"{type(exc).__name__}: {exc}",
                        model=name,
                        version=info.version,
                    ) from exc
                loaded = LoadedModel(name, info.version, info.fingerprint, obj)
                loaded.load_seconds = time.perf_counter() - started
                self.load_count += 1
                if self._is_current(key, info.fingerprint):
                    replaced = key in self._memory
                    self._unload(key, quiet=True)
                    self._memory[key] = loaded
                    self._drop_stale_paths(key)
                    action = "reloaded" if replaced else "loaded"
                    log.info(
                        "%s model %s version %s in %.2fs", action, name, info.version, loaded.load_seconds
                    )
            finally:
                if not swap:
                    self._reserved["memory"] -= 1
                await self._notify()
            self._on_loaded(loaded)
            done.set_result(loaded)
        except Exception as exc:
            self._on_failed(name, info, str(exc))
            done.set_exception(exc)
            done.exception()  # retrieved: background loads need no awaiting caller
        finally:
            self._loading.pop((name, info.version, info.fingerprint), None)

    async def ensure_on_disk(self, name: str, info: VersionInfo) -> Path:
        entry = self._disk.get((name, info.version))
        if entry is not None and entry.fingerprint == info.fingerprint and entry.path.exists():
            self._disk.move_to_end((name, info.version))
            return entry.path
        flight = (name, info.version, info.fingerprint)
        pending = self._downloads.get(flight)
        if pending is None:
            pending = asyncio.ensure_future(self._download(name, info))
            self._downloads[flight] = pending
            pending.add_done_callback(lambda _: self._downloads.pop(flight, None))
        return await asyncio.shield(pending)

    async def _download(self, name: str, info: VersionInfo) -> Path:
        key = (name, info.version)
        # a version already on disk (older files) is replaced in its own slot: no new one needed
        reserve = key not in self._disk
        if reserve:
            await self._reserve("disk", self._disk, self.disk_limit, self._delete_files)
        try:
            dest = self._root / name.replace("/", "_") / f"{info.version}-{info.fingerprint[:12]}"
            started = time.perf_counter()
            try:
                await asyncio.to_thread(open_storage(info.uri).download, "", dest, info.files)
            except Exception as exc:
                raise ModelLoadError(
                    f"failed downloading model {name!r} of version {info.version} from {info.uri}: {exc}",
                    model=name,
                    version=info.version,
                ) from exc
            if not self._is_current(key, info.fingerprint):  # removed or changed while downloading
                self._remove_folder(dest)
                return dest
            old = self._disk.pop(key, None)
            if old is not None and old.path != dest:
                self._stale_paths.setdefault(key, []).append(old.path)
                if key not in self._memory:
                    self._drop_stale_paths(key)
            self._disk[key] = _OnDisk(dest, info.fingerprint)
            log.info(
                "downloaded model %s version %s in %.2fs", name, info.version, time.perf_counter() - started
            )
            return dest
        finally:
            if reserve:
                self._reserved["disk"] -= 1
            await self._notify()

    # --- limits and eviction -------------------------------------------------

    async def _reserve(
        self, tier: str, entries: OrderedDict[Key, Any], limit: int | None, evict: Callable[[Key], None]
    ) -> None:
        while True:
            if limit is None or len(entries) + self._reserved[tier] < limit:
                self._reserved[tier] += 1
                return
            busy = {f[:2] for f in self._loading} if tier == "disk" else set()
            victims = [k for k in entries if k not in busy]
            if tier == "disk":  # prefer copies that are not also in memory
                victims.sort(key=lambda k: k in self._memory)
            if victims:
                log.info("evicting model %s version %s from %s (LRU)", *victims[0], tier)
                evict(victims[0])
                continue
            async with self._slot_freed:
                await self._slot_freed.wait()

    async def _notify(self) -> None:
        async with self._slot_freed:
            self._slot_freed.notify_all()

    def _unload(self, key: Key, quiet: bool = False) -> None:
        if self._memory.pop(key, None) is None:
            return
        if not quiet:
            log.info("unloaded model %s version %s", *key)
        self._drop_stale_paths(key)
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and getattr(torch, "cuda", None) and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _delete_files(self, key: Key) -> None:
        entry = self._disk.pop(key, None)
        if entry is not None:
            self._remove_folder(entry.path)
        self._drop_stale_paths(key)

    def _drop_stale_paths(self, key: Key) -> None:
        for path in self._stale_paths.pop(key, []):
            self._remove_folder(path)

    def _remove_folder(self, path: Path) -> None:
        """Delete a model folder in a thread (model folders can be gigabytes)."""
        try:
            asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, path, True)
        except RuntimeError:  # no running loop (shutdown): do it here
            shutil.rmtree(path, ignore_errors=True)

    def _delete(self, key: Key) -> None:
        self._unload(key)
        self._delete_files(key)

    @property
    def in_memory(self) -> list[Key]:
        """Keys in memory, least recently used first."""
        return list(self._memory)

    @property
    def on_disk(self) -> list[Key]:
        return list(self._disk)
