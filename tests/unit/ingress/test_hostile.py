"""Hostile and careless clients against the fast path, with raw sockets, on 127.0.0.1 (no Ray).

Each test talks to a replica's own server (``FastServer`` on a real socket) and, where the
balancer has a say, through HAProxy too (the ``Balancer`` cortex-ray runs, with the replica's
health responder as its check port). Answers are read with h11, a strict HTTP/1.1 parser.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest

from cortex_ray.endpoint import Incoming, Outgoing, json_outgoing
from cortex_ray.ingress.balancer import Backend, Balancer, Server
from cortex_ray.ingress.health import HealthResponder
from cortex_ray.ingress.server import FastServer, Limits
from cortex_ray.replica.loop import CoreLoop
from tests.support.s3_server import free_port


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool = True
    """Whether the body ended as HTTP says (a chunked body's last chunk came)."""

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One raw connection: bytes out, answers parsed by h11 (100 Continue included)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.informational: list[int] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answers(self, count: int, methods: list[str] | None = None) -> list[Answer]:
        """The next ``count`` answers (``methods``: what was asked, for HEAD's sake)."""
        out: list[Answer] = []
        methods = list(methods or [])
        current: Answer | None = None
        while len(out) < count:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = self.sock.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    data = b""
                if not data and current is not None:  # cut in the middle of the body
                    current.complete = False
                    out.append(current)
                    break
                self.h11.receive_data(data)
                if not data:
                    break
                continue
            if isinstance(event, h11.InformationalResponse):
                self.informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                headers = {k.decode(): v.decode() for k, v in event.headers}
                current = Answer(event.status_code, headers, b"")
            elif isinstance(event, h11.Data) and current is not None:
                current.body += event.data
            elif isinstance(event, h11.EndOfMessage) and current is not None:
                out.append(current)
                current = None
                if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
                    break
                self._next_cycle(methods)
            elif isinstance(event, h11.ConnectionClosed):
                break
        return out

    def _next_cycle(self, methods: list[str]) -> None:
        # h11 as a client must "send" each request to read the next answer: say it did
        method = methods.pop(0) if methods else "GET"
        if self.h11.our_state is h11.IDLE:
            self.h11.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            self.h11.send(h11.EndOfMessage())
        elif self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.h11.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            self.h11.send(h11.EndOfMessage())

    def start(self, method: str = "GET") -> None:
        """Tell h11 what the first request was (the bytes themselves go out with :meth:`send`)."""
        self.h11.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        self.h11.send(h11.EndOfMessage())

    def closed_within(self, seconds: float) -> bool:
        """Whether the server closes the connection within ``seconds`` (reading what comes)."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                if self.sock.recv(65536) == b"":
                    return True
            except TimeoutError:
                continue
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


def ask(port: int, data: bytes, method: str = "GET", count: int = 1) -> list[Answer]:
    client = Client(port)
    try:
        client.start(method)
        client.send(data)
        return client.answers(count, [method] * count)
    finally:
        client.close()


# --- the app and the servers --------------------------------------------------------------


@dataclass
class App:
    """What the tests serve: echo, a slow path, streams, a crash, and a record of what it saw."""

    seen: list[Incoming] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    streamed: list[int] = field(default_factory=list)
    stream_closed: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, incoming: Incoming) -> Outgoing:
        self.seen.append(incoming)
        if incoming.path == "/slow":
            await asyncio.to_thread(self.gate.wait, 30)
        if incoming.path == "/block":  # a sync handler holding the loop
            self.gate.wait(30)
        if incoming.path == "/exit":
            raise SystemExit(1)
        if incoming.path.startswith("/stream"):
            status = 204 if incoming.path == "/stream/empty" else 200
            return Outgoing(status, [(b"content-type", b"text/plain")], stream=self._stream(incoming.path))
        return json_outgoing(
            {
                "method": incoming.method,
                "path": incoming.path,
                "headers": sorted(k.decode().lower() for k, _ in incoming.headers),
                "size": len(incoming.body),
            }
        )

    async def _stream(self, path: str) -> Any:
        try:
            for i in range(100_000 if path == "/stream/long" else 3):
                self.streamed.append(i)
                if path == "/stream/broken" and i == 2:
                    raise RuntimeError("the model fell over mid-stream")
                if path == "/stream/exit" and i == 1:
                    raise SystemExit(2)  # what no server loop may die of
                yield b"x" * (64 * 1024 if path == "/stream/long" else 8)
        finally:
            self.stream_closed.set()


class Replica:
    def __init__(self, loop: CoreLoop, app: App, limits: Limits, limit: int | None = None) -> None:
        self.loop = loop
        self.server = FastServer(app, "/api", limit, limits, sweep_every=0.05)
        loop.submit(self.server.start("127.0.0.1")).result(5)
        self.health = HealthResponder(lambda: (loop.alive and not self.server.draining, "ok"))
        self.health.start("127.0.0.1")

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        self.health.stop()
        self.loop.submit(self.server.drain(0.1)).result(5)


SMALL = Limits(
    max_url=1024,
    max_head=4096,
    max_headers=20,
    max_body=10_000,
    max_buffered=40_000,
    max_pipeline=4,
    head_timeout=0.5,
    body_timeout=0.5,
    keepalive_timeout=0.5,
    send_timeout=1.0,
)


@pytest.fixture
def app() -> Iterator[App]:
    found = App()
    yield found
    found.gate.set()


@pytest.fixture
def replica(app: App) -> Iterator[Replica]:
    loop = CoreLoop("test-hostile")
    made = Replica(loop, app, SMALL, limit=4)
    yield made
    app.gate.set()
    made.stop()
    loop.stop()


@pytest.fixture
def balancer(tmp_path: Path, replica: Replica) -> Iterator[Balancer]:
    b = Balancer("127.0.0.1", free_port(), tmp_path / "haproxy")
    server = Server("r0", "127.0.0.1", replica.port, replica.health.port)
    b.apply([Backend("api", "/api", None, (server,), SMALL.max_body)])
    until(lambda: server_state(b) == "UP")
    yield b
    b.stop()


def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def server_state(balancer: Balancer) -> str:
    """What HAProxy's runtime API says of the one replica: UP, DOWN..."""
    lines = balancer.haproxy.command("show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "api_api" and row.get("svname") == "r_r0":
            return row["status"]
    return "absent"


def target_ports(request: pytest.FixtureRequest, replica: Replica) -> int:
    if request.param == "replica":
        return replica.port
    balancer: Balancer = request.getfixturevalue("balancer")
    return balancer.port


@pytest.fixture(params=["replica", "haproxy"])
def port(request: pytest.FixtureRequest, replica: Replica) -> int:
    return target_ports(request, replica)


# --- health: busy is not dead -------------------------------------------------------------


def test_a_blocked_loop_still_answers_health_and_stays_up(
    replica: Replica, balancer: Balancer, app: App
) -> None:
    blocked = Client(replica.port)
    blocked.start("POST")
    blocked.send(b"POST /api/block HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
    until(lambda: any(i.path == "/block" for i in app.seen))
    states = []
    for _ in range(5):  # two and a half seconds of checks every second (two failures: DOWN): never
        states.append(server_state(balancer))
        health = ask(replica.health.port, b"GET /-/healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert health[0].status == 200 and health[0].body == b"ok"
        time.sleep(0.5)
    app.gate.set()
    assert blocked.answers(1)[0].status == 200
    assert set(states) == {"UP"}, states


def test_health_is_never_the_apis_route_nor_refused_for_capacity(replica: Replica, app: App) -> None:
    root = FastServer(app, "/", None, SMALL)  # an API whose endpoint is "/"
    replica.loop.submit(root.start("127.0.0.1")).result(5)
    answer = ask(root.port, b"GET /-/healthz HTTP/1.1\r\nhost: x\r\n\r\n")[0]
    assert (answer.status, answer.body) == (200, b"ok") and app.seen == []
    replica.loop.submit(root.drain(0.2)).result(5)


# --- limits -------------------------------------------------------------------------------


def test_a_long_request_target_is_a_414_at_the_replica(replica: Replica) -> None:
    answer = ask(replica.port, b"GET /api/" + b"a" * 2000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")[0]
    assert answer.status == 414 and answer.json()["error"] == "uri_too_long"


@pytest.mark.parametrize(
    "head",
    [
        b"".join(b"x-h%d: v\r\n" % i for i in range(30)),  # too many fields
        b"x-big: " + b"v" * 5000 + b"\r\n",  # too many bytes
    ],
)
def test_a_large_head_is_refused_at_the_replica(replica: Replica, head: bytes, app: App) -> None:
    answer = ask(replica.port, b"GET /api HTTP/1.1\r\nhost: x\r\n" + head + b"\r\n")[0]
    assert answer.status == 431 and answer.json()["error"] == "request_header_fields_too_large"
    assert app.seen == []


def test_haproxy_refuses_a_head_over_its_buffer(balancer: Balancer, app: App) -> None:
    """(HAProxy 2.8 answers what it cannot parse with its built-in HTML page, whatever
    ``errorfile``/``http-error`` say: the one error answer of the fast path that is not JSON.)"""
    answer = ask(balancer.port, b"GET /api HTTP/1.1\r\nhost: x\r\nx-big: " + b"v" * 20_000 + b"\r\n\r\n")[0]
    assert answer.status == 400 and app.seen == []


@pytest.mark.parametrize("length", [300_000_000, 2**31, 10**12])  # (HAProxy's hdr_val wraps at 2^31)
def test_an_announced_body_over_the_limit_is_refused_before_it_is_sent(
    port: int, app: App, length: int
) -> None:
    client = Client(port)
    client.start("POST")
    client.send(
        b"POST /api HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: %d\r\n\r\n" % length
    )
    answer = client.answers(1, ["POST"])[0]
    assert answer.status == 413 and answer.json()["error"] == "payload_too_large"
    assert client.informational == []  # no 100 Continue for a body that will be refused
    assert client.closed_within(2)
    assert app.seen == []


def test_a_chunked_body_is_cut_at_the_limit(port: int, app: App) -> None:
    client = Client(port)
    client.start("POST")
    client.send(b"POST /api HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    for _ in range(20):  # 20 x 1,000 bytes: twice the limit
        client.send(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
    answer = client.answers(1, ["POST"])[0]
    assert answer.status == 413 and app.seen == []


def test_bodies_held_at_once_are_bounded_per_replica(app: App) -> None:
    """Announced bodies count from their head: many slow uploads cannot grow past the bound."""
    loop = CoreLoop("test-buffered")
    replica = Replica(loop, app, Limits(max_body=10_000, max_buffered=25_000), limit=10)
    try:
        clients = []
        for _ in range(2):  # 2 bodies of 9,000 bytes announced, 1,000 sent: 18,000 held
            client = Client(replica.port)
            client.start("POST")
            client.send(b"POST /api HTTP/1.1\r\nhost: x\r\ncontent-length: 9000\r\n\r\n" + b"y" * 1000)
            clients.append(client)
        until(lambda: replica.server.buffered == 18_000)
        over = ask(
            replica.port,
            b"POST /api HTTP/1.1\r\nhost: x\r\ncontent-length: 9000\r\n\r\n" + b"y" * 9000,
            "POST",
        )
        assert over[0].status == 503 and "request bodies" in over[0].json()["message"]
        for client in clients:  # the first ones finish their bodies, and are answered
            client.send(b"y" * 8000)
            assert client.answers(1, ["POST"])[0].json()["size"] == 9000
        until(lambda: replica.server.buffered == 0)
        after = ask(
            replica.port,
            b"POST /api HTTP/1.1\r\nhost: x\r\ncontent-length: 9000\r\n\r\n" + b"y" * 9000,
            "POST",
        )
        assert after[0].status == 200
    finally:
        replica.stop()
        loop.stop()


# --- timeouts -----------------------------------------------------------------------------


def test_a_head_that_never_ends_gets_a_408_and_the_connection_closes(replica: Replica) -> None:
    client = Client(replica.port)
    client.start()
    client.send(b"GET /api HTTP/1.1\r\nhost: x\r\n")  # ...and nothing more (slowloris)
    answer = client.answers(1)[0]
    assert answer.status == 408 and answer.json()["error"] == "request_timeout"
    assert client.closed_within(2)


def test_a_stalled_body_gets_a_408(replica: Replica, app: App) -> None:
    client = Client(replica.port)
    client.start("POST")
    client.send(b"POST /api HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nhalf")
    answer = client.answers(1, ["POST"])[0]
    assert answer.status == 408 and "body stalled" in answer.json()["message"]
    assert app.seen == [] and replica.server.buffered == 0 and replica.server.in_flight == 0


def test_an_idle_keep_alive_connection_is_closed_but_a_long_handler_is_not_timed_out(
    replica: Replica, app: App
) -> None:
    idle = Client(replica.port)
    idle.start()
    idle.send(b"GET /api HTTP/1.1\r\nhost: x\r\n\r\n")
    assert idle.answers(1)[0].status == 200
    assert idle.closed_within(3)
    slow = Client(replica.port)
    slow.start("POST")
    slow.send(b"POST /api/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
    assert not slow.closed_within(1.5)  # three keep-alive timeouts while the handler runs: kept
    app.gate.set()
    assert slow.answers(1, ["POST"])[0].status == 200


# --- flow control -------------------------------------------------------------------------


def test_a_client_that_pipelines_without_reading_is_not_read_further(replica: Replica, app: App) -> None:
    client = Client(replica.port)
    client.start("POST")
    request = b"POST /api/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    client.sock.setblocking(False)
    sent = 0
    try:
        for _ in range(2000):  # far more than max_pipeline (4): the server stops reading
            client.sock.send(request)
            sent += 1
    except BlockingIOError:
        pass
    client.sock.setblocking(True)
    until(lambda: len(app.seen) >= 1)
    time.sleep(0.2)  # what the server would read now, it would have read by now
    assert replica.server.in_flight <= SMALL.max_pipeline + 1  # the rest waits in the socket
    app.gate.set()
    assert len(client.answers(3, ["POST"] * 3)) == 3  # and is served once the client reads


def test_a_slow_reader_of_a_stream_holds_the_stream_back(replica: Replica, app: App) -> None:
    client = Client(replica.port)
    client.start()
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.send(b"GET /api/stream/long HTTP/1.1\r\nhost: x\r\n\r\n")
    until(lambda: len(app.streamed) > 3)
    time.sleep(0.3)
    produced = len(app.streamed)
    assert produced < 200  # 12 MiB at most, far from the 6 GiB the stream would make
    client.close()  # and when the client goes away, the stream is stopped and its slot freed
    until(app.stream_closed.is_set)
    until(lambda: replica.server.in_flight == 0)


def test_an_error_mid_stream_aborts_the_answer(port: int, app: App) -> None:
    client = Client(port)
    client.start()
    client.send(b"GET /api/stream/broken HTTP/1.1\r\nhost: x\r\n\r\n")
    answer = client.answers(1)[0]
    assert answer.status == 200 and not answer.complete  # never ended as if it were whole


# --- HTTP details -------------------------------------------------------------------------


def test_head_answers_carry_no_body(port: int) -> None:
    answer = ask(port, b"HEAD /api HTTP/1.1\r\nhost: x\r\n\r\n", method="HEAD")[0]
    assert answer.status == 200 and answer.body == b""
    assert int(answer.headers["content-length"]) > 0  # the length a GET would have


def test_chunked_trailers_never_become_request_headers(replica: Replica, app: App) -> None:
    answer = ask(
        replica.port,
        b"POST /api HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nx-evil: yes\r\n\r\n",
        method="POST",
    )[0]
    assert answer.status == 200 and "x-evil" not in answer.json()["headers"]


def test_an_error_is_answered_in_turn_after_earlier_pipelined_answers(replica: Replica, app: App) -> None:
    client = Client(replica.port)
    client.start("POST")
    client.send(b"POST /api/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\nGARBAGE\r\n\r\n")
    until(lambda: len(app.seen) == 1)
    app.gate.set()
    answers = client.answers(2, ["POST", "GET"])
    assert [a.status for a in answers] == [200, 400]
    assert client.closed_within(2)


def test_100_continue_never_goes_out_ahead_of_an_earlier_answer(replica: Replica, app: App) -> None:
    client = Client(replica.port)
    client.start("POST")
    client.send(
        b"POST /api/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
        b"POST /api HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n"
    )
    until(lambda: len(app.seen) == 1)
    client.send(b"ok")
    app.gate.set()
    answers = client.answers(2, ["POST", "POST"])
    assert [a.status for a in answers] == [200, 200] and client.informational == []


def test_anything_the_app_raises_is_a_500_and_the_server_goes_on(port: int) -> None:
    answer = ask(port, b"GET /api/exit HTTP/1.1\r\nhost: x\r\n\r\n")[0]
    assert answer.status == 500 and "SystemExit" not in answer.body.decode()
    assert ask(port, b"GET /api HTTP/1.1\r\nhost: x\r\n\r\n")[0].status == 200


# --- capacity and retries -----------------------------------------------------------------


def test_above_the_limit_a_503_at_once_and_health_stays_up(
    replica: Replica, balancer: Balancer, app: App
) -> None:
    clients = []
    for _ in range(4):
        client = Client(replica.port)
        client.start("POST")
        client.send(b"POST /api/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        clients.append(client)
    until(lambda: replica.server.in_flight == 4)
    over = ask(balancer.port, b"POST /api HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n", "POST")[0]
    assert over.status == 503 and over.json()["error"] == "too_many_requests"
    time.sleep(2.2)  # checks every second, two failures to go DOWN: long enough to see it
    assert server_state(balancer) == "UP"
    app.gate.set()
    assert all(c.answers(1, ["POST"])[0].status == 200 for c in clients)


def test_a_post_that_reached_a_replica_is_never_replayed(tmp_path: Path) -> None:
    """A replica that dies mid-request: HAProxy retries a GET elsewhere, never a POST."""
    calls: list[str] = []

    def dying_server() -> socket.socket:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)

        def serve() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                data = conn.recv(65536)
                calls.append(data.split(b" ", 1)[0].decode())
                conn.close()  # no answer: as a replica that crashed

        threading.Thread(target=serve, daemon=True).start()
        return sock

    loop = CoreLoop("test-retries")
    healthy = FastServer(App(), "/api", None, SMALL)
    loop.submit(healthy.start("127.0.0.1")).result(5)
    dying = dying_server()
    b = Balancer("127.0.0.1", free_port(), tmp_path / "haproxy")
    try:
        servers = (
            Server("dying", "127.0.0.1", dying.getsockname()[1], healthy.port),  # checks look fine
            Server("healthy", "127.0.0.1", healthy.port),
        )
        b.apply([Backend("api", "/api", ("header", "x-model"), servers)])
        posts = [
            ask(
                b.port,
                b"POST /api HTTP/1.1\r\nhost: x\r\nx-model: m%d\r\ncontent-length: 0\r\n\r\n" % i,
                "POST",
            )[0]
            for i in range(8)
        ]
        lost = [a.status for a in posts if a.status != 200]
        assert lost and set(lost) == {502}  # the POSTs the dying one took: failed, not replayed
        assert calls.count("POST") == len(lost)
        gets = [ask(b.port, b"GET /api HTTP/1.1\r\nhost: x\r\nx-model: m%d\r\n\r\n" % i)[0] for i in range(8)]
        assert all(a.status == 200 for a in gets)  # GETs: retried on the healthy replica
    finally:
        b.stop()
        dying.close()
        loop.submit(healthy.drain(0.2)).result(5)
        loop.stop()


# --- what a review found ---------------------------------------------------------------------


def test_a_stream_that_raises_system_exit_aborts_only_its_connection(replica: Replica, app: App) -> None:
    client = Client(replica.port)
    client.start()
    client.send(b"GET /api/stream/exit HTTP/1.1\r\nhost: x\r\n\r\n")
    answer = client.answers(1)[0]
    assert answer.status == 200 and not answer.complete
    assert replica.loop.alive
    until(lambda: replica.server.in_flight == 0)
    assert ask(replica.port, b"GET /api HTTP/1.1\r\nhost: x\r\n\r\n")[0].status == 200


def test_a_client_that_never_reads_is_cut_after_the_send_timeout(replica: Replica, app: App) -> None:
    client = Client(replica.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.send(b"GET /api/stream/long HTTP/1.1\r\nhost: x\r\n\r\n")  # ...and never a recv
    until(lambda: len(app.streamed) > 3)
    until(app.stream_closed.is_set)  # cut: the stream is stopped, its slot freed
    until(lambda: replica.server.in_flight == 0 and not replica.server.connections)


def test_a_header_that_never_ends_is_refused_while_it_grows(replica: Replica, app: App) -> None:
    client = Client(replica.port)
    client.start()
    client.send(b"GET /api HTTP/1.1\r\nhost: x\r\nx-endless: ")
    for _ in range(12):  # 48 KiB of one value, no end of line: far past the 4 KiB head limit
        try:
            client.send(b"v" * 4096)
        except OSError:
            break
    answer = client.answers(1)[0]
    assert answer.status == 431 and app.seen == []


def test_the_health_check_takes_no_body_and_counts_nothing(replica: Replica) -> None:
    answer = ask(replica.port, b"POST /-/healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n", "POST")
    assert answer[0].status == 400
    until(lambda: replica.server.in_flight == 0 and replica.server.buffered == 0)


def test_an_upgrade_is_refused_once_and_never_reaches_the_app(replica: Replica, app: App) -> None:
    answers = ask(
        replica.port,
        b"GET /api HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        count=2,
    )
    assert [a.status for a in answers] == [400] and app.seen == []


def test_a_204_stream_carries_no_body(replica: Replica) -> None:
    client = Client(replica.port)
    client.sock.sendall(
        b"GET /api/stream/empty HTTP/1.1\r\nhost: x\r\n\r\nGET /api HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    client.sock.settimeout(5)
    received = b""
    while received.count(b"HTTP/1.1 ") < 2 or not received.endswith(b"}"):
        received += client.sock.recv(65536)
    first = received.split(b"HTTP/1.1 200")[0]
    assert (
        first.startswith(b"HTTP/1.1 204")
        and b"transfer-encoding" not in first
        and first.endswith(b"\r\n\r\n")
    )


def test_a_deferred_100_continue_is_sent_once_its_turn_comes(replica: Replica, app: App) -> None:
    client = Client(replica.port)
    client.start("POST")
    client.send(
        b"POST /api/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
        b"POST /api HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n"
    )
    until(lambda: len(app.seen) == 1)
    app.gate.set()
    first = client.answers(1, ["POST"])[0]
    assert first.status == 200
    client.send(b"ok")  # (a client would wait for the 100 first; this one sends at once)
    second = client.answers(1, ["POST"])[0]
    assert second.json()["size"] == 2 and client.informational == [100]  # asked for, once its turn came


def test_a_pipeline_of_one_still_flows(app: App) -> None:
    loop = CoreLoop("test-pipeline-1")
    replica = Replica(loop, app, Limits(max_pipeline=1), limit=10)
    try:
        answers = ask(replica.port, b"GET /api HTTP/1.1\r\nhost: x\r\n\r\n" * 5, count=5)
        assert [a.status for a in answers] == [200] * 5
    finally:
        replica.stop()
        loop.stop()


def test_a_dropped_body_is_still_bounded(replica: Replica, app: App) -> None:
    clients = []
    for _ in range(4):  # the replica full
        client = Client(replica.port)
        client.send(b"POST /api/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        clients.append(client)
    until(lambda: replica.server.in_flight == 4)
    endless = Client(replica.port)
    endless.start("POST")
    endless.send(b"POST /api HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    for _ in range(30):  # 30 KB dropped for a 503, past the 10,000-byte body limit: cut
        try:
            endless.send(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
        except OSError:
            break
    answer = endless.answers(1, ["POST"])[0]
    assert answer.status == 503 and endless.closed_within(3)
    app.gate.set()


def test_a_target_in_absolute_form_is_served_by_its_path(port: int, app: App) -> None:
    """RFC 9112, 3.2.2: a server accepts ``GET http://host/path`` as it does ``GET /path``."""
    for absolute, origin in (
        (b"http://x/api/a?q=1", b"/api/a?q=1"),
        (b"https://x/api", b"/api"),  # (HAProxy: the authority must be the Host)
        (b"http://x/api?q", b"/api?q"),
    ):
        got = [
            ask(port, b"GET " + target + b" HTTP/1.1\r\nhost: x\r\n\r\n")[0] for target in (absolute, origin)
        ]
        assert [a.status for a in got] == [200, 200] and got[0].json() == got[1].json(), absolute
    assert [i.query for i in app.seen] == [b"q=1", b"q=1", b"", b"", b"q", b"q"]
