"""Processes of the fast path killed under traffic (the short versions of ``benchmarks/faults.py``'s
``replica-killed`` and ``haproxy-killed`` scenarios): a crash costs only what the dead process held,
and what replaces it serves.

Each client below is a :class:`Traffic` thread: one request at a time, without pause.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.project import write_files, write_handler
from tests.support.traffic import Answer, Traffic

pytestmark = pytest.mark.ray

CLIENTS = 3

HANDLER = """
import os

class Handler:
    def __init__(self, model_client):
        self.client = model_client

    def load_model(self, model_path):
        return open(os.path.join(model_path, "model.txt")).read()

    def handle_post(self, payload):
        return {"content": self.client.get_model(payload["model"]), "pid": os.getpid()}
"""


def spec(name: str, replicas: int) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": "handler.py", "multi_model_reloading": {"dir": "models"}},
        "autoscaling": {"min_replicas": replicas, "max_replicas": replicas},
    }


def routed(api: str) -> dict[str, str]:
    """The replicas the balancer routes ``api`` to now."""
    import ray

    from cortex_ray.ingress.control import get_ingress

    status = ray.get(get_ingress().status.remote(), timeout=30)
    return dict(status["apis"].get(api, {}).get("replicas", {}))


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.1)


def served(a: Answer) -> bool:
    return a.status == 200 and a.body["content"] == "a1"


def test_a_killed_replica_fails_only_the_requests_it_held_and_its_replacement_serves(
    tmp_path: Path, deploy: Any, serve_url: str
) -> None:
    write_handler(tmp_path, HANDLER)
    write_files(tmp_path / "models", {"a/1/model.txt": "a1"})
    deploy(tmp_path, [spec("crash-replica", 2)])
    wait(lambda: len(routed("crash-replica")) == 2, 60, "both replicas routed")
    url = f"{serve_url}/crash-replica"
    with ExitStack() as stack:
        clients = [stack.enter_context(Traffic(url, [{"model": "a"}], pause=0)) for _ in range(CLIENTS)]
        answers = lambda: [a for c in clients for a in c.answers]  # noqa: E731
        wait(lambda: len({a.body["pid"] for a in answers() if served(a)}) == 2, 60, "both replicas answer")
        victim, survivor = sorted({a.body["pid"] for a in answers() if served(a)})
        before = set(routed("crash-replica"))

        os.kill(victim, signal.SIGKILL)  # a crash: the OOM killer, a segfault in a framework
        killed = time.time()
        # the other replica serves on at once; Serve replaces the dead one, the balancer routes it
        clients[0].wait_for(lambda a: served(a) and a.body["pid"] == survivor, timeout=10)
        wait(lambda: len(set(routed("crash-replica")) - before) == 1, 90, "the replacement routed")
        new = clients[0].wait_for(lambda a: served(a) and a.body["pid"] not in (victim, survivor), 60)
        time.sleep(0.5)  # (traffic on both replicas after it)

    everything = answers()
    failed = [a for a in everything if a.status != 200]
    # what the dead replica held: the one request each client had there (a POST a replica may have
    # run is never sent to another), and at most one more each on a connection it had just closed.
    # Each is a JSON 502, or, on a kept-alive client connection, HAProxy's close without an answer
    # (what tells an HTTP client that nothing was answered)
    assert len(failed) <= 2 * CLIENTS, failed
    for a in failed:
        assert (a.status == 502 and a.body["error"] == "bad_gateway") or (
            a.status == 0 and "without sending a response" in a.body
        ), a
        assert killed - 0.5 <= a.at <= killed + 5, (a, killed)
    assert all(a.body["content"] == "a1" for a in everything if a.status == 200)
    # the replacement loaded the model on its first request, and answers beside the survivor
    after = {a.body["pid"] for a in everything if a.status == 200 and a.at > new}
    assert survivor in after and len(after) == 2  # (the other: the replacement; the victim is dead)


def haproxy_pids(port: int) -> set[int]:
    """The HAProxy processes of the balancer listening on ``port``: its master and workers."""
    import psutil

    listeners = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    }
    pids = set(listeners)
    for pid in listeners:
        parent = psutil.Process(pid).parent()
        if parent is not None and "haproxy" in parent.name():
            pids.add(parent.pid)
    return pids


def test_a_killed_haproxy_is_started_again_with_its_routes(
    tmp_path: Path, deploy: Any, serve_url: str, http: httpx.Client
) -> None:
    write_handler(tmp_path, HANDLER)
    write_files(tmp_path / "models", {"a/1/model.txt": "a1"})
    deploy(tmp_path, [spec("crash-haproxy", 1)])
    port = int(serve_url.rsplit(":", 1)[1])
    old = haproxy_pids(port)
    assert old, "no process listens on the fast ingress's port"
    with ExitStack() as stack:
        clients = [
            stack.enter_context(Traffic(f"{serve_url}/crash-haproxy", [{"model": "a"}], pause=0.01))
            for _ in range(CLIENTS)
        ]
        clients[0].wait_for(served)
        killed = time.time()
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        # (an answer sent after the kill: one sent before may be recorded after it)
        back = clients[0].wait_for(lambda a: served(a) and a.sent > killed, timeout=30)
        time.sleep(1.0)  # (steady after it)

    assert haproxy_pids(port).isdisjoint(old)
    everything = [a for c in clients for a in c.answers]
    failed = [a for a in everything if a.status != 200]
    # what HAProxy held when it died, and while none listens, refused connections: no answer at
    # all, nothing half done; once one answers, it routes what the dead one did: nothing fails
    # after that
    assert all(a.status == 0 and a.at >= killed and a.sent < back for a in failed), failed[-3:]
    assert all(a.status == 200 for a in everything if a.sent > back)
    assert back - killed < 10
    assert http.post("/crash-haproxy", json={"model": "a"}).json()["content"] == "a1"
