"""The reloader: one per API, the only thing that lists model storage.

It runs as a Serve deployment-scoped actor (Serve creates it before the
replicas, health-checks it, recreates it if it dies and deletes it with the
application). Every ``poll_interval`` it lists storage, turns the listing into
the published tree (:class:`~cortex_ray.reload.publisher.Publisher`) and, when
that changed, bumps its version, logs the change as a delta (the models that changed,
:class:`~cortex_ray.models.delta.TreeDelta`) and wakes every replica waiting in
:meth:`ModelReloader.snapshot` (a long poll). A replica that holds a recent version of this
reloader's tree gets the changes since (one delta, the size of what changed); a new replica,
one too far behind, or one from before a restart (another epoch) gets the whole tree.
Storage requests therefore do not grow with the number of replicas, and what travels per
change grows with the change, not with the tree. A failed listing changes nothing.

With ``events: watch``, file events are hints (:mod:`cortex_ray.reload.events`): the models an
event names are listed at once (their prefixes only) and again ``settle_time`` later, when the
settle rule lets an unchanged upload be published; the full listing every ``poll_interval``
goes on as the reconciliation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any

from cortex_ray import process_log
from cortex_ray.metrics.reloader import ReloaderMetrics
from cortex_ray.models import discover_models, layout_for
from cortex_ray.models.delta import delta_between
from cortex_ray.models.discovery import RememberingBuilder, discover_model
from cortex_ray.models.tree import ModelTree
from cortex_ray.reload.deltas import DeltaLog
from cortex_ray.reload.events import EventSource, event_source
from cortex_ray.reload.publisher import Publisher
from cortex_ray.spec import ApiSpec
from cortex_ray.spec.sealed import Sealed, unseal
from cortex_ray.storage import Storage, open_storage
from cortex_ray.task_events import without_task_events

__all__ = ["ModelReloader"]

log = logging.getLogger("cortex_ray.reloader")
SEED_GRACE = 1.0
SEED_PROMISE = 5.0
"""Seconds a replica told to send its tree as the baseline has to do so before another is."""
REPORT_STALE = 20.0
"""A replica that has not reported for this long is left out of the cluster's view."""


EVENTS_RETRY = 5.0
"""Seconds before a failed event source is started again (doubling up to 60 s)."""


class ModelReloader:
    """Plain class; :mod:`cortex_ray.application` wraps it with ``ray.remote`` for Serve."""

    # The timings, as class attributes (tests set them here): a process that fetches the actor's
    # handle (``ray.get_actor``) gets this class's methods replaced by unpickled copies with
    # globals of their own, which a change to the module's names no longer reaches.
    seed_grace: float = SEED_GRACE
    seed_promise: float = SEED_PROMISE
    events_retry: float = EVENTS_RETRY

    def __init__(self, api: ApiSpec | Sealed, share_trees: bool = False) -> None:
        """``share_trees`` (in a Ray actor): a whole tree is put in Ray's object store once per
        version and every replica that needs it fetches that one copy (instead of one
        serialization per replica's call)."""
        api = unseal(api)
        self._share_trees = share_trees
        self._shared: tuple[int, Any] | None = None
        """(version, object ref) of the whole tree last put in the object store."""
        spec = api.handler.model_spec
        if spec is None:
            raise ValueError(f"api {api.name!r} has no models to watch")
        os.environ.update(api.handler.env)  # credentials, endpoints: as in the replicas
        process_log.configure(api.handler.log_level)
        self.api_name = api.name
        self._spec = spec
        self._layout = layout_for(api.handler.type, api.compute.inf > 0)
        self.interval = spec.poll_interval
        self._publisher = Publisher(spec.settle_seconds)
        self.epoch = uuid.uuid4().hex[:12]
        self.version = 0
        self.tree: ModelTree | None = None
        self.deltas = DeltaLog()
        """The recent deltas, by the version they lead to."""
        self.full_syncs = 0
        self.delta_syncs = 0
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.poll_count = 0
        self.list_calls = 0
        self.failed_polls = 0
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.started_at = time.time()
        self.removed: dict[str, float] = {}
        self.published_times: dict[int, float] = {}
        """When each recent tree version was published (a replica's lag)."""
        self.reports: dict[str, dict[str, Any]] = {}
        """What each replica last reported (see :meth:`report`)."""
        self._metrics = ReloaderMetrics(api.name)
        self._storages: dict[str, Storage] = {}
        self._observed: ModelTree | None = None
        self._build = RememberingBuilder(keep_files=False)  # replicas list a version's files to fetch it
        """An unchanged model's listing gives back the same ModelInfo: nothing rebuilt or digested."""
        """The last full listing, with the models listed since on events."""
        self.events: EventSource | None = event_source(spec)
        events = spec.events
        self._events_label = events if isinstance(events, str) or events is None else f"sqs: {events.sqs}"
        self.event_batches = 0
        self.events_error: str | None = None
        """Why the event source failed last (cleared by its next batch); polling goes on."""
        self._event_task: asyncio.Task[None] | None = None
        self._listing: asyncio.Lock | None = None
        """One listing (full, or of evented models) at a time: each builds on the last."""
        self._confirms: dict[frozenset[str] | None, asyncio.Task[None]] = {}
        self._seed_promised: float | None = None

    # --- called by replicas ------------------------------------------------

    @without_task_events
    async def snapshot(self, epoch: str | None, known: int, timeout: float = 30.0) -> dict[str, Any] | None:
        """What changed once the published tree differs from ``(epoch, known)``, else ``None``
        after ``timeout``: ``{"epoch", "version", "base": known, "delta"}`` when the log holds
        every change since ``known`` of this epoch, else ``{"epoch", "version", "tree"}`` (or
        ``"tree_ref"``, a list holding the object ref of the tree, with ``share_trees``)."""
        self._start()
        assert self._changed is not None
        deadline = time.monotonic() + timeout
        while self.tree is None or (epoch == self.epoch and known == self.version):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                return None
        delta = self.deltas.since(known, self.version) if epoch == self.epoch else None
        if delta is not None:
            self.delta_syncs += 1
            return {"epoch": self.epoch, "version": self.version, "base": known, "delta": delta}
        self.full_syncs += 1
        if self._share_trees:
            if self._shared is None or self._shared[0] != self.version:
                import ray

                self._shared = (self.version, ray.put(self.tree))
            # (in a list: Ray resolves a top-level ref, not one inside a container)
            return {"epoch": self.epoch, "version": self.version, "tree_ref": [self._shared[1]]}
        return {"epoch": self.epoch, "version": self.version, "tree": self.tree}

    @without_task_events
    async def report(self, meta: dict[str, Any], summary: dict[str, Any] | None) -> dict[str, float]:
        """A replica's heartbeat: its tree version and, when it changed, what it holds. Returns
        its lag behind this reloader (the replica exports it: the series ends with the replica)."""
        replica = str(meta["replica"])
        previous = self.reports.get(replica, {})
        entry = {**previous, **(summary or {}), **meta, "reported_at": time.time()}
        lag = self._lag(entry)
        self.reports[replica] = {**entry, **lag}
        self._prune()
        return lag

    async def replicas(self) -> dict[str, dict[str, Any]]:
        """Every replica that reported lately, with its lag behind this reloader."""
        self._prune()
        return {r: {**e, **self._lag(e)} for r, e in sorted(self.reports.items())}

    def _prune(self) -> None:
        cutoff = time.time() - REPORT_STALE
        if any(e["reported_at"] < cutoff for e in self.reports.values()):
            self.reports = {r: e for r, e in self.reports.items() if e["reported_at"] >= cutoff}

    def _lag(self, entry: dict[str, Any]) -> dict[str, float]:
        known = int(entry.get("tree_version", -1)) if entry.get("epoch") == self.epoch else 0
        behind = max(0, self.version - known)
        since = self.published_times.get(known + 1) if behind else None
        return {"lag_versions": behind, "lag_seconds": round(time.time() - since, 3) if since else 0.0}

    async def status(self) -> dict[str, Any]:
        self._start()
        return {
            "epoch": self.epoch,
            "version": self.version,
            "pid": os.getpid(),
            "poll_interval": self.interval,
            "settle_time": self._publisher.settle_time,
            "poll_count": self.poll_count,
            "failed_polls": self.failed_polls,
            "list_calls": self.list_calls,
            "events": self._events_label,
            "event_batches": self.event_batches,
            "events_error": self.events_error,
            "full_syncs": self.full_syncs,
            "delta_syncs": self.delta_syncs,
            "last_successful_poll": self.last_success,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "problems": [
                {"model": p.model, "version": p.version, "reason": p.reason}
                for p in list(self._publisher.problems)  # (copies: a listing may be observed meanwhile)
            ],
            "published_at": {f"{m}:{v}": t for (m, v), t in dict(self._publisher.published_at).items()},
            "removed": dict(self.removed),
        }

    async def wants_seed(self) -> bool:
        """Whether this reloader still takes a replica's tree as the baseline of its first
        listing (nothing listed yet). Said to one replica at a time (for ``SEED_PROMISE`` s): the
        others keep their trees, so a restart does not bring every replica's tree here."""
        self._start()
        if self.tree is not None or self._publisher.published is not None:
            return False
        now = time.monotonic()
        if self._seed_promised is not None and now - self._seed_promised < self.seed_promise:
            return False
        self._seed_promised = now
        return True

    async def seed(self, tree: ModelTree) -> bool:
        """A replica's tree from before this reloader (re)started: the baseline of its first poll.

        With it, a restarted reloader applies the settle and never-worse rules to its first
        listing as to any other (an upload in progress at the restart is not published).
        Returns whether the seed was taken (only before anything was published).
        """
        self._start()
        assert self._listing is not None
        async with self._listing:  # (never while a listing is being published)
            return self._seed(tree)

    def _seed(self, tree: ModelTree) -> bool:
        if self.tree is not None or self._publisher.published is not None:
            return False
        self._publisher.published = tree
        for name, model in tree.models.items():
            for v in model.versions:
                self._publisher.published_at[(name, v)] = time.time()
        log.info("api %s: reloader seeded with a replica's tree (%d models)", self.api_name, len(tree.models))
        return True

    async def poll_now(self) -> int:
        """Poll at once (tests, benchmarks); returns the published version after it."""
        self._start()
        await self._poll_once()
        return self.version

    # --- the poll loop -----------------------------------------------------

    def _start(self) -> None:
        if self._task is None:
            self._changed = asyncio.Event()
            self._listing = asyncio.Lock()
            self._task = asyncio.get_running_loop().create_task(self._loop())
            if self.events is not None:
                self._event_task = asyncio.get_running_loop().create_task(self._follow_events(self.events))

    async def _follow_events(self, source: EventSource) -> None:
        """List what each batch of events names, now and once more ``settle_time`` later (the
        settle rule publishes an upload unchanged that long). A watcher that fails is started
        again after a pause (5 s, doubling to 60 s); polling goes on meanwhile."""
        pause = self.events_retry
        while True:
            batches = source.batches()
            try:
                handled: bool | None = None
                while True:
                    try:
                        names = await batches.asend(handled)
                    except StopAsyncIteration:
                        break
                    self.event_batches += 1
                    self.events_error = None
                    pause = self.events_retry
                    handled = await self._on_event(names)
                    settle = self._publisher.settle_time
                    if settle > 0:
                        self._confirm_later(names, settle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.events_error = f"{type(exc).__name__}: {exc}"
                log.warning("api %s: storage events failed, polling only for now: %s", self.api_name, exc)
            finally:
                await batches.aclose()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 60.0)

    @property
    def listing(self) -> bool:
        """Whether a listing is running now."""
        return self._listing is not None and self._listing.locked()

    @property
    def confirming(self) -> int:
        """Listings of evented models waiting for ``settle_time`` to pass."""
        return len(self._confirms)

    def _confirm_later(self, names: set[str] | None, after: float) -> None:
        """List ``names`` again ``after`` seconds from now; a later event for the same models
        moves the confirmation later (one pending per set of names)."""
        key = None if names is None else frozenset(names)
        pending = self._confirms.pop(key, None)
        if pending is not None:
            pending.cancel()
        task = asyncio.get_running_loop().create_task(self._confirm(names, after))
        self._confirms[key] = task
        task.add_done_callback(lambda done: self._confirm_done(key, done))

    def _confirm_done(self, key: frozenset[str] | None, task: asyncio.Task[None]) -> None:
        if self._confirms.get(key) is task:
            del self._confirms[key]

    async def _confirm(self, names: set[str] | None, after: float) -> None:
        await asyncio.sleep(after + 0.05)  # (just past the settle time: the rule is >=)
        await asyncio.shield(self._on_event(names))  # (a later event moves a waiting one only)

    async def _on_event(self, names: set[str] | None) -> bool:
        """List what an event names; whether the listing succeeded."""
        try:
            if names is None:
                return await self._poll_once()
            return await self._poll_models(names)
        except Exception:
            log.exception("reloader %s: listing on an event failed", self.api_name)
            return False

    async def _loop(self) -> None:
        # let replicas that outlived a previous reloader seed their tree before the first listing
        await asyncio.sleep(self.seed_grace)
        while True:
            started = time.monotonic()
            try:
                await self._poll_once()
            except Exception:  # never let the loop die
                log.exception("reloader %s: poll failed unexpectedly", self.api_name)
            delay = max(0.0, self.interval - (time.monotonic() - started))
            await asyncio.sleep(delay)

    def _opener(self, uri: str) -> Storage:
        self.list_calls += 1  # discover_models lists each storage it opens exactly once
        storage = self._storages.get(uri)
        if storage is None:  # one client per location, kept across polls
            storage = self._storages[uri] = open_storage(uri)
        return storage

    async def _poll_once(self) -> bool:
        assert self._listing is not None
        async with self._listing:
            return await self._list_all()

    async def _poll_models(self, names: set[str]) -> bool:
        """List the models named (an event's), on top of the last full listing, and publish;
        whether the listing succeeded."""
        assert self._listing is not None
        async with self._listing:
            if self._observed is None or self.tree is None:
                return True  # (before the first full listing, which lists them too)
            calls = self.list_calls

            def listed() -> dict[str, Any]:
                return {
                    n: discover_model(self._spec, self._layout, n, self._opener, self._build)
                    for n in sorted(names)
                }

            try:
                models = await asyncio.to_thread(listed)
            except Exception as exc:
                self._metrics.polled(self.list_calls - calls, ok=False)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.last_error_at = time.time()
                log.warning(
                    "api %s: listing %s failed, keeping what is served: %s", self.api_name, names, exc
                )
                return False
            self._metrics.polled(self.list_calls - calls, ok=True, at=time.time())
            merged = dict(self._observed.models)
            for name, model in models.items():
                if model is None:
                    merged.pop(name, None)
                else:
                    merged[name] = model
            self._observed = ModelTree(merged, warnings=self._observed.warnings)
            # decided for the models listed only: the others' last listing may be stale by now
            await self._publish(self._observed, time.time(), only=names)
            return True

    async def _list_all(self) -> bool:
        self.poll_count += 1
        calls = self.list_calls
        try:
            observed = await asyncio.to_thread(
                discover_models, self._spec, self._layout, self._opener, build=self._build
            )
        except Exception as exc:
            self._metrics.polled(self.list_calls - calls, ok=False)
            self.failed_polls += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.last_error_at = time.time()
            log.warning("api %s: listing models failed, keeping what is served: %s", self.api_name, exc)
            return False
        now = time.time()
        self.last_success = now
        self._build.keep_only(observed.models)
        self._metrics.polled(self.list_calls - calls, ok=True, at=now)
        self._observed = observed
        await self._publish(observed, now)
        return True

    async def _publish(self, observed: ModelTree, now: float, only: set[str] | None = None) -> None:
        """Turn a listing (of the models ``only`` names, or of all) into the published tree; a
        change is logged as a delta and wakes the replicas' long polls."""
        # in a thread: at 10,000 models it takes tens of ms, and long polls wait on this loop
        published = await asyncio.to_thread(self._publisher.observe, observed, now, only)
        self._metrics.delays(self._publisher.delays)
        if self.tree is None:
            versions = sum(len(m.valid_versions) for m in published.models.values())
            log.info(
                "api %s: first listing: %d models, %d valid versions (polling every %gs)",
                self.api_name,
                len(published.models),
                versions,
                self.interval,
            )
        delta = delta_between(self.tree or ModelTree(), published)
        if self.tree is not None:
            if not delta.models and published.warnings == self.tree.warnings:
                return
            for change in delta.changes(self.tree):
                log.info("api %s: %s", self.api_name, change)
                if change.kind == "version_removed":
                    self.removed[f"{change.model}:{change.version}"] = now
                elif change.kind == "version_added":
                    self.removed.pop(f"{change.model}:{change.version}", None)
        self.tree = published
        self.version += 1
        self.deltas.append(self.version, delta)
        self.published_times[self.version] = now
        self.published_times = {v: t for v, t in self.published_times.items() if v > self.version - 1000}
        self._metrics.published()
        assert self._changed is not None
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
