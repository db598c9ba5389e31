"""A replica's model cache: memory and disk tiers, LRU, one load per version, live swaps.

All bookkeeping runs on the replica's event loop (no locks); downloads and the
user's ``load_model`` run in threads. Limits count model versions and are
enforced at the moment of each load, in-flight loads included (see
:mod:`cortex_ray.cache.tiers`).

Live reloading (:meth:`ModelCache.set_tree`) never makes a request wait on a
swap: a version whose files changed keeps serving its loaded object while the
new files load in the background; "latest" moves to a new version only once
that version loaded; a request for "latest" that must load falls back to lower
versions when the highest fails. Failed loads are retried with backoff, and at
once when their files change again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from cortex_ray.cache.resolve import resolve_model, resolve_version
from cortex_ray.cache.tiers import Key, LoadedModel, Loader, Tiers
from cortex_ray.errors import ModelLoadError
from cortex_ray.models.tree import ModelInfo, ModelTree, VersionInfo

__all__ = ["Key", "LoadedModel", "ModelCache"]

log = logging.getLogger("cortex_ray.cache")
MAX_BACKOFF = 60.0


class _Failure:
    def __init__(self, fingerprint: str, reason: str, attempts: int) -> None:
        self.fingerprint = fingerprint
        self.reason = reason
        self.attempts = attempts
        self.at = time.time()
        self.retry_at = time.monotonic() + min(MAX_BACKOFF, 2.0 ** (attempts - 1))


class ModelCache(Tiers):
    """Per-replica cache fed by the model trees the reloader publishes."""

    def __init__(
        self,
        loader: Loader,
        root: Path | str,
        memory_limit: int | None = None,
        disk_limit: int | None = None,
        tree: ModelTree | None = None,
    ) -> None:
        super().__init__(loader, Path(root), memory_limit, disk_limit)
        self.tree = tree or ModelTree()
        self._latest: dict[str, int] = {}
        self._failures: dict[Key, _Failure] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retry_task: asyncio.Task[None] | None = None

    # --- requests ----------------------------------------------------------

    async def get(self, name: str | None, version: str | int | None = "latest") -> LoadedModel:
        """The loaded model for ``name``/``version`` (loading it if needed)."""
        if version is None or version == "latest":
            model_name, model = resolve_model(self.tree, name)
            return await self._get_latest(model_name, model)
        model_name, info = resolve_version(self.tree, name, version)
        return await self._get_exact(model_name, info)

    async def _get_exact(self, name: str, info: VersionInfo) -> LoadedModel:
        held = self._memory.get((name, info.version))
        if held is not None:
            self.touch((name, info.version))
            if held.fingerprint != info.fingerprint:
                self._background(name, info)  # serve the old files while the new ones load
            return held
        self._raise_if_backing_off(name, info)
        return await self.load(name, info)

    async def _get_latest(self, name: str, model: ModelInfo) -> LoadedModel:
        candidates = sorted(model.valid_versions, reverse=True)
        top = model.versions[candidates[0]]
        pointer = self._latest.get(name)
        held = self._memory.get((name, pointer)) if pointer is not None else None
        if held is not None and pointer in model.versions:
            self.touch((name, held.version))
            if pointer != top.version or held.fingerprint != top.fingerprint:
                self._background(name, top)
            if held.fingerprint != model.versions[held.version].fingerprint:
                self._background(name, model.versions[held.version])
            return held
        error: BaseException | None = None
        for v in candidates:  # load the highest version that loads
            info = model.versions[v]
            current = self._memory.get((name, v))
            if current is not None and current.fingerprint == info.fingerprint:
                self._latest[name] = v
                return current
            try:
                self._raise_if_backing_off(name, info)
                loaded = await self.load(name, info)
            except ModelLoadError as exc:
                error = error or exc
                continue
            self._latest[name] = v
            return loaded
        assert error is not None
        raise error

    def _raise_if_backing_off(self, name: str, info: VersionInfo) -> None:
        failure = self._failures.get((name, info.version))
        if failure and failure.fingerprint == info.fingerprint and time.monotonic() < failure.retry_at:
            raise ModelLoadError(failure.reason, model=name, version=info.version)

    # --- new trees ---------------------------------------------------------

    def set_tree(self, tree: ModelTree) -> None:
        """Reconcile with a newly published tree (idempotent)."""
        self.tree = tree
        for key in list(self._memory) + list(self._disk):
            info = self._info(key)
            if info is None or not info.valid:
                self._delete(key)  # removed: free memory and disk
            elif key in self._memory and self._memory[key].fingerprint != info.fingerprint:
                self._background(key[0], info)  # changed in place: reload, keep serving the old
            elif (
                key not in self._memory
                and self._disk[key].fingerprint != info.fingerprint
                and not any(f[:2] == key for f in self._loading)  # never under a running load
            ):
                self._delete(key)
        self._failures = {k: f for k, f in self._failures.items() if self._fingerprint(k) == f.fingerprint}
        for name, pointer in list(self._latest.items()):
            model = tree.models.get(name)
            if model is None or pointer not in model.versions:
                del self._latest[name]
            elif model.latest is not None and (name, pointer) in self._memory:
                self._background(name, model.versions[model.latest])  # the holder loads the new latest
        if self.memory_limit is None:  # no cache limits: keep every version on disk, as Cortex did
            for name, model in tree.models.items():
                for info in model.versions.values():
                    if info.valid and (name, info.version) not in self._disk:
                        self._spawn(self._quiet(self.ensure_on_disk(name, info)))

    async def download_all(self) -> None:
        """Download every valid version (no-cache mode, before the replica is ready)."""
        jobs = [
            self.ensure_on_disk(name, info)
            for name, model in self.tree.models.items()
            for info in model.versions.values()
            if info.valid
        ]
        for result in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(result, BaseException):
                log.error("download failed: %s", result)

    # --- background loads and retries -----------------------------------------

    def _background(self, name: str, info: VersionInfo) -> None:
        if self.in_flight(name, info):
            return
        failure = self._failures.get((name, info.version))
        if failure and failure.fingerprint == info.fingerprint and time.monotonic() < failure.retry_at:
            self._ensure_retry_loop()
            return
        self._spawn(self._quiet(self.load(name, info)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quiet(self, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception as exc:  # loads record themselves in _failures; downloads only log
            log.warning("background load or download failed: %s", exc)

    def _ensure_retry_loop(self) -> None:
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_loop())

    async def _retry_loop(self) -> None:
        while self._failures:
            await asyncio.sleep(1.0)
            for key, failure in list(self._failures.items()):
                info = self._info(key)
                if info is None or info.fingerprint != failure.fingerprint:
                    continue
                wanted = key in self._memory or (
                    key[0] in self._latest and self.tree.models[key[0]].latest == key[1]
                )
                if wanted and time.monotonic() >= failure.retry_at:
                    self._spawn(self._quiet(self.load(key[0], info)))

    # --- hooks called by Tiers ---------------------------------------------

    def _on_loaded(self, loaded: LoadedModel) -> None:
        key = (loaded.name, loaded.version)
        self._failures.pop(key, None)
        model = self.tree.models.get(loaded.name)
        if model is not None and model.latest == loaded.version and loaded.name in self._latest:
            if self._latest[loaded.name] != loaded.version:
                log.info("model %s: latest is now version %s", loaded.name, loaded.version)
            self._latest[loaded.name] = loaded.version

    def _on_failed(self, name: str, info: VersionInfo, reason: str) -> None:
        key = (name, info.version)
        previous = self._failures.get(key)
        attempts = previous.attempts + 1 if previous and previous.fingerprint == info.fingerprint else 1
        self._failures[key] = _Failure(info.fingerprint, reason, attempts)
        log.error("model %s version %s failed (attempt %d): %s", name, info.version, attempts, reason)
        if key in self._memory or name in self._latest:
            self._ensure_retry_loop()

    def _is_current(self, key: Key, fingerprint: str) -> bool:
        return self._fingerprint(key) == fingerprint

    def _info(self, key: Key) -> VersionInfo | None:
        model = self.tree.models.get(key[0])
        return model.versions.get(key[1]) if model else None

    def _fingerprint(self, key: Key) -> str | None:
        info = self._info(key)
        return info.fingerprint if info is not None else None

    # --- introspection -----------------------------------------------------

    def state(self, name: str, version: int) -> dict[str, Any]:
        """What this replica knows of one version (for ``/info``)."""
        key = (name, version)
        info = self._info(key)
        held = self._memory.get(key)
        out: dict[str, Any] = {"in_memory": held is not None, "on_disk": key in self._disk}
        failure = self._failures.get(key)
        if info is not None and info.error:
            out.update(state="failed", reason=info.error)
        elif info is not None and self.in_flight(name, info):
            out["state"] = "loading"
        elif failure is not None and info is not None and failure.fingerprint == info.fingerprint:
            out.update(state="failed", reason=failure.reason, failed_at=failure.at, attempts=failure.attempts)
        else:
            out["state"] = "available"
        if held is not None:
            metadata = getattr(held.model, "cortex_metadata", None)
            if isinstance(metadata, dict):
                out.update(metadata)
            out["loaded_at"] = held.loaded_at
            out["load_seconds"] = round(held.load_seconds, 3)
            if info is not None and held.fingerprint != info.fingerprint:
                out["serving_previous_files"] = True
        if self._latest.get(name) == version:
            out["serving_latest"] = True
        return out

    async def close(self) -> None:
        for task in [*self._tasks, *([self._retry_task] if self._retry_task else [])]:
            task.cancel()
