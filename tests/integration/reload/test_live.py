"""Live reloading on a real local Ray Serve, with a client sending requests the whole time.

Each test changes model storage (a local folder, or the S3 test server) while
traffic runs, and checks that no request fails and every answer's model content
and version are allowed at that moment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from tests.support.project import write_handler
from tests.support.traffic import Answer, Traffic

pytestmark = pytest.mark.ray

HANDLER = """
import os

class Handler:
    def __init__(self, model_client):
        self.client = model_client

    def load_model(self, model_path):
        files = set(os.listdir(model_path))
        if "parts.txt" in files:  # a multi-file model: every listed part must be there
            expected = open(os.path.join(model_path, "parts.txt")).read().split()
            missing = [p for p in expected if p not in files]
            if missing:
                raise RuntimeError(f"half-written model, missing {missing}")
        text = open(os.path.join(model_path, "model.txt")).read()
        if text.startswith("broken"):
            raise RuntimeError("cannot load: " + text)
        return text

    def handle_post(self, payload):
        model, version = self.client.get_model_and_version(payload["model"], payload.get("version", "latest"))
        return {"content": model, "version": version}
"""


class Store(Protocol):
    uri: str
    env: dict[str, str]

    def put(self, key: str, text: str) -> None: ...
    def delete(self, key: str) -> None: ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)
        self.env: dict[str, str] = {}
        root.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, text: str) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def delete(self, key: str) -> None:
        path = self.root / key
        path.unlink()
        parent = path.parent
        while parent != self.root and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


class S3Store:
    def __init__(self, server: Any, bucket: str) -> None:
        self.client = server.client()
        self.bucket = bucket
        self.uri = f"s3://{bucket}/models/"
        self.env = server.env()

    def put(self, key: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"models/{key}", Body=text.encode())

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"models/{key}")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    return S3Store(server, request.getfixturevalue("s3_bucket"))


def live_api(name: str, store: Store, **models: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "threads_per_process": 4,
            "env": store.env,
            "multi_model_reloading": {"dir": store.uri, "poll_interval": 0.5, "settle_time": 0.5, **models},
        },
    }


def content(text: str) -> Any:
    return lambda a: a.status == 200 and a.body["content"] == text


def bodies(answers: list[Answer]) -> set[tuple[str, int]]:
    return {(a.body["content"], a.body["version"]) for a in answers if a.status == 200}


def test_the_four_events_and_version_changes_under_traffic(
    tmp_path: Path, store: Store, deploy: Any, serve_url: str
) -> None:
    write_handler(tmp_path, HANDLER)
    store.put("a/1/model.txt", "a1")
    store.put("b/model.txt", "b-unversioned")
    deploy(tmp_path, [live_api("live-events", store)])
    url = f"{serve_url}/live-events"
    payloads = [{"model": "a"}, {"model": "b"}, {"model": "c"}]
    with Traffic(url, payloads) as traffic:
        traffic.wait_for(content("a1"), model="a")
        assert traffic.wait_for(lambda a: a.status == 404, model="c")

        # 1. a model is added to the dir
        store.put("c/1/model.txt", "c1")
        added = traffic.wait_for(content("c1"), model="c")

        # 2. a version is added: latest moves to it once loaded
        store.put("a/2/model.txt", "a2")
        moved = traffic.wait_for(content("a2"), model="a")
        time.sleep(0.5)

        # 3. a file is updated in place
        store.put("a/2/model.txt", "a2-updated")
        updated = traffic.wait_for(content("a2-updated"), model="a")
        time.sleep(0.5)

        # 4. the model's folder structure changes: unversioned -> versioned
        store.put("b/1/model.txt", "b-v1")
        store.put("b/2/model.txt", "b-v2")
        store.delete("b/model.txt")
        restructured = traffic.wait_for(content("b-v2"), model="b")
        time.sleep(0.5)

        # 5. a version is removed: latest falls back to the highest remaining one
        store.delete("a/2/model.txt")
        fell_back = traffic.wait_for(lambda a: a.status == 200 and a.body["version"] == 1, model="a")

        # 6. a model is removed from the dir
        store.delete("c/1/model.txt")
        removed = traffic.wait_for(lambda a: a.status == 404, model="c")
        time.sleep(1.0)

    assert traffic.failures("a") == [] and traffic.failures("b") == []
    assert {a.status for a in traffic.since(added, "c") if a.at < removed} == {200}
    assert {a.status for a in traffic.since(removed, "c")} == {404}
    assert bodies(traffic.since(moved, "a")) <= {("a2", 2), ("a2-updated", 2), ("a1", 1)}
    assert ("a1", 1) not in bodies([a for a in traffic.since(moved, "a") if a.at < fell_back])
    assert ("a2", 2) not in bodies(traffic.since(updated, "a"))
    assert bodies(traffic.since(fell_back, "a")) == {("a1", 1)}
    assert bodies(traffic.since(restructured, "b")) == {("b-v2", 2)}
    # while "latest" moves to 2, version 1 may already serve its new files (b-v1): both are published
    assert bodies([a for a in traffic.answers if a.model == "b"]) <= {
        ("b-unversioned", 1),
        ("b-v1", 1),
        ("b-v2", 2),
    }
    assert len(traffic.answers) > 50


def test_a_failing_new_version_never_replaces_the_serving_one(
    tmp_path: Path, deploy: Any, serve_url: str, http: httpx.Client
) -> None:
    store = LocalStore(tmp_path / "store")
    write_handler(tmp_path, HANDLER)
    store.put("a/1/model.txt", "a1")
    deploy(tmp_path, [live_api("live-failing", store)])
    with Traffic(f"{serve_url}/live-failing", [{"model": "a"}]) as traffic:
        traffic.wait_for(content("a1"))
        store.put("a/2/model.txt", "broken v2")
        deadline = time.time() + 30
        details: dict[str, Any] = {}
        while time.time() < deadline:
            details = http.get("/live-failing/info").json()["model_metadata"]["a"]["details"]
            if details.get("2", {}).get("state") == "failed":
                break
            time.sleep(0.3)
        assert details["2"]["state"] == "failed"
        assert "cannot load: broken v2" in details["2"]["reason"]
        time.sleep(2)  # retries with backoff keep failing; v1 keeps serving
        store.put("a/2/model.txt", "a2 fixed")
        fixed = traffic.wait_for(content("a2 fixed"))
        time.sleep(0.5)
    assert traffic.failures() == []
    assert bodies([a for a in traffic.answers if a.at < fixed]) == {("a1", 1)}
    assert bodies(traffic.since(fixed)) == {("a2 fixed", 2)}


def test_a_slow_file_by_file_upload_is_never_loaded_half_written(
    tmp_path: Path, deploy: Any, serve_url: str, http: httpx.Client
) -> None:
    store = LocalStore(tmp_path / "store")
    write_handler(tmp_path, HANDLER)
    store.put("a/1/model.txt", "a1")
    deploy(tmp_path, [live_api("live-upload", store, poll_interval=0.5, settle_time=3)])
    parts = [f"part-{i}.bin" for i in range(4)]
    with Traffic(f"{serve_url}/live-upload", [{"model": "a"}]) as traffic:
        traffic.wait_for(content("a1"))
        store.put("a/2/parts.txt", " ".join([*parts, "model.txt"]))
        for part in parts:  # one file a second, for several seconds
            time.sleep(1.0)
            store.put(f"a/2/{part}", "x" * 1000)
        store.put("a/2/model.txt", "a2 complete")
        complete = time.time()
        served = traffic.wait_for(content("a2 complete"), timeout=30)
    assert served >= complete
    assert traffic.failures() == []
    assert bodies([a for a in traffic.answers if a.at < complete]) == {("a1", 1)}
    info = http.get("/live-upload/info").json()
    assert info["model_metadata"]["a"]["details"]["2"]["state"] == "available"
    assert "attempts" not in info["model_metadata"]["a"]["details"]["2"]  # never failed to load


def test_storage_down_for_a_while_unloads_nothing(
    tmp_path: Path, deploy: Any, serve_url: str, http: httpx.Client, s3_server: Any, s3_bucket: str
) -> None:
    store = S3Store(s3_server, s3_bucket)
    write_handler(tmp_path, HANDLER)
    store.put("a/1/model.txt", "a1")
    deploy(tmp_path, [live_api("live-outage", store)])
    with Traffic(f"{serve_url}/live-outage", [{"model": "a"}]) as traffic:
        traffic.wait_for(content("a1"))
        s3_server.stop(keep_data=True)
        try:
            time.sleep(4)
            reloader = http.get("/live-outage/info").json()["reloader"]
            assert reloader["failed_polls"] >= 2
            assert "127.0.0.1" in reloader["last_error"]
            assert http.post("/live-outage", json={"model": "a"}).json() == {"content": "a1", "version": 1}
        finally:
            s3_server.start()
        store.put("a/2/model.txt", "a2 after outage")
        traffic.wait_for(content("a2 after outage"), timeout=60)
    assert traffic.failures() == []
    reloader = http.get("/live-outage/info").json()["reloader"]
    assert reloader["last_successful_poll"] > reloader["last_error_at"]


def test_a_killed_reloader_is_restarted_and_changes_still_arrive(
    tmp_path: Path, deploy: Any, serve_url: str, http: httpx.Client
) -> None:
    import ray

    store = LocalStore(tmp_path / "store")
    write_handler(tmp_path, HANDLER)
    store.put("a/1/model.txt", "a1")
    deploy(tmp_path, [live_api("live-kill", store)])
    before = http.get("/live-kill/info").json()["reloader"]["epoch"]
    (actor,) = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "live-kill::live-kill::" in a["name"] and a["name"].endswith("::reloader")
    ]
    with Traffic(f"{serve_url}/live-kill", [{"model": "a"}]) as traffic:
        traffic.wait_for(content("a1"))
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
        time.sleep(1.0)
        store.put("a/2/model.txt", "a2 after restart")
        traffic.wait_for(content("a2 after restart"), timeout=90)
    assert traffic.failures() == []
    info = http.get("/live-kill/info").json()
    assert info["reloader"]["epoch"] != before
    assert info["replica"]["epoch"] == info["reloader"]["epoch"]
    # the new reloader gave the replica its whole tree once (another epoch), then the change alone
    assert info["reloader"]["full_syncs"] >= 1 and info["reloader"]["delta_syncs"] >= 1
    assert info["replica"]["deltas"] >= 1


@pytest.mark.s3
def test_list_requests_do_not_grow_with_replicas(
    tmp_path: Path, deploy: Any, http: httpx.Client, s3_server: Any, s3_bucket: str
) -> None:
    store = S3Store(s3_server, s3_bucket)
    write_handler(tmp_path, HANDLER)
    store.put("a/1/model.txt", "a1")

    def list_requests() -> int:
        text = Path(s3_server.log_path).read_text(errors="replace")
        return sum(1 for line in text.splitlines() if f"GET /{s3_bucket}?list-type=2" in line)

    counts = {}
    for replicas in (1, 3):
        spec = live_api("live-count", store, poll_interval=0.5)
        spec["autoscaling"] = {"min_replicas": replicas, "max_replicas": replicas}
        deploy(tmp_path, [spec])
        assert http.post("/live-count", json={"model": "a"}).status_code == 200
        time.sleep(1)
        start = list_requests()
        time.sleep(6)  # (a window measured, not a wait for a condition)
        counts[replicas] = list_requests() - start
    assert 7 <= counts[1] <= 14, counts  # two list requests a second, from the reloader alone
    assert abs(counts[3] - counts[1]) <= 3, counts


WARM_HANDLER = """
WARMED = []

class Handler:
    def __init__(self, model_client):
        self.client = model_client

    def load_model(self, model_path):
        return open(model_path + "/model.txt").read()

    def handle_post(self, payload):
        model, version = self.client.get_model_and_version(payload["model"])
        if payload.get("warm"):
            WARMED.append(model)  # what "latest" meant while warming up
        return {"content": model, "version": version}

    def handle_get(self):
        return {"warmed": WARMED}
"""


def test_a_pinned_model_warmed_up_at_start_and_its_new_version_warmed_before_it_serves(
    tmp_path: Path, deploy: Any, serve_url: str, http: httpx.Client
) -> None:
    store = LocalStore(tmp_path / "store")
    write_handler(tmp_path, WARM_HANDLER)
    warmup = '[{"payload": {"model": "a", "warm": true}}]'
    store.put("a/1/warmup.json", warmup)
    store.put("a/1/model.txt", "a1")
    store.put("b/1/model.txt", "b1")
    models = {"pinned": ["a"], "cache_size": 1, "disk_cache_size": 4}
    deploy(tmp_path, [live_api("live-pinned", store, **models)])
    info = http.get("/live-pinned/info").json()
    assert info["cache"]["in_memory"] == ["a:1"]  # loaded before the replica took traffic
    assert info["model_metadata"]["a"]["details"]["1"]["pinned"] is True
    assert http.get("/live-pinned").json() == {"warmed": ["a1"]}
    with Traffic(f"{serve_url}/live-pinned", [{"model": "a"}]) as traffic:
        traffic.wait_for(content("a1"))
        b = httpx.post(f"{serve_url}/live-pinned", json={"model": "b"}, timeout=30)
        assert b.status_code == 503 and b.json()["error"] == "model_cache_full"  # the one slot is pinned
        store.put("a/2/warmup.json", warmup)
        store.put("a/2/model.txt", "a2")
        moved = traffic.wait_for(content("a2"))
        time.sleep(0.5)
    assert http.get("/live-pinned").json() == {"warmed": ["a1", "a2"]}  # a2 warmed as "latest"
    assert traffic.failures() == []
    assert bodies(traffic.since(moved)) == {("a2", 2)}
    assert http.get("/live-pinned/info").json()["cache"]["in_memory"] == ["a:2"]
