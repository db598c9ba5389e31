"""A replica's model cache: a memory tier and a disk tier, LRU, one load per version.

All bookkeeping happens on the replica's event loop (no locks); downloads and
the user's ``load_model`` run in threads. Limits count model versions and are
enforced at the moment of each load, before anything new is admitted, so the
cache never holds more than ``memory_limit`` loaded versions or
``disk_limit`` downloaded versions (in-flight loads included).
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

from cortex_ray.cache.resolve import resolve_version
from cortex_ray.errors import ModelLoadError
from cortex_ray.models.tree import ModelTree, VersionInfo
from cortex_ray.storage import open_storage

__all__ = ["Key", "LoadedModel", "ModelCache"]

log = logging.getLogger("cortex_ray.cache")

Key = tuple[str, int]
Loader = Callable[[str], Any]


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
    size: int


class ModelCache:
    """Per-replica LRU over memory and disk, fed by pushed :class:`ModelTree` s."""

    def __init__(
        self,
        loader: Loader,
        root: Path,
        memory_limit: int | None = None,
        disk_limit: int | None = None,
        tree: ModelTree | None = None,
    ) -> None:
        self._loader = loader
        self._root = Path(root)
        self.memory_limit = memory_limit
        self.disk_limit = disk_limit
        self.tree = tree or ModelTree()
        self._memory: OrderedDict[Key, LoadedModel] = OrderedDict()
        self._disk: OrderedDict[Key, _OnDisk] = OrderedDict()
        self._loading: dict[tuple[str, int, str], asyncio.Future[LoadedModel]] = {}
        self._downloads: dict[tuple[str, int, str], asyncio.Future[Path]] = {}
        self._failures: dict[Key, tuple[str, str]] = {}  # key -> (fingerprint, reason)
        self._memory_reserved = 0
        self._disk_reserved = 0
        self._changed = asyncio.Condition()
        self.load_count = 0

    # --- the public surface ------------------------------------------------

    async def get(self, name: str | None, version: str | int | None = "latest") -> LoadedModel:
        """The loaded model for ``name``/``version`` (loading it if needed)."""
        info = resolve_version(self.tree, name, version)
        return await self.get_version(info[0], info[1])

    async def get_version(self, name: str, info: VersionInfo) -> LoadedModel:
        key = (name, info.version)
        held = self._memory.get(key)
        if held is not None and held.fingerprint == info.fingerprint:
            self._memory.move_to_end(key)
            if key in self._disk:
                self._disk.move_to_end(key)
            return held
        flight = (name, info.version, info.fingerprint)
        pending = self._loading.get(flight)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[flight] = pending
            asyncio.get_running_loop().create_task(self._load(name, info, pending))
        return await asyncio.shield(pending)

    def peek(self, name: str, info: VersionInfo) -> LoadedModel | None:
        """The loaded model if it is in memory and current, without loading it."""
        held = self._memory.get((name, info.version))
        if held is None or held.fingerprint != info.fingerprint:
            return None
        self._memory.move_to_end((name, info.version))
        return held

    async def download_all(self) -> None:
        """Download every valid version of the tree (no-cache mode: before ready)."""
        jobs = [
            self._ensure_on_disk(name, info)
            for name, model in self.tree.models.items()
            for info in model.versions.values()
            if info.valid
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("download failed: %s", result)

    def set_tree(self, tree: ModelTree) -> None:
        """Take a new model tree; drop what it no longer holds (memory and disk)."""
        self.tree = tree
        for key in list(self._memory):
            if not self._current(key, self._memory[key].fingerprint):
                self._unload(key)
        for key in list(self._disk):
            if not self._current(key, self._disk[key].fingerprint):
                self._delete(key)

    def state(self, name: str, version: int) -> dict[str, Any]:
        """What this replica knows of one version (for ``/info``)."""
        key = (name, version)
        info = self.tree.models[name].versions[version] if name in self.tree.models else None
        out: dict[str, Any] = {"in_memory": key in self._memory, "on_disk": key in self._disk}
        if info is not None and info.error:
            out.update(state="failed", reason=info.error)
        elif any(f[:2] == key for f in self._loading):
            out["state"] = "loading"
        elif key in self._failures and info is not None and self._failures[key][0] == info.fingerprint:
            out.update(state="failed", reason=self._failures[key][1])
        else:
            out["state"] = "available"
        if key in self._memory:
            out["loaded_at"] = self._memory[key].loaded_at
            out["load_seconds"] = round(self._memory[key].load_seconds, 3)
        return out

    @property
    def in_memory(self) -> list[Key]:
        """Keys in memory, least recently used first."""
        return list(self._memory)

    @property
    def on_disk(self) -> list[Key]:
        return list(self._disk)

    # --- loading -----------------------------------------------------------

    async def _load(self, name: str, info: VersionInfo, done: asyncio.Future[LoadedModel]) -> None:
        key = (name, info.version)
        flight = (name, info.version, info.fingerprint)
        try:
            path = await self._ensure_on_disk(name, info)
            await self._reserve(self._memory, self.memory_limit, "_memory_reserved", self._unload)
            try:
                started = time.perf_counter()
                try:
                    obj = await asyncio.to_thread(self._loader, str(path))
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
                if self._current(key, info.fingerprint):
                    self._unload(key)  # an older copy of the same version, if any
                    self._memory[key] = loaded
            finally:
                self._memory_reserved -= 1
                self._notify()
            self._failures.pop(key, None)
            log.info("loaded model %s version %s in %.2fs", name, info.version, loaded.load_seconds)
            done.set_result(loaded)
        except BaseException as exc:
            self._failures[key] = (info.fingerprint, str(exc))
            log.error("model %s version %s: %s", name, info.version, exc)
            if not done.done():
                done.set_exception(exc)
        finally:
            self._loading.pop(flight, None)

    async def _ensure_on_disk(self, name: str, info: VersionInfo) -> Path:
        flight = (name, info.version, info.fingerprint)
        pending = self._downloads.get(flight)
        if pending is None:
            pending = asyncio.ensure_future(self._download(name, info))
            self._downloads[flight] = pending
            pending.add_done_callback(lambda _: self._downloads.pop(flight, None))
        return await asyncio.shield(pending)

    async def _download(self, name: str, info: VersionInfo) -> Path:
        key = (name, info.version)
        entry = self._disk.get(key)
        if entry is not None and entry.fingerprint == info.fingerprint and entry.path.exists():
            self._disk.move_to_end(key)
            return entry.path
        if entry is not None:
            self._delete_files(key)
        await self._reserve(self._disk, self.disk_limit, "_disk_reserved", self._delete_files)
        try:
            dest = self._root / _safe(name) / str(info.version)
            try:
                await asyncio.to_thread(open_storage(info.uri).download, "", dest, info.files)
            except Exception as exc:
                raise ModelLoadError(
                    f"failed downloading model {name!r} of version {info.version} from {info.uri}: {exc}",
                    model=name,
                    version=info.version,
                ) from exc
            self._disk[key] = _OnDisk(dest, info.fingerprint, info.size)
        finally:
            self._disk_reserved -= 1
            self._notify()
        return dest

    async def _reserve(
        self,
        tier: OrderedDict[Key, Any],
        limit: int | None,
        counter: str,
        evict: Callable[[Key], None],
    ) -> None:
        """Take one slot of ``tier``, evicting least recently used entries first.

        Slots taken by loads still running count as used; when every slot is
        taken by such loads, wait until one finishes.
        """
        while True:
            if limit is None or len(tier) + getattr(self, counter) < limit:
                setattr(self, counter, getattr(self, counter) + 1)
                return
            busy = {f[:2] for f in self._loading} if tier is self._disk else set()
            victims = [k for k in tier if k not in busy]
            if tier is self._disk:  # prefer copies that are not also in memory
                victims.sort(key=lambda k: k in self._memory)
            if victims:
                evict(victims[0])
                continue
            async with self._changed:
                await self._changed.wait()

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(wake())

    def _current(self, key: Key, fingerprint: str) -> bool:
        model = self.tree.models.get(key[0])
        info = model.versions.get(key[1]) if model else None
        return info is not None and info.valid and info.fingerprint == fingerprint

    def _unload(self, key: Key) -> None:
        if self._memory.pop(key, None) is None:
            return
        log.info("unloaded model %s version %s", *key)
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and getattr(torch, "cuda", None) and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _delete_files(self, key: Key) -> None:
        entry = self._disk.pop(key, None)
        if entry is not None:
            shutil.rmtree(entry.path, ignore_errors=True)
            log.info("deleted model %s version %s from disk", *key)

    def _delete(self, key: Key) -> None:
        self._unload(key)
        self._delete_files(key)


def _safe(name: str) -> str:
    return name.replace("/", "_")
