"""The dispatcher: hands every acknowledged workload to the workers until it ends.

One per AsyncAPI (a deployment-scoped actor of the API's gateway). Each queued
workload becomes one request to the worker deployment; Serve queues those
requests and its autoscaler scales the workers with their number (queued plus
running), within the spec's bounds. When a worker dies mid-workload the request
fails, and the workload is queued again, up to ``max_attempts``, then marked
failed with the reason. On start (first deploy, a restart of the application, or
of this actor) it scans the store and resumes every workload not yet finished,
so nothing acknowledged is ever lost. Finished workloads expire after
``result_ttl``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from cortex_ray.asyncapi.store import FINAL, WorkloadStore
from cortex_ray.spec import ApiSpec

__all__ = ["DISPATCHER_ACTOR", "Dispatcher", "worker_name"]

log = logging.getLogger("cortex_ray.dispatcher")
DISPATCHER_ACTOR = "dispatcher"
EXPIRY_EVERY = 3600.0
RESCAN_EVERY = 30.0


def worker_name(api_name: str) -> str:
    return f"{api_name}-worker"


class Dispatcher:
    """Plain class; :mod:`cortex_ray.app` wraps it with ``ray.remote`` for Serve."""

    def __init__(self, api: ApiSpec, store_uri: str) -> None:
        os.environ.update(api.handler.env)
        self.api_name = api.name
        self.store = WorkloadStore(store_uri)
        assert api.workloads is not None
        self.max_attempts = api.workloads.max_attempts
        self.result_ttl = api.workloads.result_ttl
        self._running: dict[str, asyncio.Task[None]] = {}
        self._started: asyncio.Task[None] | None = None
        self._handle: Any = None
        self.resumed = 0
        self.dispatched = 0
        self.retried = 0

    async def submit(self, workload_id: str) -> None:
        """A new workload was stored (status ``in_queue``): process it."""
        await self._start()
        self._dispatch(workload_id)

    async def status(self) -> dict[str, Any]:
        await self._start()
        return {
            "running_or_queued": len(self._running),
            "dispatched": self.dispatched,
            "resumed_after_restart": self.resumed,
            "retried_after_worker_failure": self.retried,
            "max_attempts": self.max_attempts,
        }

    async def _start(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._resume())

    async def _resume(self) -> None:
        asyncio.get_running_loop().create_task(self._housekeeping())
        delay = 0.5
        while True:  # storage may be down at start: keep trying, never give up on what was acknowledged
            try:
                unfinished = await asyncio.to_thread(self.store.unfinished)
                break
            except Exception as exc:
                log.warning("api %s: cannot scan the workload store yet: %s", self.api_name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        for workload_id in unfinished:
            self.resumed += 1
            self._dispatch(workload_id)
        if unfinished:
            log.info("api %s: resumed %d unfinished workloads", self.api_name, len(unfinished))

    def _dispatch(self, workload_id: str) -> None:
        if workload_id in self._running:
            return
        task = asyncio.get_running_loop().create_task(self._process(workload_id))
        self._running[workload_id] = task
        task.add_done_callback(lambda _: self._running.pop(workload_id, None))

    async def _process(self, workload_id: str) -> None:
        try:
            status = await asyncio.to_thread(self.store.status, workload_id)
            if status is not None and status["status"] in FINAL:
                return  # finished meanwhile (seen unfinished by a scan)
            meta = await asyncio.to_thread(self.store.meta, workload_id)
        except Exception as exc:  # storage trouble: the next rescan dispatches it again
            log.warning("api %s: workload %s not dispatched yet: %s", self.api_name, workload_id, exc)
            return
        attempts = int(meta.get("attempts", 0))
        while True:
            self.dispatched += 1
            try:
                await self._worker().process.remote(workload_id, attempts + 1)
                return
            except Exception as exc:  # the worker died or could not be reached: retry
                attempts += 1
                reason = (
                    f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                )
                await asyncio.to_thread(self.store.set_attempts, workload_id, attempts)
                if attempts >= self.max_attempts:
                    message = f"the worker failed {attempts} times; last: {reason}"
                    log.error("api %s: workload %s failed: %s", self.api_name, workload_id, message)
                    await asyncio.to_thread(self.store.fail, workload_id, "WorkerFailure", message)
                    return
                self.retried += 1
                log.warning(
                    "api %s: workload %s: worker failed (%s), retrying", self.api_name, workload_id, reason
                )
                await asyncio.to_thread(self.store.set_status, workload_id, "in_queue", attempts=attempts)
                await asyncio.sleep(min(5.0, 0.5 * attempts))

    def _worker(self) -> Any:
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_deployment_handle(worker_name(self.api_name), self.api_name)
        return self._handle

    async def _housekeeping(self) -> None:
        """Expire old results; pick up any stored workload whose submit call was lost."""
        last_expiry = 0.0
        while True:
            await asyncio.sleep(RESCAN_EVERY)
            try:
                for workload_id in await asyncio.to_thread(self.store.unfinished):
                    self._dispatch(workload_id)
                if loop_time() - last_expiry >= min(EXPIRY_EVERY, max(1.0, self.result_ttl / 2)):
                    last_expiry = loop_time()
                    removed = await asyncio.to_thread(self.store.expire, self.result_ttl)
                    if removed:
                        log.info("api %s: %d finished workloads expired", self.api_name, removed)
            except Exception as exc:  # storage trouble: try again next time
                log.warning("api %s: workload housekeeping failed: %s", self.api_name, exc)


def loop_time() -> float:
    return asyncio.get_running_loop().time()
