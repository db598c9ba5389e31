"""Requests naming their model go to the replica that already holds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.project import write_files, write_handler

pytestmark = pytest.mark.ray

HANDLER = """
import os

class Handler:
    def __init__(self, model_client):
        self.client = model_client

    def load_model(self, model_path):
        return open(os.path.join(model_path, "model.txt")).read()

    def handle_post(self, payload):
        return {"model": self.client.get_model(payload["model"]), "pid": os.getpid()}
"""


def test_requests_with_the_model_header_stick_to_one_replica(
    tmp_path: Path, deploy: Any, http: httpx.Client
) -> None:
    write_handler(tmp_path, HANDLER)
    write_files(tmp_path / "models", {"a/1/model.txt": "a", "b/1/model.txt": "b"})
    spec = {
        "name": "affinity",
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": "handler.py", "multi_model_reloading": {"dir": "models"}},
        "autoscaling": {"min_replicas": 2, "max_replicas": 2},
    }
    deploy(tmp_path, [spec])
    plain = {http.post("/affinity", json={"model": "a"}).json()["pid"] for _ in range(30)}
    assert len(plain) == 2  # without the header: both replicas answer
    http.post("/affinity", json={"model": "a"}, headers={"serve_multiplexed_model_id": "a"})
    import time

    time.sleep(1.0)  # the replica tells Serve's router what it holds (every 0.1 s)
    pinned = {
        http.post("/affinity", json={"model": "a"}, headers={"serve-multiplexed-model-id": "a"}).json()["pid"]
        for _ in range(30)
    }
    assert len(pinned) == 1
