"""The fast path's HAProxy: its configuration, and real routing to real servers (no Ray)."""

from __future__ import annotations

import collections
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cortex_ray.endpoint import Incoming, Outgoing, json_outgoing
from cortex_ray.ingress.balancer import Backend, Balancer, Server, haproxy_binary, render
from cortex_ray.ingress.server import FastServer
from cortex_ray.replica.loop import CoreLoop
from tests.support.s3_server import free_port


def check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "check.cfg"
    path.write_text(config)
    return subprocess.run([haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True)


def test_every_kind_of_model_routing_renders_a_valid_configuration(tmp_path: Path) -> None:
    servers = (Server("r1", "127.0.0.1", 30001), Server("r2", "127.0.0.1", 30002))
    backends = [
        Backend("by-query", "/q", ("query", "model"), servers),
        Backend("by-header", "/h", ("header", "x-model"), servers),
        Backend("by-json", "/j", ("json", "model.name"), servers),
        Backend("by-path", "/p/deep", ("path", "0"), servers),
        Backend("plain", "/", None, ()),
    ]
    config = render(backends, "127.0.0.1", 18999, str(tmp_path / "admin.sock"))
    result = check(config, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "url_param(model)" in config and "req.hdr(x-model)" in config
    assert "json_query('$.model.name')" in config and "path,field(4,/)" in config
    assert config.index("use_backend api_by-path") < config.index("use_backend api_plain")  # longest first


class Replica:
    """A fast-path server answering with its own name."""

    def __init__(self, loop: CoreLoop, name: str, endpoint: str, port: int = 0) -> None:
        async def app(incoming: Incoming) -> Outgoing:
            return json_outgoing({"replica": name, "path": incoming.path})

        self.name = name
        self.server = FastServer(app, endpoint)
        loop.submit(self.server.start("127.0.0.1", port)).result(5)

    @property
    def entry(self) -> Server:
        return Server(self.name, "127.0.0.1", self.server.port)


@pytest.fixture
def loop() -> Iterator[CoreLoop]:
    core = CoreLoop("test-balancer")
    yield core
    core.stop()


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Balancer]:
    b = Balancer("127.0.0.1", free_port(), tmp_path / "haproxy")
    yield b
    b.stop()


def test_requests_naming_a_model_go_to_one_replica_and_reloads_drop_nothing(
    loop: CoreLoop, balancer: Balancer
) -> None:
    replicas = [Replica(loop, f"r{i}", "/api") for i in range(3)]
    balancer.apply([Backend("api", "/api", ("query", "model"), tuple(r.entry for r in replicas))])
    url = f"http://127.0.0.1:{balancer.port}"
    with httpx.Client(base_url=url) as client:
        owner = {m: client.post(f"/api?model={m}").json()["replica"] for m in "abcdefghij"}
        assert len(set(owner.values())) > 1  # the models spread over the replicas
        for m in "abcdefghij":  # ...and each always reaches the same one
            assert {client.post(f"/api?model={m}").json()["replica"] for _ in range(5)} == {owner[m]}
        unnamed = collections.Counter(client.post("/api").json()["replica"] for _ in range(30))
        assert len(unnamed) == 3  # requests naming no model are spread
        assert client.get("/-/healthz").text == "ok"
        r = client.get("/nowhere")
        assert r.status_code == 404 and r.json() == {
            "error": "not_found",
            "message": "Path '/nowhere' not found",
        }
        # a replica leaves: the balancer reloads, and every request still succeeds
        balancer.apply([Backend("api", "/api", ("query", "model"), (replicas[0].entry, replicas[1].entry))])
        answers = [client.post(f"/api?model={m}") for m in "abcdefghij" * 3]
        assert all(a.status_code == 200 for a in answers)
        assert {a.json()["replica"] for a in answers} <= {"r0", "r1"}
    assert balancer.reloads == 0 and balancer.runtime_changes == 1  # a server left without a reload


def test_a_busy_replica_spills_a_hot_model_to_another(loop: CoreLoop, balancer: Balancer) -> None:
    """Bounded-load hashing: one model's requests go to one replica until it is loaded well
    above the average; then the next replica on the ring takes the excess."""
    import threading

    gate = threading.Event()

    async def slow(incoming: Incoming) -> Outgoing:
        import asyncio

        await asyncio.to_thread(gate.wait, 10)
        return json_outgoing({"replica": incoming.path})

    servers = []
    for _ in range(2):
        server = FastServer(slow, "/api")
        loop.submit(server.start("127.0.0.1")).result(5)
        servers.append(server)
    balancer.apply(
        [
            Backend(
                "api",
                "/api",
                ("query", "model"),
                tuple(Server(f"r{i}", "127.0.0.1", s.port) for i, s in enumerate(servers)),
            )
        ]
    )
    url = f"http://127.0.0.1:{balancer.port}/api?model=hot"
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(httpx.post(url, timeout=20).status_code))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for _ in range(200):
        if sum(s.in_flight for s in servers) == 8:
            break
        threading.Event().wait(0.02)
    in_flight = [s.in_flight for s in servers]
    gate.set()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert min(in_flight) > 0, in_flight  # both replicas took some of the hot model's requests


@pytest.mark.parametrize("endpoint", ["/api", "/"])
def test_the_protocols_routes_go_by_the_model_their_path_names(
    loop: CoreLoop, balancer: Balancer, endpoint: str
) -> None:
    replicas = [Replica(loop, f"r{i}", endpoint) for i in range(3)]
    # (the API's own routing, by query, applies to its other requests)
    balancer.apply([Backend("api", endpoint, ("query", "model"), tuple(r.entry for r in replicas))])
    base = f"http://127.0.0.1:{balancer.port}{endpoint.rstrip('/')}"
    with httpx.Client(base_url=base) as client:

        def owners(path: str) -> set[str]:
            return {client.post(path).json()["replica"] for _ in range(4)}

        owner = {}
        for m in "abcdefghij":
            (owner[m],) = owners(f"/v2/models/{m}/infer")
            # v2 with a version, v1's predict and status, and the API's own query: the same replica
            assert owners(f"/v2/models/{m}/versions/3/infer") == {owner[m]}
            assert owners(f"/v1/models/{m}:predict") == {owner[m]}
            assert owners(f"/v1/models/{m}/versions/2:predict") == {owner[m]}
            assert owners(f"/?model={m}") == {owner[m]}
        assert len(set(owner.values())) > 1
        assert len({client.post("/v2/health/ready").json()["replica"] for _ in range(30)}) == 3


class GrpcReplica(Replica):
    """A fast-path server (its health checks) and a gRPC server whose rpc ``/pkg.Svc/Who`` answers
    the replica's name."""

    def __init__(self, loop: CoreLoop, name: str, endpoint: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import grpc

        super().__init__(loop, name, endpoint)
        handler = grpc.unary_unary_rpc_method_handler(lambda request, context: name.encode())
        self.grpc = grpc.server(ThreadPoolExecutor(2))
        self.grpc.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("pkg.Svc", {"Who": handler}),)
        )
        self.grpc_port = self.grpc.add_insecure_port("127.0.0.1:0")
        self.grpc.start()

    @property
    def entry(self) -> Server:
        return Server(self.name, "127.0.0.1", self.server.port, self.server.port, self.grpc_port)


def test_grpc_calls_go_by_their_service_to_the_replicas_grpc_ports(loop: CoreLoop, tmp_path: Path) -> None:
    import time

    import grpc

    balancer = Balancer("127.0.0.1", free_port(), tmp_path / "haproxy", grpc_port=free_port())
    replicas = [GrpcReplica(loop, f"g{i}", "/svc") for i in range(2)]
    try:
        balancer.apply([Backend("svc", "/svc", None, (replicas[0].entry,), grpc_service="pkg.Svc")])
        assert check(balancer.haproxy.config.read_text(), tmp_path).returncode == 0
        with grpc.insecure_channel(f"127.0.0.1:{balancer.grpc_port}") as channel:
            who = channel.unary_unary("/pkg.Svc/Who")
            assert who(b"", timeout=10) == b"g0"
            with pytest.raises(grpc.RpcError) as info:  # a service no API serves
                channel.unary_unary("/other.Svc/Who")(b"", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert info.value.details() == "no API serves this service here"
            # a second replica joins through HAProxy's runtime API (no reload), HTTP/2 to it too
            balancer.apply(
                [Backend("svc", "/svc", None, tuple(r.entry for r in replicas), grpc_service="pkg.Svc")]
            )
            seen: set[bytes] = set()
            deadline = time.monotonic() + 20
            while seen != {b"g0", b"g1"} and time.monotonic() < deadline:
                seen.add(who(b"", timeout=10))
            assert seen == {b"g0", b"g1"}
            assert balancer.reloads == 0 and balancer.runtime_changes >= 1
            # the HTTP side of the same API is untouched
            assert httpx.post(f"http://127.0.0.1:{balancer.port}/svc").status_code == 200
    finally:
        balancer.stop()
        for r in replicas:
            r.grpc.stop(0)


def test_grpc_calls_naming_a_model_in_metadata_go_to_one_replica(loop: CoreLoop, tmp_path: Path) -> None:
    import grpc

    balancer = Balancer("127.0.0.1", free_port(), tmp_path / "haproxy", grpc_port=free_port())
    replicas = [GrpcReplica(loop, f"g{i}", "/svc") for i in range(3)]
    try:
        entries = tuple(r.entry for r in replicas)
        balancer.apply([Backend("svc", "/svc", ("header", "x-model"), entries, grpc_service="pkg.Svc")])
        with grpc.insecure_channel(f"127.0.0.1:{balancer.grpc_port}") as channel:
            who = channel.unary_unary("/pkg.Svc/Who")
            owner = {m: who(b"", metadata=[("x-model", m)], timeout=10) for m in "abcdefghij"}
            assert len(set(owner.values())) > 1  # the models spread over the replicas
            for m in "abcdefghij":  # ...and each always reaches the same one
                assert {who(b"", metadata=[("x-model", m)], timeout=10) for _ in range(5)} == {owner[m]}
    finally:
        balancer.stop()
        for r in replicas:
            r.grpc.stop(0)
