"""Server-side batching over real HTTP on a real local Ray Serve: concurrent requests reach
``handle_post`` as lists, each client gets its own answer, on the fast path and Serve's proxy."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.project import write_handler

pytestmark = pytest.mark.ray

HANDLER = """
import time

class Handler:
    def __init__(self, config):
        self.sizes = []

    def handle_post(self, payload, query_params):
        self.sizes.append(len(payload))
        time.sleep(0.05)  # (a model whose cost is per batch)
        pairs = zip(payload, query_params)
        return [{"double": p["x"] * 2, "tag": q.get("tag"), "batch": len(payload)} for p, q in pairs]

    def handle_get(self):
        return {"sizes": self.sizes}
"""


def api(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "threads_per_process": 2,
            "server_side_batching": {"max_batch_size": 4, "batch_interval": "100ms"},
        },
    }


@pytest.mark.parametrize("ingress", ["fast", "proxy"])
def test_concurrent_requests_are_answered_from_batches_each_with_its_own_result(
    tmp_path: Path, deploy: Any, serve_url: str, proxy_url: str, ingress: str
) -> None:
    write_handler(tmp_path, HANDLER)
    name = f"batched-{ingress}"
    deploy(tmp_path, [api(name)], **({"ingress": "proxy"} if ingress == "proxy" else {}))
    base = serve_url if ingress == "fast" else proxy_url
    with httpx.Client(base_url=base, timeout=60) as client:

        def ask(i: int) -> dict[str, Any]:
            answer = client.post(f"/{name}", json={"x": i}, params={"tag": f"t{i}"})
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(ask, range(16)))
        assert [(a["double"], a["tag"]) for a in answers] == [(i * 2, f"t{i}") for i in range(16)]
        sizes = client.get(f"/{name}").json()["sizes"]
    assert sum(sizes) == 16 and max(sizes) > 1 and max(sizes) <= 4, sizes
