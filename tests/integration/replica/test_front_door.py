"""The front door on a real Ray: a slow model never takes its API offline, and above
``max_replica_concurrency`` a sync handler's API answers Cortex's JSON 503 at once, on both paths."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.project import write_handler

pytestmark = pytest.mark.ray

SLOW = """
import time

class Handler:
    def handle_post(self, payload):
        time.sleep(payload["seconds"])  # a sync model that takes its time
        return {"slept": payload["seconds"]}

    def handle_get(self):
        return {"ok": True}
"""


def _api(name: str, handler: str, **autoscaling: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": handler},
        "autoscaling": {"min_replicas": 1, "max_replicas": 1, **autoscaling},
    }


def test_a_handler_that_takes_seconds_never_takes_its_api_offline(
    tmp_path: Path, deploy: Any, serve_url: str
) -> None:
    """One replica, a handler sleeping 4 s, 2 requests at once (8 s busy: HAProxy would mark a
    replica whose health checks stall DOWN after 2 s), and another API probed every 250 ms:
    every answer 200, and HAProxy holds the replica UP throughout."""
    import ray

    from cortex_ray.ingress.control import get_ingress

    write_handler(tmp_path, SLOW, "slow.py")
    deploy(tmp_path, [_api("slow", "slow.py"), _api("probed", "slow.py")])
    ingress = get_ingress()
    states: list[str] = []
    probes: list[int] = []
    done = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=serve_url, timeout=30) as http:
            while not done.is_set():
                probes.append(http.get("/probed").status_code)
                states.extend(ray.get(ingress.replica_states.remote())["slow"].values())
                time.sleep(0.25)

    watcher = threading.Thread(target=watch)

    def slow() -> int:
        return httpx.post(f"{serve_url}/slow", json={"seconds": 4}, timeout=120).status_code

    watcher.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: slow(), range(2)))
    finally:
        done.set()
        watcher.join()
    assert answers == [200] * 2
    assert len(probes) > 12 and set(probes) == {200}
    assert states and set(states) == {"UP"}, sorted(set(states))


@pytest.mark.parametrize("path", ["fast", "proxy"])
def test_above_max_replica_concurrency_a_sync_handler_answers_503_at_once(
    tmp_path: Path, deploy: Any, serve_url: str, proxy_url: str, path: str
) -> None:
    write_handler(tmp_path, SLOW, "slow.py")
    name = f"capped-{path}"
    deploy(tmp_path, [_api(name, "slow.py", max_replica_concurrency=2)], ingress=path)
    base = serve_url if path == "fast" else proxy_url
    assert httpx.get(f"{base}/{name}", timeout=30).status_code == 200

    def call(_: int) -> tuple[int, float, dict[str, Any]]:
        started = time.monotonic()
        r = httpx.post(f"{base}/{name}", json={"seconds": 3}, timeout=60)
        try:
            body = r.json()
        except ValueError:  # not JSON: Serve's own 503, not the replica's (shown if it fails)
            body = {"not_json": r.text[:300]}
        return r.status_code, time.monotonic() - started, body

    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(call, range(5)))
    codes = sorted(code for code, _, _ in answers)
    assert codes == [200, 200, 503, 503, 503], answers
    refused = [(seconds, body) for code, seconds, body in answers if code == 503]
    assert all(body.get("error") == "too_many_requests" for _, body in refused), answers
    assert all(seconds < 2.5 for seconds, _ in refused)  # at once: not after a handler finished
