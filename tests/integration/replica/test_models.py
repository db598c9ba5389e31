"""model_client and the per-replica cache over real HTTP on a real local Ray Serve."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.project import write_files, write_handler

pytestmark = pytest.mark.ray

HANDLER = """
import os
import time

LOADS = []

class Handler:
    def __init__(self, config, model_client):
        self.client = model_client

    def load_model(self, model_path):
        text = open(os.path.join(model_path, "model.txt")).read()
        if text.startswith("slow"):
            time.sleep(float(text.split()[1]))
        if text == "broken":
            raise RuntimeError("cannot parse model.txt")
        LOADS.append(model_path)
        return text

    def handle_post(self, payload):
        model, version = self.client.get_model_and_version(
            payload.get("model"), payload.get("version", "latest")
        )
        time.sleep(payload.get("hold", 0))  # a slow request, using its model all along
        return {"model": model, "version": version}

    def handle_get(self):
        return {"loads": len(LOADS)}
"""


def api(name: str, models: dict[str, Any], **handler: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": "handler.py", "multi_model_reloading": models, **handler},
    }


def project(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    write_handler(tmp_path, HANDLER)
    write_files(tmp_path / "models", files)
    return tmp_path


def test_get_model_by_name_and_version(tmp_path: Path, deploy: Any, http: httpx.Client) -> None:
    project(tmp_path, {"a/1/model.txt": "a1", "a/2/model.txt": "a2", "b/model.txt": "b"})
    deploy(tmp_path, [api("named", {"dir": "models"})])
    r = http.post("/named", json={"model": "a"})
    assert r.json() == {"model": "a2", "version": 2}
    assert r.headers["x-cortex-model-version"] == "a=2"
    assert http.post("/named", json={"model": "a", "version": "1"}).json() == {"model": "a1", "version": 1}
    assert http.post("/named", json={"model": "b"}).json() == {"model": "b", "version": 1}
    info = http.get("/named/info").json()["model_metadata"]
    assert info["a"]["versions"] == ["1", "2"] and len(info["a"]["timestamps"]) == 2
    assert info["a"]["details"]["2"]["state"] == "available"
    assert info["a"]["details"]["2"]["in_memory"] is True
    assert info["a"]["details"]["1"]["on_disk"] is True  # no cache limits: all downloaded at start


def test_error_statuses(tmp_path: Path, deploy: Any, http: httpx.Client) -> None:
    project(tmp_path, {"a/1/model.txt": "a1", "bad/1/model.txt": "broken", "b/model.txt": "b"})
    deploy(tmp_path, [api("errors", {"dir": "models"})])
    r = http.post("/errors", json={"model": "nope"})
    assert r.status_code == 404
    assert r.json()["error"] == "model_not_found"
    assert "a, b, bad" in r.json()["message"] and r.json()["available"] == ["a", "b", "bad"]
    r = http.post("/errors", json={"model": "a", "version": "9"})
    assert r.status_code == 404 and r.json()["error"] == "model_version_not_found"
    r = http.post("/errors", json={"model": "a", "version": "newest"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_model_version"
    r = http.post("/errors", json={"model": "bad"})
    assert r.status_code == 503
    assert r.json()["error"] == "model_load_failed"
    assert "cannot parse model.txt" in r.json()["message"]
    r = http.post("/errors", json={})
    assert r.status_code == 400 and "model_name was not specified" in r.json()["message"]
    # the failure shows in /info, and the good models still serve
    details = http.get("/errors/info").json()["model_metadata"]["bad"]["details"]["1"]
    assert details["state"] == "failed" and "cannot parse" in details["reason"]
    assert http.post("/errors", json={"model": "a"}).status_code == 200


def test_lru_order_and_both_limits(tmp_path: Path, deploy: Any, http: httpx.Client) -> None:
    project(tmp_path, {f"{n}/1/model.txt": n for n in "abcd"})
    deploy(tmp_path, [api("lru", {"dir": "models", "cache_size": 2, "disk_cache_size": 3})])
    cache = http.get("/lru/info").json()["cache"]
    assert cache["in_memory"] == [] and cache["on_disk"] == []  # caching: nothing at start
    for name in "abc":
        assert http.post("/lru", json={"model": name}).status_code == 200
    cache = http.get("/lru/info").json()["cache"]
    assert cache["in_memory"] == ["b:1", "c:1"]
    assert cache["on_disk"] == ["a:1", "b:1", "c:1"]
    http.post("/lru", json={"model": "b"})
    http.post("/lru", json={"model": "d"})
    cache = http.get("/lru/info").json()["cache"]
    assert cache["in_memory"] == ["b:1", "d:1"]
    assert sorted(cache["on_disk"]) == ["b:1", "c:1", "d:1"]
    assert (cache["memory_limit"], cache["disk_limit"]) == (2, 3)


def test_a_model_in_use_waits_out_its_request_and_an_idle_one_leaves_memory(
    tmp_path: Path, deploy: Any, http: httpx.Client, serve_url: str
) -> None:
    """cache_size 1: a request holding model a for 3 s is not robbed of it by a request for b,
    which is answered once a's request ended; then b, unused for idle_timeout, leaves memory."""
    project(tmp_path, {"a/1/model.txt": "a", "b/1/model.txt": "b"})
    models = {"dir": "models", "cache_size": 1, "disk_cache_size": 2, "idle_timeout": "2s"}
    deploy(tmp_path, [api("held", models, threads_per_process=4)])

    def call(payload: dict[str, Any]) -> tuple[int, float, Any]:
        r = httpx.post(f"{serve_url}/held", json=payload, timeout=60)
        return r.status_code, time.monotonic(), r.json().get("model")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(call, {"model": "a", "hold": 3})
        deadline = time.monotonic() + 30
        while http.get("/held/info").json()["model_metadata"]["a"]["details"]["1"].get("in_use") != 1:
            assert time.monotonic() < deadline, "a never went in use"
            time.sleep(0.05)
        other = pool.submit(call, {"model": "b"})
        (a_status, a_done, a_model), (b_status, b_done, b_model) = slow.result(), other.result()
    assert (a_status, a_model, b_status, b_model) == (200, "a", 200, "b")
    assert b_done >= a_done - 0.05  # b waited for a's request to end
    deadline = time.monotonic() + 30
    while http.get("/held/info").json()["cache"]["in_memory"] != []:  # b: idle for 2 s
        assert time.monotonic() < deadline, "b never left memory"
        time.sleep(0.1)
    assert sorted(http.get("/held/info").json()["cache"]["on_disk"]) == ["a:1", "b:1"]


NUMPY_HANDLER = """
import os
import numpy as np

class Handler:
    def __init__(self, config, model_client):
        self.client = model_client

    def load_model(self, model_path):
        megabytes = int(open(os.path.join(model_path, "model.txt")).read())
        return np.ones(megabytes * 131072)  # 8-byte floats: that many MiB, every page touched

    def handle_post(self, payload):
        return {"sum": float(self.client.get_model(payload["model"]).sum())}
"""


def test_a_byte_budget_holds_models_by_their_measured_size(
    tmp_path: Path, deploy: Any, http: httpx.Client
) -> None:
    """cache_size 18Mi, models of 8, 8 and 3 MiB of numpy memory (their files: a few bytes): sizes
    are measured across load_model, and what is held never passes the budget."""
    write_handler(tmp_path, NUMPY_HANDLER)
    write_files(tmp_path / "models", {"a/1/model.txt": "8", "b/1/model.txt": "8", "c/1/model.txt": "3"})
    deploy(tmp_path, [api("bytes", {"dir": "models", "cache_size": "18Mi", "disk_cache_size": 3})])
    for name in "abc":
        assert http.post("/bytes", json={"model": name}).status_code == 200
        cache = http.get("/bytes/info").json()["cache"]
        assert cache["memory_unit"] == "bytes" and cache["memory_used"] <= 18 * 2**20, cache
    info = http.get("/bytes/info").json()
    details = {n: info["model_metadata"][n]["details"]["1"] for n in "abc"}
    assert info["cache"]["in_memory"] == ["b:1", "c:1"], info["cache"]  # a went for c: 8 + 8 + 3 > 18
    for name, mib in (("b", 8), ("c", 3)):
        assert details[name]["size_source"] == "measured"
        assert mib * 2**20 <= details[name]["memory_bytes"] < (mib + 4) * 2**20, details[name]


def test_ten_concurrent_requests_for_a_cold_model_load_it_once(
    tmp_path: Path, deploy: Any, http: httpx.Client, serve_url: str
) -> None:
    project(tmp_path, {"slow/1/model.txt": "slow 2"})
    deploy(
        tmp_path,
        [api("cold", {"dir": "models", "cache_size": 1, "disk_cache_size": 1}, threads_per_process=4)],
    )

    def call(_: int) -> httpx.Response:
        return httpx.post(f"{serve_url}/cold", json={"model": "slow"}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(call, range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert http.get("/cold").json() == {"loads": 1}


def test_slow_load_does_not_delay_another_model(
    tmp_path: Path, deploy: Any, http: httpx.Client, serve_url: str
) -> None:
    project(tmp_path, {"slow/1/model.txt": "slow 4", "fast/1/model.txt": "fast"})
    deploy(tmp_path, [api("nonblocking", {"dir": "models", "cache_size": 2, "disk_cache_size": 2})])
    assert http.post("/nonblocking", json={"model": "fast"}).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.post, f"{serve_url}/nonblocking", json={"model": "slow"}, timeout=60)
        time.sleep(1.0)
        started = time.perf_counter()
        fast = http.post("/nonblocking", json={"model": "fast"})
        elapsed = time.perf_counter() - started
        assert fast.status_code == 200
        assert not slow.done(), "the slow load should still be running"
        assert elapsed < 2.0, f"a warm model waited {elapsed:.1f}s behind a slow load"
        assert slow.result().json() == {"model": "slow 4", "version": 1}


@pytest.mark.s3
def test_models_on_the_s3_server(
    tmp_path: Path, deploy: Any, http: httpx.Client, s3_server: Any, s3_bucket: str
) -> None:
    write_handler(tmp_path, HANDLER)
    s3_server.put_tree(s3_bucket, "models", {"m/1/model.txt": "m1", "m/3/model.txt": "m3"})
    env = s3_server.env()
    deploy(tmp_path, [api("from-s3", {"dir": f"s3://{s3_bucket}/models/"}, env=env)])
    assert http.post("/from-s3", json={"model": "m"}).json() == {"model": "m3", "version": 3}
    assert http.post("/from-s3", json={"model": "m", "version": 1}).json() == {"model": "m1", "version": 1}


def test_inferentia_replica_is_scheduled_on_neuron_cores(
    tmp_path: Path, deploy: Any, http: httpx.Client
) -> None:
    import ray

    write_handler(
        tmp_path,
        """
        import os

        class Handler:
            def handle_get(self):
                import ray
                assigned = ray.get_runtime_context().get_assigned_resources()
                return {"neuron_cores": assigned.get("neuron_cores")}
        """,
    )
    before = ray.available_resources().get("neuron_cores", 0)
    spec = {
        "name": "inf",
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": "handler.py"},
        "compute": {"inf": 1, "cpu": "100m"},
    }
    deploy(tmp_path, [spec])
    assert http.get("/inf").json() == {"neuron_cores": 2.0}  # one inf2 chip: 2 NeuronCores
    assert ray.available_resources().get("neuron_cores", 0) == before - 2


def test_info_shows_only_cortex_fields_unless_the_operator_view_is_on(
    tmp_path: Path, deploy: Any, http: httpx.Client
) -> None:
    from ray import serve

    project(tmp_path, {"a/1/model.txt": "broken", "a/2/model.txt": "a2"})
    deploy(tmp_path, [api("quiet", {"dir": "models"})], info_details=False)  # as on --host 0.0.0.0
    assert http.post("/quiet", json={"model": "a", "version": "1"}).status_code == 503
    public = http.get("/quiet/info").json()
    assert set(public) == {"model_metadata"}
    assert set(public["model_metadata"]["a"]) == {"versions", "timestamps"}  # no reasons, no paths
    assert "cannot parse" not in str(public)
    full = serve.get_app_handle("quiet").info.remote().result()  # the operator, through Ray
    assert "cannot parse" in full["model_metadata"]["a"]["details"]["1"]["reason"]
    assert full["replica"]["disk_cache"].startswith("/")


ONNX_HANDLER = """
import os

import numpy as np

class Handler:
    def __init__(self, model_client):
        self.client = model_client

    def load_model(self, model_path):
        import onnxruntime

        return onnxruntime.InferenceSession(
            os.path.join(model_path, "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def handle_post(self, payload):
        session, version = self.client.get_model_and_version("adder")
        y = session.run(None, {"x": np.asarray(payload["x"], dtype=np.float32)})[0]
        return {"y": y.tolist(), "version": version}
"""


def adder_onnx(add: float) -> bytes:
    """A real ONNX model: y = x + ``add``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["y"])],
        "adder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor("b", TensorProto.FLOAT, [1], [add])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def test_a_garbage_onnx_version_fails_with_its_reason_while_the_last_good_one_serves(
    tmp_path: Path, deploy: Any, serve_url: str, http: httpx.Client
) -> None:
    pytest.importorskip("onnxruntime")
    from tests.support.traffic import Traffic

    write_handler(tmp_path, ONNX_HANDLER)
    write_files(tmp_path / "models", {"adder/1/model.onnx": adder_onnx(1.0)})
    deploy(tmp_path, [api("onnx-broken", {"dir": "models", "poll_interval": 0.5, "settle_time": 0.5})])
    with Traffic(f"{serve_url}/onnx-broken", [{"x": [1.0]}]) as traffic:
        traffic.wait_for(lambda a: a.status == 200 and a.body == {"y": [2.0], "version": 1})
        (tmp_path / "models" / "adder" / "2").mkdir()
        (tmp_path / "models" / "adder" / "2" / "model.onnx").write_bytes(b"\x08\x07not a model at all")
        deadline = time.monotonic() + 60
        while True:
            details = http.get("/onnx-broken/info").json()["model_metadata"]["adder"]["details"]
            if details.get("2", {}).get("state") == "failed":
                break
            assert time.monotonic() < deadline, details
            time.sleep(0.2)
        assert "protobuf" in details["2"]["reason"].lower(), details["2"]
        assert details["1"]["state"] == "available"
        broken_seen = time.time()
        traffic.wait_for(lambda a: a.status == 200 and a.body["version"] == 1)  # (still serving)

        # fixed in place: the same version, a valid file; retried and served
        (tmp_path / "models" / "adder" / "2" / "model.onnx").write_bytes(adder_onnx(2.0))
        traffic.wait_for(lambda a: a.status == 200 and a.body == {"y": [3.0], "version": 2}, timeout=60)
    assert traffic.failures() == []
    assert all(a.body["version"] == 1 for a in traffic.answers if a.at <= broken_seen)
