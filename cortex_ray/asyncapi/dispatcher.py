"""The dispatcher: hands every acknowledged workload to a free worker until it ends.

One per AsyncAPI (a deployment-scoped actor of the API's gateway). It keeps the queued
workloads in memory, oldest first, and has at most ``window`` of them out with the
workers at once (the most workers the API may have: each takes one workload at a time),
so that a restart with a million queued workloads creates a handful of tasks, not a
million. The requests waiting for a free worker are what Serve's autoscaler sees, so the
workers scale with the queue, within the spec's bounds.

A worker that dies mid-workload fails its request, and the workload is tried again, up
to ``max_attempts``, then marked failed with the reason. A workload whose lease is fresh
(a worker still runs it, e.g. one dispatched before this dispatcher restarted) is left
alone until it finishes or its lease goes stale, so a dispatcher restart does not run it
twice. It starts by itself when Serve recreates it: the gateway pings it every few
seconds, and the first ping (or submit, or status) scans ``queue/`` and resumes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from typing import Any

from cortex_ray import process_log
from cortex_ray.asyncapi.store import LEASE_TTL, WorkloadStore
from cortex_ray.metrics.asyncapi import AsyncMetrics
from cortex_ray.spec import ApiSpec
from cortex_ray.spec.names import worker_name
from cortex_ray.spec.sealed import Sealed, unseal
from cortex_ray.task_events import without_task_events

__all__ = ["BUSY", "Dispatcher"]

log = logging.getLogger("cortex_ray.dispatcher")
RESCAN_EVERY = 30.0
EXPIRY_EVERY = 3600.0
BUSY = "busy"
"""A worker's answer when it did not run the workload (running elsewhere, or itself unhealthy)."""


class Dispatcher:
    """Plain class; :mod:`cortex_ray.application` wraps it with ``ray.remote`` for Serve."""

    def __init__(self, api: ApiSpec | Sealed, store_uri: str) -> None:
        api = unseal(api)
        os.environ.update(api.handler.env)
        process_log.configure(api.handler.log_level)
        assert api.workloads is not None
        self.api_name = api.name
        self.store = WorkloadStore(store_uri, api.workloads.result_ttl)
        self.max_attempts = api.workloads.max_attempts
        self.window = max(1, api.autoscaling.max_replicas)
        self.queue_limit = api.autoscaling.max_replica_concurrency * self.window
        self._queue: collections.deque[str] = collections.deque()
        self._known: set[str] = set()
        """Queued or out with a worker: dispatched at most once at a time."""
        self._out = 0
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handle: Any = None
        self.started_at: float | None = None
        self.resumed = 0
        self.dispatched = 0
        self.retried = 0
        self._metrics = AsyncMetrics(self.api_name)

    # --- called by the gateway -------------------------------------------

    @without_task_events
    async def ensure_running(self) -> bool:
        """Start (scan the store and resume) if not yet started; the gateway calls it often."""
        self._start()
        return True

    async def submit(self, workload_id: str) -> bool:
        """A new workload was stored: queue it; ``False`` when the queue is full (Cortex's
        ``max_replica_concurrency``, per replica the API may have)."""
        self._start()
        if len(self._queue) + self._out >= self.queue_limit:
            return False
        self._metrics.submitted(workload_id)
        self._enqueue(workload_id)
        return True

    async def status(self) -> dict[str, Any]:
        self._start()
        return {
            "queued": len(self._queue),
            "with_workers": self._out,
            "window": self.window,
            "queue_limit": self.queue_limit,
            "dispatched": self.dispatched,
            "resumed_after_restart": self.resumed,
            "retried_after_worker_failure": self.retried,
            "max_attempts": self.max_attempts,
            "started_at": self.started_at,
            "pid": os.getpid(),
        }

    # --- the loops ---------------------------------------------------------

    def _start(self) -> None:
        if self._wake is not None:
            return
        self._wake = asyncio.Event()
        self.started_at = time.time()
        for loop in (self._pump(), self._rescan(), self._expire()):
            self._spawn(loop)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _enqueue(self, workload_id: str) -> bool:
        if workload_id in self._known:
            return False
        self._known.add(workload_id)
        self._queue.append(workload_id)
        self._metrics.sizes(len(self._queue), self._out)
        assert self._wake is not None
        self._wake.set()
        return True

    async def _pump(self) -> None:
        assert self._wake is not None
        while True:
            while self._queue and self._out < self.window:
                workload_id = self._queue.popleft()
                self._out += 1
                self._spawn(self._run(workload_id))
            self._metrics.sizes(len(self._queue), self._out)
            self._wake.clear()
            await self._wake.wait()

    async def _rescan(self) -> None:
        """At start, then every ``RESCAN_EVERY``: queue what the store holds unfinished (a
        restart, or a submit whose call to this actor was lost)."""
        delay, first = 0.5, True
        while True:
            try:
                unfinished = await asyncio.to_thread(self.store.unfinished)
            except Exception as exc:  # storage down: keep trying, never give up on what was acknowledged
                log.warning("api %s: cannot scan the workload store yet: %s", self.api_name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESCAN_EVERY)
                continue
            added = sum(self._enqueue(i) for i in unfinished)
            if first and added:
                self.resumed += added
                log.info("api %s: resumed %d unfinished workloads", self.api_name, added)
            first, delay = False, 0.5
            await asyncio.sleep(RESCAN_EVERY)

    async def _expire(self) -> None:
        every = min(EXPIRY_EVERY, max(1.0, self.store.result_ttl / 10))
        while True:
            await asyncio.sleep(every)
            try:
                removed = await asyncio.to_thread(self.store.expire)
                if removed:
                    log.info("api %s: %d finished workloads expired", self.api_name, removed)
            except Exception as exc:  # storage trouble: try again next time
                log.warning("api %s: workload expiry failed: %s", self.api_name, exc)

    # --- one workload --------------------------------------------------------

    async def _run(self, workload_id: str) -> None:
        requeue_after: float | None = None
        try:
            requeue_after = await self._process(workload_id)
        except Exception as exc:  # storage trouble: the next rescan queues it again
            log.warning("api %s: workload %s not dispatched yet: %s", self.api_name, workload_id, exc)
        finally:
            self._out -= 1
            self._metrics.sizes(len(self._queue), self._out)
            self._known.discard(workload_id)
            assert self._wake is not None
            self._wake.set()
        if requeue_after is not None:
            await asyncio.sleep(requeue_after)
            self._enqueue(workload_id)

    async def _process(self, workload_id: str) -> float | None:
        """Run one workload to its end; returns a delay when it must be looked at again later."""
        state = await asyncio.to_thread(self.store.state, workload_id)
        if state.final is not None:  # finished, but not tidied (a crash right after)
            await asyncio.to_thread(self.store.tidy, workload_id, state.final)
            self._metrics.forget(workload_id)
            return None
        if state.problem is not None:
            log.error("api %s: workload %s cannot run: %s", self.api_name, workload_id, state.problem)
            await asyncio.to_thread(
                self.store.finish,
                workload_id,
                "failed",
                error={"type": "CorruptWorkload", "message": state.problem},
            )
            self._metrics.finished(workload_id, "failed")
            return None
        if state.lease_fresh():  # a worker runs it now (dispatched before a restart)
            return LEASE_TTL / 2
        attempts = state.attempts
        while True:
            attempts += 1
            await asyncio.to_thread(self.store.set_attempts, workload_id, attempts)
            self.dispatched += 1
            try:
                answer = await self._worker().process.remote(workload_id, attempts)
            except Exception as exc:  # the worker died, timed out, or could not be reached
                reason = _first_line(exc)
                if attempts >= self.max_attempts:
                    message = f"the workload failed {attempts} times; last: {reason}"
                    log.error("api %s: workload %s failed: %s", self.api_name, workload_id, message)
                    await asyncio.to_thread(
                        self.store.finish,
                        workload_id,
                        "failed",
                        error={"type": _error_type(exc), "message": message},
                    )
                    self._metrics.finished(workload_id, "failed")
                    return None
                self.retried += 1
                self._metrics.retried()
                log.warning("api %s: workload %s: %s, retrying", self.api_name, workload_id, reason)
                await asyncio.sleep(min(5.0, 0.5 * attempts))
                continue
            if answer == BUSY:  # not run: it runs elsewhere, or the worker stopped taking work
                await asyncio.to_thread(self.store.set_attempts, workload_id, attempts - 1)
                return 1.0
            self._metrics.finished(workload_id, str(answer))
            return None

    def _worker(self) -> Any:
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_deployment_handle(worker_name(self.api_name), self.api_name)
        return self._handle


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # Ray's task errors put the cause's own message last
    return f"{_error_type(exc)}: {lines[-1].strip() if lines else ''}"[:500]


def _error_type(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    return type(cause).__name__ if isinstance(cause, BaseException) else type(exc).__name__
