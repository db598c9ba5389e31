"""A replica's model cache: what to serve, what to load, what a new tree changes.

The tiers (:mod:`cortex_ray.cache.tiers`) hold the slots and run downloads and loads;
this class decides which version serves a request and reconciles with each tree the
reloader publishes (an idempotent :meth:`ModelCache.set_tree`).

Live reloading never makes a request wait on a swap: a version whose files changed
keeps serving its loaded object while the new files load in the background; "latest"
moves to a new version only once that version loaded (counted in versions, its load takes
over the memory slot of the version it replaces, so nothing is evicted for it; in bytes, it
takes room of its own when some can be made, and the version it replaced stays cached like
any other until it is evicted, else it borrows that version's bytes); a request for "latest"
that must load falls back to lower versions when the highest fails. Failed loads are
retried with backoff, and at once when their files change again. The event loop's
``try_get`` and the awaiting ``get`` follow the same rules.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from cortex_ray.cache.callbacks import Superseded, TierCallbacks
from cortex_ray.cache.events import CacheEvents
from cortex_ray.cache.files import ModelFiles
from cortex_ray.cache.introspect import CacheSnapshot, version_state
from cortex_ray.cache.resolve import parse_version, resolve_model, resolve_version
from cortex_ray.cache.tiers import MEMORY_WAIT, Holder, Key, LoadedModel, Loader, Tiers
from cortex_ray.clock import SYSTEM, Clock
from cortex_ray.errors import ModelLoadError
from cortex_ray.models.delta import TreeDelta
from cortex_ray.models.diff import Change, diff_trees
from cortex_ray.models.tree import ModelInfo, ModelTree, VersionInfo
from cortex_ray.spec.quantity import Budget

__all__ = ["Holder", "Key", "LoadedModel", "ModelCache"]

log = logging.getLogger("cortex_ray.cache")
MAX_BACKOFF = 60.0
"""A version whose load failed is tried again after 1, 2, 4... seconds, at most this long."""
RETRY_EVERY = 1.0
"""How often failed versions that something still asks for are looked at again."""


class _Failure:
    def __init__(self, fingerprint: str, reason: str, attempts: int, clock: Clock) -> None:
        self.fingerprint = fingerprint
        self.reason = reason
        self.attempts = attempts
        self.at = clock.time()
        self.retry_at = clock.monotonic() + min(MAX_BACKOFF, 2.0 ** (attempts - 1))


class ModelCache:
    """Per-replica cache fed by the model trees the reloader publishes; it owns the tiers
    (:attr:`tiers`) and answers what they ask (current files, pins, "latest")."""

    def __init__(
        self,
        loader: Loader,
        root: Path | str,
        memory_limit: int | None = None,
        disk_limit: int | None = None,
        tree: ModelTree | None = None,
        events: CacheEvents | None = None,
        clock: Clock = SYSTEM,
        memory_wait: float = MEMORY_WAIT,
        idle_timeout: float | None = None,
        pinned: Iterable[tuple[str, int | None]] = (),
        memory: Budget | None = None,
        disk: Budget | None = None,
        files: ModelFiles | None = None,
        gpu: Budget | None = None,
    ) -> None:
        self.clock = clock
        self.tiers = Tiers(
            loader,
            Path(root),
            memory_limit,
            disk_limit,
            clock,
            memory_wait,
            memory=memory,
            disk=disk,
            files=files,
            gpu=gpu,
            callbacks=TierCallbacks(
                is_current=self._is_current,
                is_pinned=self.is_pinned,
                lender_for=self._lender_for,
                on_loaded=self._on_loaded,
                on_failed=self._on_failed,
                on_replaced=self._on_replaced,
            ),
        )
        """The memory and disk tiers: slots, downloads, loads (their queries are public)."""
        if events is not None:
            self.tiers.events = events
        self.idle_timeout = idle_timeout
        """Unload versions no request used for this long (``None``: only to make room)."""
        self._expiry_task: asyncio.Task[None] | None = None
        self.pinned = list(pinned)
        """Models loaded at start and never evicted: (name, version), ``None`` for the latest."""
        self.tree = tree or ModelTree()
        self._latest: dict[str, int] = {}
        self._failures: dict[Key, _Failure] = {}
        self._retry_task: asyncio.Task[None] | None = None
        self._undownloaded: set[Key] = set()
        """Versions whose download failed (no memory budget: every version is kept on disk)."""
        self._work: set[asyncio.Future[Any]] = set()
        """Background loads and downloads this cache started (cancelled by :meth:`close`)."""

    # --- requests ----------------------------------------------------------

    def try_get(
        self, name: str | None, version: str | int | None = "latest", requester: Holder | None = None
    ) -> LoadedModel | None:
        """What serves ``name``/``version`` right now without waiting, or ``None`` when that
        needs a load. Raises the request's 4xx/503 errors. Starts background swaps. With
        ``requester``, what it returns is held for that request (as :meth:`get`)."""
        held = self._serving(name, version)
        if held is not None and requester is not None:
            self.tiers.hold(held, requester)
        return held

    def _serving(self, name: str | None, version: str | int | None) -> LoadedModel | None:
        wanted = parse_version(version)
        if wanted is None:
            model_name, model = resolve_model(self.tree, name)
            return self._serving_latest(model_name, model)
        model_name, info = resolve_version(self.tree, name, wanted)
        held = self.tiers.held((model_name, info.version))
        if held is None:
            return None
        self.tiers.touch((model_name, info.version))
        self.events.hit("memory")
        if held.fingerprint != info.fingerprint:
            self._background(model_name, info)  # serve the old files while the new ones load
        return held

    async def get(
        self, name: str | None, version: str | int | None = "latest", requester: Holder | None = None
    ) -> LoadedModel:
        """The loaded model for ``name``/``version`` (loading it if needed). With ``requester``
        (the request asking), the object is held for it until :meth:`let_go`, and a load it
        starts may evict models only it uses."""
        for attempt in range(5):  # a new tree may land while a load runs: resolve again
            held = self._serving(name, version)
            if held is None:
                if attempt == 0:
                    self.events.miss("memory")
                try:
                    held = await self._load_for(name, version, requester)
                except Superseded:
                    continue
            if requester is not None:
                self.tiers.hold(held, requester)
            return held
        raise ModelLoadError(f"model {name!r} kept changing while it was being loaded; try again")

    def _serving_latest(self, name: str, model: ModelInfo) -> LoadedModel | None:
        pointer = self._latest.get(name)
        held = self.tiers.held((name, pointer)) if pointer is not None else None
        if held is None or pointer not in model.versions:
            return None
        latest = model.latest
        assert pointer is not None and latest is not None
        self.tiers.touch((name, pointer))
        self.events.hit("memory")
        top = model.versions[latest]
        if pointer != top.version:
            self._background(name, top)  # "latest" moves once it loaded (in this one's slot)
        elif held.fingerprint != top.fingerprint:
            self._background(name, top)
        return held

    async def _load_for(
        self, name: str | None, version: str | int | None, requester: Holder | None
    ) -> LoadedModel:
        wanted = parse_version(version)
        if wanted is not None:
            model_name, info = resolve_version(self.tree, name, wanted)
            self._raise_if_backing_off(model_name, info)
            return await self.tiers.load(model_name, info, requester)
        model_name, model = resolve_model(self.tree, name)
        error: ModelLoadError | None = None
        for v in model.candidates:  # the highest version that loads
            info = model.versions[v]
            try:
                held = self.tiers.peek(model_name, info)
                if held is None:
                    self._raise_if_backing_off(model_name, info)
                    held = await self.tiers.load(model_name, info, requester)
            except Superseded:
                raise
            except ModelLoadError as exc:
                error = error or exc
                continue
            self._latest[model_name] = v
            return held
        assert error is not None
        raise error

    def _raise_if_backing_off(self, name: str, info: VersionInfo) -> None:
        failure = self._failures.get((name, info.version))
        if failure and failure.fingerprint == info.fingerprint and self.clock.monotonic() < failure.retry_at:
            raise ModelLoadError(failure.reason, model=name, version=info.version)

    # --- new trees ---------------------------------------------------------

    def set_tree(self, tree: ModelTree, changed: Collection[str] | None = None) -> list[Change]:
        """Reconcile with a newly published tree (idempotent); returns what changed, version by
        version. ``changed``: the names of the models that changed (from a delta; ``None``: any
        may have): then the work is proportional to what the cache holds and to ``changed``, not
        to the tree."""
        if changed is None:
            changes = diff_trees(self.tree, tree)
        else:
            changes = TreeDelta({n: tree.models.get(n) for n in changed}).changes(self.tree)
        self.tree = tree
        only = None if changed is None else set(changed)
        for key in {*self.tiers.in_memory, *self.tiers.on_disk}:
            if only is not None and key[0] not in only:
                continue  # (its model did not change)
            info = self._info(key)
            held = self.tiers.held(key)
            if info is None or not info.valid:
                self.tiers.remove(key)  # removed: free memory and disk (loads running are discarded)
            elif held is not None and held.fingerprint != info.fingerprint:
                self._background(key[0], info)  # changed in place: reload, keep serving the old
            elif held is None:
                entry = self.tiers.entry(key)
                if entry is not None and entry.folder and entry.folder.fingerprint != info.fingerprint:
                    self.tiers.drop_stale_folder(key)  # deleted once no load reads it
        self._failures = {k: f for k, f in self._failures.items() if self._fingerprint(k) == f.fingerprint}
        for name, pointer in list(self._latest.items()):
            if only is not None and name not in only:
                continue
            model = tree.models.get(name)
            if model is None or pointer not in model.versions:
                del self._latest[name]
            elif model.latest is not None and model.latest != pointer and self.tiers.held((name, pointer)):
                self._background(name, model.versions[model.latest])
        for name, version in self._missing_pins():
            self._spawn(self._quiet(self.get(name, version or "latest")))
        if self.tiers.memory_limit is None:  # no cache limits: keep every version on disk, as Cortex did
            self._undownloaded = {k for k in self._undownloaded if self._info(k) is not None}
            # (with a delta: the changed models, and those whose download failed before)
            names = tree.models if changed is None else {*changed, *(k[0] for k in self._undownloaded)}
            for name in names:
                model = tree.models.get(name)
                for info in model.versions.values() if model is not None else ():
                    if info.valid and (name, info.version) not in self.tiers.disk:
                        self._spawn(self._download(name, info))
        return changes

    # --- pins ------------------------------------------------------------------

    def is_pinned(self, key: Key) -> bool:
        name, version = key
        if (name, version) in self.pinned:
            return True
        if (name, None) not in self.pinned:
            return False
        model = self.tree.models.get(name)  # "latest": the version serving it, and the one coming
        return version == self._latest.get(name) or (model is not None and version == model.latest)

    def _missing_pins(self) -> list[tuple[str, int | None]]:
        """Pins whose version is in the tree but neither in memory nor loading."""
        missing = []
        for name, version in self.pinned:
            model = self.tree.models.get(name)
            wanted = model.latest if model is not None and version is None else version
            if model is None or wanted is None or wanted not in model.versions:
                continue
            entry = self.tiers.entry((name, wanted))
            if entry is None or (entry.loaded is None and entry.load is None):
                missing.append((name, version))
        return missing

    async def load_pinned(self) -> None:
        """Load every pinned model (at the replica's start: before it takes traffic). A pin that
        fails to load is logged and retried like any failed version; one missing from the tree
        is logged."""
        for name, version in self.pinned:
            model = self.tree.models.get(name)
            if model is None or (version is not None and version not in model.versions):
                log.warning(
                    "pinned model %s%s is not in storage", name, "" if version is None else f"@{version}"
                )
                continue
            try:
                await self.get(name, version or "latest")
            except Exception as exc:
                log.error("pinned model %s could not be loaded: %s", name, exc)

    async def download_all(self) -> None:
        """Download every valid version (no-cache mode, before the replica is ready)."""
        jobs = [
            self._download(name, info)
            for name, model in self.tree.models.items()
            for info in model.versions.values()
            if info.valid
        ]
        await asyncio.gather(*jobs)

    async def _download(self, name: str, info: VersionInfo) -> None:
        """Download a version without a memory budget; one that fails is tried again with the
        next tree (a delta included)."""
        key = (name, info.version)
        try:
            await self.tiers.ensure_on_disk(name, info)
        except Exception as exc:
            self._undownloaded.add(key)
            log.error("download of model %s version %s failed: %s", name, info.version, exc)
        else:
            self._undownloaded.discard(key)

    # --- background loads and retries -----------------------------------------

    def _background(self, name: str, info: VersionInfo) -> None:
        entry = self.tiers.entry((name, info.version))
        if entry is not None and (entry.load is not None or entry.lent_to is not None):
            return  # loading already, or about to be replaced by the version that borrowed its slot
        failure = self._failures.get((name, info.version))
        if failure and failure.fingerprint == info.fingerprint and self.clock.monotonic() < failure.retry_at:
            self._ensure_retry_loop()
            return
        self._spawn(self._quiet(self.tiers.load(name, info)))

    async def _quiet(self, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception as exc:  # loads record themselves in _failures; downloads only log
            log.warning("background load or download failed: %s", exc)

    def _ensure_retry_loop(self) -> None:
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_loop())

    async def _retry_loop(self) -> None:
        """Every ``RETRY_EVERY`` s, retry the failed versions that are due and still wanted (held,
        the model's latest, or pinned); ends when none is wanted (a new failure starts it again)."""
        while True:
            wanted = [key for key in self._failures if self._retry_wanted(key)]
            if not wanted:
                return
            await self.clock.sleep(RETRY_EVERY)
            for key in wanted:
                failure, info = self._failures.get(key), self._info(key)
                if failure is None or info is None or info.fingerprint != failure.fingerprint:
                    continue
                if self.clock.monotonic() >= failure.retry_at and self._retry_wanted(key):
                    self._background(key[0], info)

    def _retry_wanted(self, key: Key) -> bool:
        name, version = key
        model = self.tree.models.get(name)
        latest = self._latest.get(name) is not None and model is not None and model.latest == version
        return self.tiers.held(key) is not None or self.is_pinned(key) or latest

    def _ensure_expiry_loop(self) -> None:
        if self.idle_timeout is not None and (self._expiry_task is None or self._expiry_task.done()):
            self._expiry_task = asyncio.get_running_loop().create_task(self._expiry_loop(self.idle_timeout))

    async def _expiry_loop(self, idle_timeout: float) -> None:
        """Look for idle versions a few times per ``idle_timeout`` (at most every 30 s), while
        anything is in memory (the next load starts it again)."""
        every = min(max(idle_timeout / 4, 0.25), 30.0)
        while self.tiers.in_memory:
            await self.clock.sleep(every)
            self.tiers.expire_idle(idle_timeout)

    # --- what the tiers ask and tell (TierCallbacks) --------------------------------

    def _on_loaded(self, loaded: LoadedModel) -> None:
        self._ensure_expiry_loop()
        self._failures.pop((loaded.name, loaded.version), None)
        model = self.tree.models.get(loaded.name)
        if model is not None and model.latest == loaded.version and loaded.name in self._latest:
            if self._latest[loaded.name] != loaded.version:
                log.info("model %s: latest is now version %s", loaded.name, loaded.version)
            self._latest[loaded.name] = loaded.version

    def _on_failed(self, name: str, info: VersionInfo, reason: str) -> None:
        key = (name, info.version)
        previous = self._failures.get(key)
        attempts = previous.attempts + 1 if previous and previous.fingerprint == info.fingerprint else 1
        self._failures[key] = _Failure(info.fingerprint, reason, attempts, self.clock)
        log.error("model %s version %s failed (attempt %d): %s", name, info.version, attempts, reason)
        if self.tiers.held(key) is not None or name in self._latest or self.is_pinned(key):
            self._ensure_retry_loop()

    def _lender_for(self, key: Key) -> Key | None:
        name, version = key
        model = self.tree.models.get(name)
        pointer = self._latest.get(name)
        if model is None or model.latest != version or pointer is None or pointer == version:
            return None
        return (name, pointer)

    def _on_replaced(self, old: Key, new: LoadedModel) -> None:
        if self._latest.get(old[0]) == old[1]:
            self._latest[old[0]] = new.version  # never a pointer to a version no longer held

    def _is_current(self, key: Key, fingerprint: str) -> bool:
        return self._fingerprint(key) == fingerprint

    def _info(self, key: Key) -> VersionInfo | None:
        model = self.tree.models.get(key[0])
        info = model.versions.get(key[1]) if model else None
        return info if info is not None and info.valid else None

    def _fingerprint(self, key: Key) -> str | None:
        info = self._info(key)
        return info.fingerprint if info is not None else None

    # --- introspection -----------------------------------------------------

    def needing_attention(self) -> set[Key]:
        """Versions loading now or whose last load failed (cheap: no walk of the tree)."""
        return {*self._failures, *self.tiers.loading()}

    def failure(self, key: Key) -> _Failure | None:
        """The last failed load of the version (until its files change, or it loads)."""
        return self._failures.get(key)

    def latest_pointer(self, name: str) -> int | None:
        """The version serving requests for the model's "latest" now (``None``: none loaded)."""
        return self._latest.get(name)

    def state(self, name: str, version: int) -> dict[str, Any]:
        """What this replica knows of one version (for ``/info``)."""
        return version_state(self, name, version)

    @property
    def events(self) -> CacheEvents:
        """Told of hits, misses, loads, downloads and evictions (metrics)."""
        return self.tiers.events

    @property
    def idle(self) -> bool:
        """No background load, download or folder removal is running."""
        return not self._work and self.tiers.idle

    def snapshot(self) -> CacheSnapshot:
        """Both tiers as they are now."""
        return self.tiers.snapshot()

    def let_go(self, holder: Holder) -> None:
        """``holder``'s request ended: what only it used can be evicted again."""
        self.tiers.let_go(holder)

    async def close(self) -> None:
        for task in [*self._work, *(t for t in (self._retry_task, self._expiry_task) if t is not None)]:
            task.cancel()
        self.tiers.close()

    def _spawn(self, coro: Any) -> None:
        # an empty context: a background load is nobody's request (no holder, no versions)
        task = contextvars.Context().run(asyncio.ensure_future, coro)
        self._work.add(task)
        task.add_done_callback(self._work.discard)
