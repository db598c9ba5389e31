"""The AsyncAPI workload store on a local folder (no Ray)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cortex_ray.asyncapi.store import WorkloadStore, new_workload_id, valid_workload_id


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
    store.set_status(wid, "in_progress", attempts=1)
    assert store.unfinished() == [wid]
    store.complete(wid, {"answer": 42})
    done = store.describe(wid)
    assert done is not None and done["status"] == "completed" and done["result"] == {"answer": 42}
    assert done["timestamp"].endswith("Z")
    assert not (tmp_path / wid / "payload").exists()
    assert store.unfinished() == []


def test_failed_workload_reports_its_error(tmp_path: Path) -> None:
    store = WorkloadStore(f"file://{tmp_path}/")
    wid = new_workload_id()
    store.submit(wid, b"x", "text/plain")
    store.fail(wid, "ValueError", "boom")
    assert store.describe(wid)["error"] == {"type": "ValueError", "message": "boom"}  # type: ignore[index]


def test_expiry_deletes_only_old_finished_workloads(tmp_path: Path) -> None:
    store = WorkloadStore(f"file://{tmp_path}/")
    old, fresh, queued = new_workload_id(), new_workload_id() + "", new_workload_id()
    for wid in (old, fresh, queued):
        store.submit(wid, b"x", "text/plain")
    store.complete(old, {})
    store.complete(fresh, {})
    status = json.loads((tmp_path / old / "status.json").read_text())
    status["updated_at"] = time.time() - 3600
    (tmp_path / old / "status.json").write_text(json.dumps(status))
    assert store.expire(ttl=60) == 1
    assert store.describe(old) is None
    assert store.describe(fresh) is not None and store.describe(queued) is not None
