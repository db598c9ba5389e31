"""The dispatcher and the workers, driven without Ray on a local store.

The dispatcher gets a stand-in for the worker deployment's handle; workers are real
:class:`AsyncWorker` objects built outside Serve, running a real handler file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.asyncapi import dispatcher as dispatcher_module
from cortex_ray.asyncapi.dispatcher import BUSY, Dispatcher
from cortex_ray.asyncapi.store import WorkloadStore, new_workload_id
from cortex_ray.asyncapi.worker import AsyncWorker, WorkloadTimeoutError
from cortex_ray.spec import parse_spec
from tests.support.project import write_handler

HANDLER = """
import asyncio, os, threading, time

GATE = threading.Event()

class Handler:
    def __init__(self, config):
        self.runs = config["runs"]

    def handle_async(self, payload, request_id):
        with open(self.runs, "a") as fh:
            fh.write(request_id + "\\n")
        if payload.get("wait"):
            GATE.wait(10)
        if payload.get("sleep"):
            time.sleep(payload["sleep"])
        return {"done": request_id}
"""

ASYNC_HANDLER = """
import asyncio

class Handler:
    def __init__(self, config):
        pass

    async def handle_async(self, payload, request_id):
        await asyncio.sleep(payload.get("sleep", 0))
        return {"done": request_id}
"""


def api(project: Path, source: str = HANDLER, **workloads: Any) -> Any:
    write_handler(project, source)
    spec = {
        "name": "jobs",
        "kind": "AsyncAPI",
        "handler": {"type": "python", "path": "handler.py", "config": {"runs": str(project / "runs.txt")}},
        "autoscaling": {"min_replicas": 1, "max_replicas": 3},
        "workloads": {"store": str(project / "store"), **workloads},
    }
    return parse_spec([spec], base_dir=project).apis[0]


async def worker(spec: Any) -> AsyncWorker:
    w = object.__new__(AsyncWorker)
    await w.__init__(spec)  # type: ignore[misc]  # what Serve does with an async constructor
    return w


def runs(project: Path) -> list[str]:
    path = project / "runs.txt"
    return path.read_text().split() if path.exists() else []


def test_a_second_dispatch_of_a_running_workload_does_not_run_it_again(tmp_path: Path) -> None:
    spec = api(tmp_path)

    async def main() -> None:
        a, b = await worker(spec), await worker(spec)
        store = WorkloadStore(spec.workloads.store)
        wid = new_workload_id()
        store.submit(wid, b'{"wait": true}', "application/json")
        first = asyncio.create_task(a.process(wid, 1))
        while not runs(tmp_path):
            await asyncio.sleep(0.01)
        assert await b.process(wid, 2) == BUSY  # a fresh lease: another worker runs it
        gate = a.core.handler.handle_async.__globals__["GATE"]
        gate.set()
        assert await first == "completed"
        assert await b.process(wid, 3) == "completed"  # finished: never run again
        assert runs(tmp_path) == [wid]
        assert store.describe(wid)["result"] == {"done": wid}  # type: ignore[index]

    asyncio.run(main())


def test_a_sync_handler_past_its_timeout_fails_the_attempt_and_retires_the_worker(tmp_path: Path) -> None:
    spec = api(tmp_path, timeout="1s")

    async def main() -> None:
        w = await worker(spec)
        store = WorkloadStore(spec.workloads.store)
        hung, other = new_workload_id(), new_workload_id()
        store.submit(hung, b'{"sleep": 3}', "application/json")
        store.submit(other, b"{}", "application/json")
        with pytest.raises(WorkloadTimeoutError, match=r"workloads.timeout \(1s\)"):
            await w.process(hung, 1)
        with pytest.raises(RuntimeError, match="stuck"):
            w.check_health()  # Serve replaces the replica: its thread cannot be stopped
        assert await w.process(other, 1) == BUSY  # it takes no more work meanwhile
        assert store.describe(hung)["status"] == "in_progress"  # type: ignore[index]  # retried later

    asyncio.run(main())


def test_an_async_handler_past_its_timeout_is_cancelled_and_the_worker_goes_on(tmp_path: Path) -> None:
    spec = api(tmp_path, ASYNC_HANDLER, timeout="1s")

    async def main() -> None:
        w = await worker(spec)
        store = WorkloadStore(spec.workloads.store)
        hung, other = new_workload_id(), new_workload_id()
        store.submit(hung, b'{"sleep": 30}', "application/json")
        store.submit(other, b"{}", "application/json")
        with pytest.raises(WorkloadTimeoutError):
            await w.process(hung, 1)
        w.check_health()
        assert await w.process(other, 1) == "completed"

    asyncio.run(main())


class FakeWorkers:
    """The worker deployment's handle: ``process.remote(id, attempt)`` runs ``behave``."""

    def __init__(self, behave: Any) -> None:
        self.behave = behave
        self.calls: list[tuple[str, int]] = []
        self.process = self
        self.running = 0
        self.max_running = 0

    def remote(self, workload_id: str, attempt: int) -> Any:
        self.calls.append((workload_id, attempt))
        return self._call(workload_id, attempt)

    async def _call(self, workload_id: str, attempt: int) -> Any:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            return await self.behave(workload_id, attempt)
        finally:
            self.running -= 1


def test_a_restart_with_many_queued_workloads_keeps_a_bounded_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = api(tmp_path)
    store = WorkloadStore(spec.workloads.store)
    ids = [new_workload_id() for _ in range(300)]
    for wid in ids:
        store.submit(wid, b"{}", "application/json")

    async def main() -> None:
        async def complete(wid: str, attempt: int) -> str:
            await asyncio.sleep(0.001)
            return str((await asyncio.to_thread(store.finish, wid, "completed", result={}))["status"])

        d = Dispatcher(spec, spec.workloads.store)
        d._handle = FakeWorkers(complete)
        most_tasks = 0
        await d.ensure_running()
        for _ in range(3000):
            most_tasks = max(most_tasks, len(d._tasks))
            if not store.unfinished():
                break
            await asyncio.sleep(0.01)
        assert store.unfinished() == []
        assert most_tasks <= d.window + 3  # the pump, rescan and expiry loops, plus the window
        assert d._handle.max_running <= d.window == 3
        assert d.resumed == 300 and sorted(w for w, _ in d._handle.calls) == sorted(ids)

    asyncio.run(main())


def test_a_restarted_dispatcher_leaves_a_leased_workload_to_its_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = api(tmp_path)
    store = WorkloadStore(spec.workloads.store)
    wid = new_workload_id()
    store.submit(wid, b"{}", "application/json")
    assert store.acquire_lease(wid, 1, "a worker the old dispatcher sent it to") == 1
    monkeypatch.setattr(dispatcher_module, "LEASE_TTL", 0.4)  # look again soon

    async def main() -> None:
        async def never(wid: str, attempt: int) -> str:
            raise AssertionError("dispatched while its lease was fresh")

        d = Dispatcher(spec, spec.workloads.store)
        d._handle = FakeWorkers(never)
        await d.ensure_running()
        await asyncio.sleep(0.5)
        store.finish(wid, "completed", result={"by": "the first worker"})
        await asyncio.sleep(0.5)
        assert d._handle.calls == []
        assert store.unfinished() == []

    asyncio.run(main())


def test_a_worker_failure_is_retried_then_fails_with_the_reason(tmp_path: Path) -> None:
    spec = api(tmp_path, max_attempts=2)
    store = WorkloadStore(spec.workloads.store)
    wid = new_workload_id()
    store.submit(wid, b"{}", "application/json")

    async def main() -> None:
        async def dies(wid: str, attempt: int) -> str:
            raise ConnectionError("the worker died")

        d = Dispatcher(spec, spec.workloads.store)
        d._handle = FakeWorkers(dies)
        await d.ensure_running()
        for _ in range(500):
            if store.describe(wid)["status"] == "failed":  # type: ignore[index]
                break
            await asyncio.sleep(0.01)
        error = store.describe(wid)["error"]  # type: ignore[index]
        assert "failed 2 times" in error["message"] and "the worker died" in error["message"]
        assert [a for _, a in d._handle.calls] == [1, 2]

    asyncio.run(main())
