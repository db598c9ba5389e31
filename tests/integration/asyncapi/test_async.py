"""AsyncAPI end to end on a real local Ray Serve over HTTP: submit, process, status, durability."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.project import write_handler

pytestmark = pytest.mark.ray

HANDLER = """
import os
import time

class Handler:
    def __init__(self, config):
        self.config = config

    def handle_async(self, payload, request_id):
        if isinstance(payload, dict):
            if payload.get("fail"):
                raise ValueError("asked to fail")
            if payload.get("not_dict"):
                return [1, 2, 3]
            if payload.get("sleep"):
                time.sleep(payload["sleep"])
            if payload.get("gate"):
                while not os.path.exists(payload["gate"]):
                    time.sleep(0.05)
            if payload.get("die_once"):
                marker = payload["die_once"]
                if not os.path.exists(marker):
                    open(marker, "w").close()
                    os._exit(1)  # the worker process dies in the middle of the workload
        body = payload.hex() if isinstance(payload, bytes) else payload
        return {"type": type(payload).__name__, "payload": body, "id": request_id}
"""


def async_api(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "AsyncAPI",
        "handler": {"type": "python", "path": "handler.py"},
        "autoscaling": {"min_replicas": 1, "max_replicas": 3},
        **extra,
    }


def wait_done(http: httpx.Client, endpoint: str, workload_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = http.get(f"{endpoint}/{workload_id}").json()
        if body["status"] in ("completed", "failed"):
            return body  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"workload {workload_id} did not finish: {body}")


@pytest.fixture(scope="module")
def async_app(tmp_path_factory: pytest.TempPathFactory, ray_serve: dict[str, Any]) -> Any:
    from cortex_ray.sdk import delete, run_api
    from cortex_ray.spec import parse_spec

    project = tmp_path_factory.mktemp("async")
    write_handler(project, HANDLER)
    api = parse_spec([async_api("jobs")], base_dir=project).apis[0]
    run_api(api, ray_actor_options={"num_cpus": 0.1})
    yield project
    delete("jobs")


def test_json_text_and_binary_workloads(async_app: Path, http: httpx.Client) -> None:
    cases = [
        ({"json": {"a": 1}}, "dict", {"a": 1}),
        ({"content": "héllo", "headers": {"content-type": "text/plain; charset=utf-8"}}, "str", "héllo"),
        ({"content": b"\x00\x01", "headers": {"content-type": "application/octet-stream"}}, "bytes", "0001"),
    ]
    for kwargs, kind, payload in cases:
        r = http.post("/jobs", **kwargs)
        assert r.status_code == 200, r.text
        workload_id = r.json()["id"]
        assert set(r.json()) == {"id"}
        done = wait_done(http, "/jobs", workload_id)
        assert done["status"] == "completed", done
        assert done["result"] == {"type": kind, "payload": payload, "id": workload_id}
        assert done["timestamp"].endswith("Z")


def test_status_while_queued_and_in_progress(async_app: Path, http: httpx.Client) -> None:
    workload_id = http.post("/jobs", json={"sleep": 2}).json()["id"]
    seen = {http.get(f"/jobs/{workload_id}").json()["status"]}
    deadline = time.time() + 30
    while "in_progress" not in seen and time.time() < deadline:
        seen.add(http.get(f"/jobs/{workload_id}").json()["status"])
        time.sleep(0.05)
    assert "in_progress" in seen and seen <= {"in_queue", "in_progress"}
    assert wait_done(http, "/jobs", workload_id)["status"] == "completed"


def test_failing_handler_and_non_dict_result(async_app: Path, http: httpx.Client) -> None:
    failed = wait_done(http, "/jobs", http.post("/jobs", json={"fail": True}).json()["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "ValueError" and "asked to fail" in failed["error"]["message"]
    bad = wait_done(http, "/jobs", http.post("/jobs", json={"not_dict": True}).json()["id"])
    assert bad["status"] == "failed"
    assert "must be json serializable dictionary, got list instead" in bad["error"]["message"]


def test_bad_requests_and_unknown_ids(async_app: Path, http: httpx.Client) -> None:
    r = http.post("/jobs", content=b"data", headers={"content-type": ""})
    assert r.status_code == 400 and "Content-Type" in r.json()["message"]
    r = http.post("/jobs", content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "no body" in r.json()["message"]
    r = http.get("/jobs/20260101000000-00000000000000000000")
    assert r.status_code == 404 and r.json()["error"] == "workload_not_found"
    for bad in ("..%2F..%2Fetc%2Fpasswd", "not-an-id", "20260101000000-zz"):
        assert http.get(f"/jobs/{bad}").status_code == 404
    assert http.put("/jobs", json={}).status_code == 405


def test_two_hundred_workloads_at_once_all_complete(
    async_app: Path, http: httpx.Client, serve_url: str
) -> None:
    def submit(i: int) -> str:
        return str(httpx.post(f"{serve_url}/jobs", json={"n": i}, timeout=60).json()["id"])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(submit, range(200)))
    assert len(set(ids)) == 200
    results = [wait_done(http, "/jobs", i, timeout=300) for i in ids]
    assert [r["status"] for r in results] == ["completed"] * 200
    assert sorted(r["result"]["payload"]["n"] for r in results) == list(range(200))


def test_a_worker_killed_mid_workload_still_completes(
    async_app: Path, http: httpx.Client, tmp_path: Path
) -> None:
    marker = tmp_path / "died-once"
    workload_id = http.post("/jobs", json={"die_once": str(marker)}).json()["id"]
    done = wait_done(http, "/jobs", workload_id, timeout=180)
    assert marker.exists()  # the first attempt did kill its worker
    assert done["status"] == "completed", done


def test_the_application_restarted_with_workloads_queued(
    tmp_path: Path, deploy: Any, http: httpx.Client
) -> None:
    """Deterministic: the workloads wait on a gate file, so the application is deleted while
    one runs and the rest are queued, whatever the machine's speed."""
    from cortex_ray.sdk import delete

    write_handler(tmp_path, HANDLER)
    gate = tmp_path / "gate"
    spec = async_api("restartable", autoscaling={"min_replicas": 1, "max_replicas": 1})
    deploy(tmp_path, [spec], graceful_shutdown_timeout_s=1)
    ids = [http.post("/restartable", json={"gate": str(gate), "n": i}).json()["id"] for i in range(6)]
    deadline = time.time() + 60
    while http.get(f"/restartable/{ids[0]}").json()["status"] != "in_progress":
        assert time.time() < deadline, "the first workload never started"
        time.sleep(0.1)
    delete("restartable")  # gateway, dispatcher and workers all go away mid-work
    store = tmp_path / ".cortex-ray/workloads/restartable"
    assert sorted(p.name for p in (store / "queue").iterdir()) == sorted(ids)  # all still unfinished
    gate.touch()
    deploy(tmp_path, [spec])
    results = [wait_done(http, "/restartable", i, timeout=180) for i in ids]
    assert [r["status"] for r in results] == ["completed"] * 6
    assert sorted(r["result"]["payload"]["n"] for r in results) == list(range(6))


def test_a_killed_dispatcher_resumes_by_itself(tmp_path: Path, deploy: Any, http: httpx.Client) -> None:
    """Only GETs after the kill: nothing submits, and the queued workloads still complete."""
    import ray

    write_handler(tmp_path, HANDLER)
    gate = tmp_path / "gate"
    deploy(tmp_path, [async_api("resumes", autoscaling={"min_replicas": 1, "max_replicas": 1})])
    ids = [http.post("/resumes", json={"gate": str(gate), "n": i}).json()["id"] for i in range(4)]
    before = http.get("/resumes/info").json()["started_at"]
    ray.kill(_dispatcher_actor("resumes"), no_restart=True)  # Serve recreates it
    gate.touch()
    results = [wait_done(http, "/resumes", i, timeout=120) for i in ids]
    assert [r["status"] for r in results] == ["completed"] * 4
    assert http.get("/resumes/info").json()["started_at"] != before  # a new dispatcher did it


def test_a_long_workload_does_not_hold_up_the_others(tmp_path: Path, deploy: Any, http: httpx.Client) -> None:
    write_handler(tmp_path, HANDLER)
    # (the long workload is still running at the end: its worker is not waited for on delete)
    spec = async_api("no-hol", autoscaling={"min_replicas": 2, "max_replicas": 2})
    deploy(tmp_path, [spec], graceful_shutdown_timeout_s=1)
    long_id = http.post("/no-hol", json={"sleep": 20}).json()["id"]
    deadline = time.time() + 60
    while http.get(f"/no-hol/{long_id}").json()["status"] != "in_progress":
        assert time.time() < deadline
        time.sleep(0.1)
    short = [http.post("/no-hol", json={"n": i}).json()["id"] for i in range(3)]
    results = [wait_done(http, "/no-hol", i, timeout=15) for i in short]  # well before the long one
    assert [r["status"] for r in results] == ["completed"] * 3
    assert http.get(f"/no-hol/{long_id}").json()["status"] == "in_progress"


def _dispatcher_actor(app: str) -> Any:
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if f"{app}::{app}::" in actor["name"] and actor["name"].endswith("::dispatcher"):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise AssertionError(f"no dispatcher actor for {app}: {ray.util.list_named_actors(True)}")


@pytest.mark.s3
def test_workloads_on_the_s3_server(
    tmp_path: Path, deploy: Any, http: httpx.Client, s3_server: Any, s3_bucket: str
) -> None:
    write_handler(tmp_path, HANDLER)
    spec = async_api("jobs-s3", workloads={"store": f"s3://{s3_bucket}/workloads/", "result_ttl": "1h"})
    spec["handler"]["env"] = s3_server.env()
    deploy(tmp_path, [spec])
    workload_id = http.post("/jobs-s3", json={"on": "s3"}).json()["id"]
    done = wait_done(http, "/jobs-s3", workload_id)
    assert done["result"]["payload"] == {"on": "s3"}
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert f"workloads/workloads/{workload_id}/final.json" in keys
    assert f"workloads/workloads/{workload_id}/payload" not in keys  # deleted once done, as Cortex did
    assert not any(k.startswith("workloads/queue/") for k in keys)
