"""Requests naming their model go to the replica that already holds it, on both ingress paths."""

from __future__ import annotations

import collections
import time
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

    def handle_post(self, payload, query_params):
        name = payload.get("model") or query_params.get("model")
        return {"model": self.client.get_model(name), "pid": os.getpid()}
"""


def spec(name: str, **networking: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "multi_model_reloading": {"dir": "models", "cache_size": 4, "disk_cache_size": 4},
        },
        "autoscaling": {"min_replicas": 2, "max_replicas": 2},
        **({"networking": networking} if networking else {}),
    }


def held_by_replica(app: str) -> list[set[str]]:
    """What each replica holds in memory, asked of every replica (not of whichever answers)."""
    from ray import serve

    handle = serve.get_deployment_handle(app, app)
    infos = handle.broadcast("info").results()
    return [{k.split(":")[0] for k in info["cache"]["in_memory"]} for info in infos]


@pytest.mark.parametrize("ingress", ["fast", "proxy"])
def test_requests_with_the_model_header_stick_to_one_replica(
    tmp_path: Path, deploy: Any, serve_url: str, proxy_url: str, ingress: str
) -> None:
    write_handler(tmp_path, HANDLER)
    write_files(tmp_path / "models", {"a/1/model.txt": "a", "b/1/model.txt": "b"})
    deploy(tmp_path, [spec(f"affinity-{ingress}")], ingress=ingress)
    with httpx.Client(base_url=serve_url if ingress == "fast" else proxy_url, timeout=60) as http:
        url = f"/affinity-{ingress}"
        plain = {http.post(url, json={"model": "a"}).json()["pid"] for _ in range(30)}
        assert len(plain) == 2  # without the header: both replicas answer
        http.post(url, json={"model": "a"}, headers={"serve_multiplexed_model_id": "a"})
        time.sleep(1.0)  # (proxy path: the replica tells Serve's router what it holds every 0.1 s)
        pinned = {
            http.post(url, json={"model": "a"}, headers={"serve-multiplexed-model-id": "a"}).json()["pid"]
            for _ in range(30)
        }
        assert len(pinned) == 1


@pytest.mark.parametrize(("ingress", "where"), [("fast", "query"), ("fast", "json"), ("proxy", "query")])
def test_requests_naming_a_model_load_it_on_one_replica_only(
    tmp_path: Path, deploy: Any, serve_url: str, proxy_url: str, ingress: str, where: str
) -> None:
    """The model named only where the spec says (no header): with room in the replicas'
    caches, each model is loaded by exactly one replica, and its requests go there."""
    models = [f"m{i}" for i in range(6)]
    write_handler(tmp_path, HANDLER)
    write_files(tmp_path / "models", {f"{m}/1/model.txt": m for m in models})
    name = f"routed-{ingress}-{where}"
    routing = {"query": "model"} if where == "query" else {"json": "model"}
    deploy(tmp_path, [spec(name, model_routing=routing)], ingress=ingress)
    http = httpx.Client(base_url=serve_url if ingress == "fast" else proxy_url, timeout=60)
    answered: dict[str, set[int]] = collections.defaultdict(set)
    for round_ in range(6):
        for m in models:
            if where == "query":
                r = http.post(f"/{name}", params={"model": m}, json={})
            else:
                r = http.post(f"/{name}", json={"model": m})
            assert r.status_code == 200 and r.json()["model"] == m
            if round_ == 0 and ingress == "proxy":
                time.sleep(0.3)  # the replica tells Serve's router what it holds (every 0.1 s)
            else:
                answered[m].add(r.json()["pid"])
    assert all(len(pids) == 1 for pids in answered.values()), answered
    assert len({next(iter(p)) for p in answered.values()}) == 2  # both replicas got models
    held = held_by_replica(name)
    assert sorted(m for h in held for m in h) == models  # each model in exactly one replica
