"""The TensorFlow handler over real HTTP on a real local Ray Serve, with real SavedModels."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import tf_models
from tests.support.project import write_handler

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.ray

HANDLER = """
class Handler:
    def __init__(self, config, tensorflow_client):
        self.client = tensorflow_client

    def handle_post(self, payload):
        return self.client.predict(
            payload["input"], payload.get("model"), payload.get("version", "latest"),
            keep_shapes=payload.get("keep_shapes", False),
        )
"""

ASYNC_HANDLER = """
class Handler:
    def __init__(self, tensorflow_client):
        self.client = tensorflow_client

    async def handle_post(self, payload):
        return await self.client.predict_async(payload, "iris")
"""


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tf-models")
    tf_models.save_classifier(root / "clf" / "1", scale=1.0)
    tf_models.save_classifier(root / "clf" / "2", scale=2.0)
    tf_models.save_cortex_iris(root / "iris")
    tf_models.save_text_model(root / "text" / "5")
    tf_models.save_multi_signature(root / "multi" / "1")
    return root


def tf_api(name: str, models: dict[str, Any], path: str = "handler.py") -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {"type": "tensorflow", "path": path, "models": models},
    }


@pytest.fixture
def tf_project(tmp_path: Path, saved_models: Path) -> Path:
    write_handler(tmp_path, HANDLER)
    store = tmp_path / "store"
    for name in ("clf", "iris", "text"):
        shutil.copytree(saved_models / name, store / name)
    return tmp_path


X = [[1, 0, 0, 0], [0, 0, 0, 1]]


def test_predict_each_model_and_version(tf_project: Path, deploy: Any, http: httpx.Client) -> None:
    deploy(tf_project, [tf_api("tf-multi", {"dir": "store", "poll_interval": 0.5, "settle_time": 0.5})])
    r = http.post("/tf-multi", json={"model": "clf", "input": {"x": X}})
    assert r.status_code == 200, r.text
    assert r.json() == {"scores": [0.0, 2.0, 4.0, 18.0, 20.0, 22.0], "label": [2, 2]}
    assert r.headers["x-cortex-model-version"] == "clf=2"
    r = http.post("/tf-multi", json={"model": "clf", "version": "1", "input": {"x": X}, "keep_shapes": True})
    assert r.json()["scores"] == [[0.0, 1.0, 2.0], [9.0, 10.0, 11.0]]
    iris = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    r = http.post("/tf-multi", json={"model": "iris", "input": iris})  # scalars into [None] inputs
    assert r.json()["class_ids"] == [1]
    r = http.post("/tf-multi", json={"model": "text", "input": {"text": ["ab", "cde"]}})
    assert r.json() == {"length": [2, 3], "upper": ["AB", "CDE"]}
    details = http.get("/tf-multi/info").json()["model_metadata"]["clf"]["details"]["2"]
    assert details["signature_key"] == "serving_default"
    assert details["inputs"] == {"x": {"dtype": "float32", "shape": [None, 4]}}


def test_input_errors_are_4xx_with_a_message(tf_project: Path, deploy: Any, http: httpx.Client) -> None:
    deploy(tf_project, [tf_api("tf-errors", {"dir": "store"})])
    r = http.post("/tf-errors", json={"model": "clf", "input": {"y": X}})
    assert r.status_code == 400
    assert (
        "missing key 'x' for model 'clf' of version 2 (expected float32 of shape [None, 4])"
        in r.json()["message"]
    )
    r = http.post("/tf-errors", json={"model": "clf", "input": {"x": [[1, 2, 3]]}})
    assert (
        r.status_code == 400 and "expected float32 of shape [None, 4], got a value of shape [1, 3]" in r.text
    )
    r = http.post("/tf-errors", json={"model": "clf", "input": {"x": [["a", "b", "c", "d"]]}})
    assert r.status_code == 400 and "key 'x' expected float32" in r.json()["message"]
    r = http.post("/tf-errors", json={"model": "nope", "input": {}})
    assert r.status_code == 404 and "clf, iris, text" in r.json()["message"]
    r = http.post("/tf-errors", json={"model": "clf", "version": "9", "input": {"x": X}})
    assert r.status_code == 404 and r.json()["error"] == "model_version_not_found"


def test_signature_key_per_model_and_async_handler(
    tmp_path: Path, saved_models: Path, deploy: Any, http: httpx.Client
) -> None:
    write_handler(tmp_path, HANDLER)
    write_handler(tmp_path, ASYNC_HANDLER, name="async_handler.py")
    models = {
        "paths": [
            {"name": "triple", "path": str(saved_models / "multi"), "signature_key": "triple"},
            {"name": "double", "path": str(saved_models / "multi")},
            {"name": "ambiguous", "path": str(saved_models / "multi")},
        ],
        "signature_key": "double",
    }
    deploy(
        tmp_path,
        [
            tf_api("tf-signatures", models),
            tf_api("tf-async", {"path": str(saved_models / "iris")}, "async_handler.py"),
        ],
    )
    assert http.post("/tf-signatures", json={"model": "triple", "input": {"v": [1.0]}}).json() == {
        "out": [3.0]
    }
    assert http.post("/tf-signatures", json={"model": "double", "input": {"v": [1.0]}}).json() == {
        "out": [2.0]
    }
    iris = {"sepal_length": 1.0, "sepal_width": 1.0, "petal_length": 1.0, "petal_width": 1.0}
    assert http.post("/tf-async", json=iris).json() == {"class_ids": [0], "total": [4.0]}


def test_a_truncated_saved_model_fails_with_its_reason_and_the_next_version_swaps_in_live(
    tf_project: Path, saved_models: Path, deploy: Any, http: httpx.Client
) -> None:
    deploy(tf_project, [tf_api("tf-swap", {"dir": "store", "poll_interval": 0.5, "settle_time": 0.5})])
    assert http.post("/tf-swap", json={"model": "clf", "input": {"x": X}}).json()["scores"][1] == 2.0
    store = tf_project / "store" / "clf"

    # an upload cut short (a full disk, a killed copy): saved_model.pb truncated, the rest whole
    broken = tf_project / "broken"
    tf_models.save_classifier(broken, scale=3.0)
    graph = broken / "saved_model.pb"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    broken.rename(store / "3")
    deadline = time.time() + 60
    while True:
        r = http.post("/tf-swap", json={"model": "clf", "input": {"x": X}})
        assert r.status_code == 200 and r.headers["x-cortex-model-version"] == "clf=2", r.text
        details = http.get("/tf-swap/info").json()["model_metadata"]["clf"]["details"]
        if details.get("3", {}).get("state") == "failed":
            break
        assert time.time() < deadline, details
        time.sleep(0.2)
    assert "saved_model.pb" in details["3"]["reason"] or "SavedModel" in details["3"]["reason"], details
    assert details["2"]["state"] == "available"

    # a new version after it (the broken one left in place): it swaps in without a failed request
    tmp = tf_project / "staging"
    tf_models.save_classifier(tmp, scale=4.0)
    tmp.rename(store / "4")  # appears at once, whole
    deadline = time.time() + 60
    while time.time() < deadline:
        r = http.post("/tf-swap", json={"model": "clf", "input": {"x": X}})
        assert r.status_code == 200
        if r.headers["x-cortex-model-version"] == "clf=4":
            break
        time.sleep(0.2)
    assert r.json()["scores"][1] == 4.0
