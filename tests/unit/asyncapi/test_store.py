"""The AsyncAPI workload store on a local folder (no Ray)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.asyncapi.store import LEASE_TTL, Unreadable, WorkloadStore, new_workload_id, valid_workload_id
from cortex_ray.storage import LocalStorage, ObjectInfo


def test_ids_are_unique_sortable_and_validated() -> None:
    ids = [new_workload_id() for _ in range(100)]
    assert len(set(ids)) == 100 and all(valid_workload_id(i) for i in ids)
    for bad in ("../../etc/passwd", "x", "", "20260101000000-ZZZZZZZZZZZZZZZZZZZZ", ids[0] + "/status.json"):
        assert not valid_workload_id(bad)


def test_lifecycle_of_a_workload(tmp_path: Path) -> None:
    store = WorkloadStore(f"file://{tmp_path}/")
    wid = new_workload_id()
    assert store.describe(wid) is None
    store.submit(wid, b'{"a": 1}', "application/json")
    assert store.describe(wid) == {"id": wid, "status": "in_queue"}
    assert store.payload(wid) == (b'{"a": 1}', "application/json")
    assert store.unfinished() == [wid]
    assert store.acquire_lease(wid, 1, "worker-a") == 1
    assert store.describe(wid) == {"id": wid, "status": "in_progress"}
    assert store.state(wid).lease_fresh()
    final = store.finish(wid, "completed", result={"answer": 42})
    assert final["status"] == "completed"
    done = store.describe(wid)
    assert done is not None and done["status"] == "completed" and done["result"] == {"answer": 42}
    assert done["timestamp"].endswith("Z")
    assert not (tmp_path / "workloads" / wid / "payload").exists()
    assert store.unfinished() == []


def test_a_final_status_is_never_overwritten(tmp_path: Path) -> None:
    """Two runs of one workload (a duplicate dispatch): the first to finish stands."""
    store = WorkloadStore(f"file://{tmp_path}/")
    wid = new_workload_id()
    store.submit(wid, b"x", "text/plain")
    first = store.finish(wid, "completed", result={"run": "A"})
    second = store.finish(wid, "failed", error={"type": "WorkerFailure", "message": "B lost"})
    assert second == first  # B is told what stands
    store.renew_lease(wid, 1, 2, "worker-b")  # a late in-progress write changes nothing either
    described = store.describe(wid)
    assert (
        described is not None and described["status"] == "completed" and described["result"] == {"run": "A"}
    )
    assert store.state(wid).final == first


def test_failed_workload_reports_its_error(tmp_path: Path) -> None:
    store = WorkloadStore(f"file://{tmp_path}/")
    wid = new_workload_id()
    store.submit(wid, b"x", "text/plain")
    store.finish(wid, "failed", error={"type": "ValueError", "message": "boom"})
    assert store.describe(wid)["error"] == {"type": "ValueError", "message": "boom"}  # type: ignore[index]


# --- unreadable files fail only their workload ---------------------------------


def test_an_empty_meta_file_is_a_problem_of_that_workload_only(tmp_path: Path) -> None:
    store = WorkloadStore(f"file://{tmp_path}/")
    bad, good = new_workload_id(), new_workload_id()
    for wid in (bad, good):
        store.submit(wid, b"x", "text/plain")
    (tmp_path / "workloads" / bad / "meta.json").write_bytes(b"")  # what a power loss can leave
    state = store.state(bad)
    assert state.problem is not None and "meta.json is unreadable (empty)" in state.problem
    assert store.state(good).problem is None
    with pytest.raises(Unreadable):
        store.payload(bad)


def test_a_truncated_payload_is_refused(tmp_path: Path) -> None:
    store = WorkloadStore(f"file://{tmp_path}/")
    wid = new_workload_id()
    store.submit(wid, b"0123456789", "application/octet-stream")
    (tmp_path / "workloads" / wid / "payload").write_bytes(b"0123")
    with pytest.raises(Unreadable, match=r"truncated in the store \(4 of 10 bytes\)"):
        store.payload(wid)


def test_an_empty_final_file_reads_as_failed_with_the_reason(tmp_path: Path) -> None:
    store = WorkloadStore(f"file://{tmp_path}/")
    wid = new_workload_id()
    store.submit(wid, b"x", "text/plain")
    store.finish(wid, "completed", result={})
    (tmp_path / "workloads" / wid / "final.json").write_bytes(b"")
    described = store.describe(wid)  # no JSONDecodeError, no 500
    assert described is not None and described["status"] == "failed"
    assert described["error"]["type"] == "CorruptWorkload" and "unreadable" in described["error"]["message"]


def test_writes_are_fsynced_before_they_are_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    store = WorkloadStore(f"file://{tmp_path}/")
    store.submit(new_workload_id(), b"x", "text/plain")
    # payload, meta, queue entry: each file and its folder (plus the folders it created)
    assert len(synced) >= 6


# --- passes touch only what they are about --------------------------------------


class Counting(LocalStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.listed: list[str] = []
        self.reads = 0

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        found = super().list(prefix)
        self.listed.append(f"{prefix}:{len(found)}")
        return found

    def read(self, key: str) -> bytes:
        self.reads += 1
        return super().read(key)


def test_scans_and_expiry_touch_only_unfinished_or_due_workloads(tmp_path: Path) -> None:
    store = WorkloadStore(f"file://{tmp_path}/", result_ttl=600)
    counting = Counting(tmp_path)
    store._storage = counting
    long_ago = time.time() - 3600
    finished = [new_workload_id() for _ in range(40)]
    for wid in finished:
        store.submit(wid, b"x", "text/plain")
        final = {"status": "completed", "result": {}, "finished_at": long_ago}
        store.storage.create(f"workloads/{wid}/final.json", json.dumps(final).encode())
        store.tidy(wid, final)
    recent = [new_workload_id() for _ in range(10)]
    for wid in recent:
        store.submit(wid, b"x", "text/plain")
        store.finish(wid, "completed", result={})
    queued = [new_workload_id() for _ in range(3)]
    for wid in queued:
        store.submit(wid, b"x", "text/plain")
    counting.listed.clear()
    counting.reads = 0
    assert store.unfinished() == sorted(queued)
    assert counting.listed == ["queue:3"]  # one listing of the queue, nothing else
    counting.listed.clear()
    assert store.expire() == 40
    assert counting.reads == 0  # no status read per finished workload
    listed_markers = sum(int(x.split(":")[1]) for x in counting.listed if x.startswith("done/"))
    assert listed_markers == 40  # only the due bucket's markers were listed, not the recent ones
    assert all(store.describe(w) is None for w in finished)
    assert all(store.describe(w)["status"] == "completed" for w in recent)  # type: ignore[index]
    assert all(store.describe(w)["status"] == "in_queue" for w in queued)  # type: ignore[index]


def test_a_stale_lease_is_not_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = WorkloadStore(f"file://{tmp_path}/")
    wid = new_workload_id()
    store.submit(wid, b"x", "text/plain")
    assert store.acquire_lease(wid, 1, "w") == 1
    later: Any = time.time() + LEASE_TTL + 1
    assert store.state(wid).lease_fresh() and not store.state(wid).lease_fresh(later)


def test_of_two_workers_taking_a_workload_at_once_exactly_one_runs_it(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = WorkloadStore(f"file://{tmp_path}/")
    wid = new_workload_id()
    store.submit(wid, b"x", "text/plain")
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda i: store.acquire_lease(wid, 1, f"worker-{i}"), range(16)))
    assert sum(t is not None for t in taken) == 1


def test_a_stale_lease_is_taken_over_with_the_next_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cortex_ray.asyncapi import store as store_module

    store = WorkloadStore(f"file://{tmp_path}/")
    wid = new_workload_id()
    store.submit(wid, b"x", "text/plain")
    assert store.acquire_lease(wid, 1, "died") == 1
    assert store.acquire_lease(wid, 2, "other") is None  # fresh: not taken
    monkeypatch.setattr(store_module, "LEASE_TTL", 0.0)
    assert store.acquire_lease(wid, 2, "other") == 2
    assert store.lease(wid)["holder"] == "other"  # type: ignore[index]
    store.finish(wid, "completed", result={})
    assert sorted(p.name for p in (tmp_path / "workloads" / wid).iterdir()) == ["final.json", "meta.json"]


def test_a_refused_final_write_with_nothing_readable_is_an_error_not_a_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cortex_ray.errors import StorageError

    store = WorkloadStore(f"file://{tmp_path}/")
    wid = new_workload_id()
    store.submit(wid, b"x", "text/plain")
    monkeypatch.setattr(type(store.storage), "create", lambda self, key, data, content_type=None: False)
    with pytest.raises(StorageError, match="could not be written"):
        store.finish(wid, "completed", result={})
    assert store.unfinished() == [wid]  # still queued: the dispatcher tries again
