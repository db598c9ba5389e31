"""What the ingress keeps across a restart (its routes, its gRPC port), with a dict for Ray's
key-value store, and a real HAProxy: a restarted registry routes at once to the replicas it knew,
a new one starts empty (no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest

from cortex_ray.ingress.kept import Kept, KeptRoute, decode_routes, encode_routes
from cortex_ray.ingress.registry import STALE, Registry
from cortex_ray.replica.loop import CoreLoop
from tests.support.s3_server import free_port
from tests.unit.ingress.test_balancer import Replica


class DictStore:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)


def test_routes_read_back_as_they_were_kept_and_garbage_reads_as_none() -> None:
    routes = {
        "a": KeptRoute("/a", ("query", "model"), 1024, None, {"r1": ("127.0.0.1", 5001, 5002, 0)}),
        "g": KeptRoute("/g", None, 2048, "g.Svc", {"r2": ("127.0.0.1", 6001, 6002, 6003)}),
    }
    assert decode_routes(encode_routes(routes, {"gone"})) == (routes, {"gone"})
    for garbage in (None, b"", b"{", b'{"apis": 3}', b'{"apis": {"a": {}}, "retired": []}', b"[1]"):
        assert decode_routes(garbage) == ({}, set())
    kept = Kept(DictStore())
    assert kept.grpc_port() is None and kept.routes() == ({}, set())
    kept.keep_grpc_port(9100)
    kept.keep_routes(routes, set())
    assert kept.grpc_port() == 9100 and kept.routes()[0] == routes
    kept.forget()
    assert kept.grpc_port() is None and kept.routes() == ({}, set())


@pytest.fixture
def loop() -> Iterator[CoreLoop]:
    core = CoreLoop("test-kept")
    yield core
    core.stop()


def test_a_restarted_registry_routes_at_once_to_the_replicas_it_knew(loop: CoreLoop) -> None:
    store, port = DictStore(), free_port()
    replica = Replica(loop, "r1", "/api")

    async def first_life() -> Registry:
        registry = Registry("127.0.0.1", port, store=store, restarted=False)
        await registry.register("api", "/api", None, "r1", "127.0.0.1", replica.server.port)
        for _ in range(500):  # (the registry's loop applies, then keeps: up to 5 s)
            if store.data:
                break
            await asyncio.sleep(0.01)
        assert store.data, "the routes were not kept"
        return registry

    first = asyncio.run(first_life())
    url = f"http://127.0.0.1:{port}/api"
    assert httpx.post(url).json()["replica"] == "r1"
    first.balancer.stop()  # the actor died (its HAProxy with it): what it kept stays

    again = Registry("127.0.0.1", port, store=store, restarted=True)
    try:
        assert httpx.post(url).json()["replica"] == "r1"  # before any heartbeat
        assert set(again.apis) == {"api"}
        # its replica never registers again (it died meanwhile): once stale, the API is gone too
        entry = again.apis["api"]
        entry.servers = {r: (*v[:4], v[4] - STALE - 1) for r, v in entry.servers.items()}
        again._expire()
        assert again.apis == {}
    finally:
        again.balancer.stop()

    new = Registry("127.0.0.1", port, store=store, restarted=False)  # a new ingress starts empty
    try:
        assert httpx.post(url).status_code == 404
    finally:
        asyncio.run(new.stop())
    assert store.data == {}  # stopped: nothing kept


def test_a_deleted_api_stays_deleted_across_a_restart(loop: CoreLoop) -> None:
    store, port = DictStore(), free_port()
    replica = Replica(loop, "r1", "/api")

    async def until_kept(registry: Registry, test: Callable[[], bool]) -> None:
        for _ in range(500):  # (the registry's loop applies, then keeps: up to 5 s)
            if test():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("not kept")

    async def first_life() -> Registry:
        registry = Registry("127.0.0.1", port, store=store, restarted=False)
        await registry.register("api", "/api", None, "r1", "127.0.0.1", replica.server.port)
        await until_kept(registry, lambda: "api" in Kept(store).routes()[0])
        await registry.remove_api("api")  # (applied and kept before it returns)
        assert Kept(store).routes() == ({}, {"r1"})
        return registry

    first = asyncio.run(first_life())
    first.balancer.stop()

    async def second_life() -> None:
        again = Registry("127.0.0.1", port, store=store, restarted=True)
        try:
            assert again.apis == {}
            await again.register("api", "/api", None, "r1", "127.0.0.1", replica.server.port)
            assert again.apis == {}  # a heartbeat of the deleted API's replica brings nothing back
            assert httpx.post(f"http://127.0.0.1:{port}/api").status_code == 404
        finally:
            await again.stop()

    asyncio.run(second_life())
