"""A Python API's v2 infer route (``handle_infer``) over real HTTP on a real local Ray Serve,
with models loaded by the handler's ``load_model`` and a live reload."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.project import write_handler

pytestmark = pytest.mark.ray

HANDLER = """
import json
import numpy as np

class Handler:
    def __init__(self, config, model_client):
        self.client = model_client

    def load_model(self, model_path):
        with open(f"{model_path}/coef.json") as f:
            return json.load(f)["coef"]

    def handle_infer(self, inputs, model_name, model_version):
        coef = self.client.get_model(model_name, model_version)
        return {"y": np.asarray(inputs["x"], dtype=np.float64) * coef}

    def infer_signature(self, model_name, model_version):
        return {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
                "outputs": [{"name": "y", "datatype": "FP64", "shape": [-1]}]}

    def handle_post(self, payload):
        return {"handler": "post"}
"""


def write_model(root: Path, name: str, version: int, coef: float) -> None:
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "coef.json").write_text(f'{{"coef": {coef}}}')


def test_handle_infer_serves_the_v2_infer_route(tmp_path: Path, deploy: Any, serve_url: str) -> None:
    write_handler(tmp_path, HANDLER)
    models = tmp_path / "models"
    write_model(models, "lin", 1, 2.0)
    spec = {
        "name": "py-v2",
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "multi_model_reloading": {"dir": str(models), "poll_interval": 0.5, "settle_time": 0.5},
        },
    }
    deploy(tmp_path, [spec])
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0, 2.5]}]}
    with httpx.Client(base_url=f"{serve_url}/py-v2", timeout=60) as http:
        r = http.post("/v2/models/lin/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == [{"name": "y", "datatype": "FP64", "shape": [2], "data": [2.0, 5.0]}]
        assert r.json()["model_version"] == "1" and r.headers["x-cortex-model-version"] == "lin=1"
        assert http.post("", json={}).json() == {"handler": "post"}  # the handler's own route
        meta = http.get("/v2/models/lin").json()
        assert meta["platform"] == "python" and meta["inputs"] == [
            {"name": "x", "datatype": "FP64", "shape": [-1]}
        ]
        assert http.post("/v2/models/other/infer", json=body).status_code == 404
        write_model(models, "lin", 2, 10.0)  # a new version, live
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = http.post("/v2/models/lin/infer", json=body)
            assert r.status_code == 200, r.text
            if r.json()["model_version"] == "2":
                break
            time.sleep(0.2)
        assert r.json()["outputs"][0]["data"] == [10.0, 25.0]
        assert http.post("/v2/models/lin/versions/1/infer", json=body).json()["outputs"][0]["data"] == [
            2.0,
            5.0,
        ]
