"""The fast path's HTTP server, on a real socket on 127.0.0.1 (no Ray)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cortex_ray.endpoint import Incoming, Outgoing, json_outgoing
from cortex_ray.ingress.server import FastServer, Limits
from cortex_ray.replica.loop import CoreLoop

GATE = threading.Event()


async def app(incoming: Incoming) -> Outgoing:
    if incoming.path == "/slow":
        await asyncio.to_thread(GATE.wait, 10)
    if incoming.path == "/stream":

        async def chunks() -> Any:
            for i in range(3):
                yield f"part{i};".encode()

        return Outgoing(200, [(b"content-type", b"text/plain")], stream=chunks())
    return json_outgoing(
        {
            "method": incoming.method,
            "path": incoming.path,
            "query": incoming.query.decode(),
            "body": incoming.body.decode("latin-1"),
            "content_type": incoming.header(b"content-type"),
        }
    )


@pytest.fixture
def served() -> Iterator[tuple[str, FastServer]]:
    loop = CoreLoop("test-fast-server")
    server = FastServer(app, "/api", limit=8)
    loop.submit(server.start("127.0.0.1")).result(5)
    GATE.clear()
    yield f"http://127.0.0.1:{server.port}", server
    GATE.set()
    loop.submit(server.drain(1)).result(5)
    loop.stop()


def test_requests_under_the_endpoint_reach_the_app(served: tuple[str, FastServer]) -> None:
    url, _ = served
    with httpx.Client(base_url=url) as client:
        r = client.post("/api?model=iris&x=1", json={"a": 1})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json() == {
            "method": "POST",
            "path": "",
            "query": "model=iris&x=1",
            "body": '{"a":1}',
            "content_type": "application/json",
        }
        assert client.get("/api/info").json()["path"] == "/info"
        for _ in range(20):  # one keep-alive connection
            assert client.put("/api/x", content=b"y").json()["body"] == "y"


def test_outside_the_endpoint_health_and_404(served: tuple[str, FastServer]) -> None:
    url, server = served
    with httpx.Client(base_url=url) as client:
        assert client.get("/-/healthz").text == "ok"
        r = client.get("/apix")
        assert r.status_code == 404 and r.json()["message"] == "Path '/apix' not found"
    server.draining = True
    with httpx.Client(base_url=url) as client:
        assert client.get("/-/healthz").status_code == 503


def _raw(port: int, data: bytes, wait_for: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1 ") < wait_for:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_pipelined_requests_are_answered_in_order(served: tuple[str, FastServer]) -> None:
    _, server = served
    requests = b"".join(
        b"POST /api/%d HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n%d" % (i, i) for i in range(5)
    )
    answer = _raw(server.port, requests, 5)
    bodies = [
        json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])
        for part in answer.split(b"HTTP/1.1 ")[1:]
    ]
    assert [b["path"] for b in bodies] == [f"/{i}" for i in range(5)]


def test_chunked_bodies_expect_continue_and_streamed_answers(served: tuple[str, FastServer]) -> None:
    url, server = served
    chunked = (
        b"POST /api HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert b'"body": "abcde"' in _raw(server.port, chunked, 1)
    expect = b"POST /api HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\nok"
    answer = _raw(server.port, expect, 2)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    with httpx.Client(base_url=url) as client:
        r = client.get("/api/stream")
        assert r.text == "part0;part1;part2;" and r.headers["transfer-encoding"] == "chunked"


def test_an_http11_request_needs_exactly_one_host(served: tuple[str, FastServer]) -> None:
    _, server = served
    no_host = _raw(server.port, b"GET /api HTTP/1.1\r\n\r\n", 1)
    assert no_host.startswith(b"HTTP/1.1 400") and b"exactly one Host header" in no_host
    two = _raw(server.port, b"GET /api HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", 1)
    assert two.startswith(b"HTTP/1.1 400")
    assert _raw(server.port, b"GET /api HTTP/1.0\r\n\r\n", 1).startswith(b"HTTP/1.1 200")  # (1.0: optional)
    assert _raw(server.port, b"GET /api HTTP/1.1\r\nHost: a\r\n\r\n", 1).startswith(b"HTTP/1.1 200")
    assert _raw(server.port, b"GET /-/healthz HTTP/1.1\r\n\r\n", 1).startswith(b"HTTP/1.1 200")


def test_malformed_requests_get_a_400_and_big_bodies_a_413(served: tuple[str, FastServer]) -> None:
    url, server = served
    assert _raw(server.port, b"GARBAGE\r\n\r\n", 1).startswith(b"HTTP/1.1 400")
    server.limits = Limits(max_body=10)
    with httpx.Client(base_url=url) as client:
        r = client.post("/api", content=b"x" * 100)
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_above_the_concurrency_limit_requests_get_a_503(served: tuple[str, FastServer]) -> None:
    url, server = served

    def slow() -> int:
        return httpx.post(f"{url}/api/slow", timeout=10).status_code

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(slow())) for _ in range(8)]
    for t in threads:
        t.start()
    for _ in range(200):
        if server.in_flight == 8:
            break
        threading.Event().wait(0.01)
    r = httpx.post(f"{url}/api", timeout=5)
    assert r.status_code == 503 and "max_replica_concurrency (8)" in r.json()["message"]
    assert httpx.get(f"{url}/-/healthz", timeout=5).status_code == 200  # full, not down
    GATE.set()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert server.in_flight == 0
