"""A replica's subscription to its API's reloader.

At start the replica pulls the published tree (waiting for the reloader's first
listing); then a background task long-polls the reloader, saying which version of the tree it
holds, and gets what changed since (a delta, applied to the tree it holds) or, when the
reloader cannot say (a restart, a replica too far behind), the whole tree; every new tree goes
to the cache with the names of the models that changed. Another task reports what the replica
holds (the cluster's view, and the replica's lag behind the reloader). If the reloader dies,
the replica keeps serving what it holds, resolves the (recreated) actor again and catches up
at once: a new reloader has a new epoch, so the first long poll returns immediately (the
whole tree).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import Any

from cortex_ray.clock import SYSTEM, Clock
from cortex_ray.errors import DeploymentError
from cortex_ray.identity import replica_identity
from cortex_ray.metrics.replica import record_cache_gauges, record_lag
from cortex_ray.models.delta import apply_delta
from cortex_ray.models.tree import ModelTree
from cortex_ray.spec.names import RELOADER_ACTOR

__all__ = ["Subscriber"]

log = logging.getLogger("cortex_ray.subscriber")
LONG_POLL_TIMEOUT = 30.0
STATUS_TTL = 2.0
REPORT_EVERY = 2.0
RESEND_EVERY = 30.0


def find_reloader() -> Any:
    """The API's reloader actor, as Serve resolves it in a replica (``ValueError`` while it
    does not exist: not created yet, or being recreated)."""
    from ray import serve

    return serve.get_deployment_actor(RELOADER_ACTOR)


class Subscriber:
    def __init__(
        self,
        api_name: str,
        on_tree: Callable[[ModelTree, Collection[str] | None], None],
        current_tree: Callable[[], ModelTree | None] = lambda: None,
        *,
        find_actor: Callable[[], Any] = find_reloader,
        clock: Clock = SYSTEM,
    ) -> None:
        self.api_name = api_name
        self._find_actor = find_actor
        self._clock = clock
        self._on_tree = on_tree
        self._current_tree = current_tree
        self._actor: Any = None
        self.epoch: str | None = None
        self.version = -1
        self.updates = 0
        self.deltas = 0
        """How many of the updates were deltas (the rest: whole trees)."""
        self.last_update: float | None = None
        self.connected = False
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._report_task: asyncio.Task[None] | None = None
        self._status: tuple[float, dict[str, Any]] | None = None
        self._status_call: asyncio.Future[dict[str, Any]] | None = None
        self._status_asked_at = -1
        """``updates`` when the status call in flight was made."""

    async def initial_tree(self, timeout: float = 120.0) -> ModelTree:
        """The first published tree (the reloader's first listing must have succeeded)."""
        deadline = self._clock.monotonic() + timeout
        while True:
            try:
                actor = await self._resolve(deadline)
                snap = await _fetched(
                    await actor.snapshot.remote(
                        None, -1, min(10.0, max(0.1, deadline - self._clock.monotonic()))
                    )
                )
            except Exception as exc:  # the actor may be starting or restarting
                snap = None
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._actor = None
            if snap is not None:
                self._take(snap, initial=True)
                return snap["tree"]
            if self._clock.monotonic() >= deadline:
                status = await self.reloader_status()
                reason = status.get("last_error") or self.last_error or "no listing finished in time"
                raise DeploymentError(f"api {self.api_name!r}: cannot list its models: {reason}")
            await self._clock.sleep(0.5)

    def start(self, summary: Callable[[], dict[str, Any]] | None = None) -> None:
        """Follow the reloader's trees; with ``summary``, also report what this replica holds
        (every ``REPORT_EVERY``; the whole summary only when it changed, or every ``RESEND_EVERY``)."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._watch())
        if summary is not None:
            self._report_task = loop.create_task(self._report(summary))

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._report_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # ended, not only told to end

    async def replica_reports(self) -> dict[str, dict[str, Any]]:
        """What every replica of the API last reported to the reloader."""
        actor = await self._resolve(self._clock.monotonic() + 2)
        return dict(await asyncio.wait_for(actor.replicas.remote(), 5))

    async def _report(self, summary: Callable[[], dict[str, Any]]) -> None:
        replica, sent, sent_at = replica_identity(), None, 0.0
        while True:
            await self._clock.sleep(REPORT_EVERY)
            try:
                current = summary()
                record_cache_gauges(self.api_name, replica["replica"], current)
                fresh = current != sent or self._clock.monotonic() - sent_at > RESEND_EVERY
                meta = {**replica, "epoch": self.epoch, "tree_version": self.version}
                actor = await self._resolve(self._clock.monotonic() + 5)
                lag = await asyncio.wait_for(actor.report.remote(meta, current if fresh else None), 5)
                if isinstance(lag, dict):
                    record_lag(self.api_name, replica["replica"], lag)
                if fresh:
                    sent, sent_at = current, self._clock.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the reloader restarts: report again (in full) next time
                sent = None
                log.debug("api %s: report to the reloader failed: %s", self.api_name, exc)

    async def reloader_status(self) -> dict[str, Any]:
        """The reloader's status, at most ``STATUS_TTL`` old (and never older than the tree this
        replica serves): ``/info`` calls share one round trip instead of making one each."""
        if self._status is not None and self._clock.monotonic() - self._status[0] < STATUS_TTL:
            return self._status[1]
        if self._status_call is None or self._status_call.done():
            self._status_call = asyncio.ensure_future(self._fetch_status())
            self._status_asked_at = self.updates
        status = await asyncio.shield(self._status_call)
        if self._status_asked_at == self.updates:  # (an answer asked before a new tree is not kept)
            self._status = (self._clock.monotonic(), status)
        return status

    async def _fetch_status(self) -> dict[str, Any]:
        try:
            actor = await self._resolve(self._clock.monotonic() + 2)
            return dict(await asyncio.wait_for(actor.status.remote(), 5))
        except Exception as exc:
            return {"error": f"reloader unavailable: {type(exc).__name__}: {exc}"}

    def info(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "tree_version": self.version,
            "updates": self.updates,
            "deltas": self.deltas,
            "last_update": self.last_update,
            "connected": self.connected,
            "last_error": self.last_error,
        }

    async def _watch(self) -> None:
        backoff = 0.2
        # after a failure, the reloader may have restarted: give it our baseline (decided here, not
        # by ``self._actor``, which a report or a status call may have resolved again meanwhile)
        reconnect = self._actor is None
        while True:
            try:
                actor = await self._resolve(self._clock.monotonic() + 30)
                tree = self._current_tree()
                offer = reconnect and self.epoch is not None and tree is not None
                if offer and await actor.wants_seed.remote():  # (one replica's tree is enough)
                    await actor.seed.remote(tree)
                reconnect = False
                self.connected = True  # (until a call fails: not only once a long poll returned)
                snap = await _fetched(
                    await actor.snapshot.remote(self.epoch, self.version, LONG_POLL_TIMEOUT)
                )
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reconnect = True
                self.connected = False
                self._actor = None
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("api %s: reloader unreachable, serving what is held: %s", self.api_name, exc)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if snap is None:
                continue
            try:
                self._take(snap)
            except Exception as exc:  # the replica's side: the reloader is fine, fetch it again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "api %s: applying model tree version %s failed (fetched again): %s",
                    self.api_name,
                    snap.get("version"),
                    exc,
                )
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _resolve(self, deadline: float) -> Any:
        if self._actor is not None:
            return self._actor
        while True:
            try:
                self._actor = self._find_actor()
                return self._actor
            except ValueError:
                if self._clock.monotonic() >= deadline:
                    raise
                await self._clock.sleep(0.25)

    def _take(self, snap: dict[str, Any], initial: bool = False) -> None:
        restarted = self.epoch is not None and snap["epoch"] != self.epoch
        if "delta" in snap:
            held = self._current_tree()
            if held is None or snap["epoch"] != self.epoch or snap["base"] != self.version:
                holds = self.version
                self.version = -1  # (not the base it applies to: the whole tree, next)
                raise RuntimeError(
                    f"a delta from tree version {snap['base']}, but this replica holds {holds}"
                )
            delta = snap["delta"]
            self._on_tree(apply_delta(held, delta), list(delta.models))
            self.deltas += 1
        elif not initial:
            self._on_tree(snap["tree"], None)  # applied first: a tree that failed to apply is fetched again
        self.epoch, self.version = snap["epoch"], snap["version"]
        self._status = None  # a new tree: the reloader's status changed too
        self.updates += 1
        self.last_update = self._clock.time()
        self.last_error = None
        if restarted:
            log.info("api %s: reloader restarted, resubscribed", self.api_name)


async def _fetched(snap: dict[str, Any] | None) -> dict[str, Any] | None:
    """The long poll's answer with its whole tree in hand (a shared one is fetched from Ray's
    object store: one copy for every replica)."""
    if snap is None or "tree_ref" not in snap:
        return snap
    tree = await snap["tree_ref"][0]
    return {**{k: v for k, v in snap.items() if k != "tree_ref"}, "tree": tree}
