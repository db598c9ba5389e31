"""The fast path's HTTP/1.1 server: one per replica, on the API core's own event loop.

Requests come from cortex-ray's load balancer (or, in tests and benchmarks, straight
from a client). Bytes are parsed by ``httptools`` (the parser uvicorn uses) into an
:class:`~cortex_ray.endpoint.Incoming` and handed to the API's endpoint, whose
:class:`~cortex_ray.endpoint.Outgoing` is written back: no ASGI, no Starlette
objects, no thread, no per-request work beyond the request itself. Keep-alive and
pipelining are supported (answers go out in request order), as are chunked request
bodies, ``Expect: 100-continue`` and streamed (chunked) responses.

Besides the API's endpoint it answers ``GET /-/healthz`` (the balancer's health check):
``200`` while serving, ``503`` once draining.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any

import httptools

from cortex_ray.endpoint.messages import Incoming, Outgoing, error_outgoing, json_outgoing
from cortex_ray.errors import AtCapacityError

__all__ = ["MAX_BODY", "FastServer"]

log = logging.getLogger("cortex_ray.ingress")
MAX_BODY = 256 * 1024 * 1024
"""The largest request body accepted (413 above it)."""
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
HEALTH_PATH = b"/-/healthz"

App = Callable[[Incoming], Awaitable[Outgoing]]


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_busy",
        "_headers",
        "_parser",
        "_queue",
        "_server",
        "_size",
        "_task",
        "_transport",
        "_url",
    )

    def __init__(self, server: FastServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._queue: collections.deque[tuple[Incoming | Outgoing, bool, float]] = collections.deque()
        self._busy = False
        self._task: asyncio.Future[None] | None = None
        self._transport: Any = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0

    # --- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None
        if not self._busy:
            self._forget_queue()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")

    # --- httptools callbacks -----------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if name.lower() == b"expect" and value.lower() == b"100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= MAX_BODY:
            self._body.append(body)

    def on_message_complete(self) -> None:
        server = self._server
        if self._size > MAX_BODY:
            item: Incoming | Outgoing = json_outgoing(
                {"error": "payload_too_large", "message": f"the body is over {MAX_BODY} bytes"}, 413
            )
        elif (
            server.limit is not None
            and server.in_flight >= server.limit
            and self._url != HEALTH_PATH  # a replica at capacity is busy, not down
        ):
            limit = AtCapacityError(f"this replica is at its max_replica_concurrency ({server.limit})")
            item = error_outgoing(limit)
        else:
            path, _, query = self._url.partition(b"?")
            method = self._parser.get_method().decode("ascii")
            body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
            item = Incoming(method, path.decode("utf-8", "replace"), query, self._headers, body)
        self._reset()
        server.in_flight += 1
        self._queue.append((item, self._parser.should_keep_alive(), time.monotonic()))
        if not self._busy:
            self._busy = True
            self._task = asyncio.ensure_future(self._drain())

    # --- answering, in request order -----------------------------------------

    async def _drain(self) -> None:
        try:
            while self._queue and self._transport is not None:
                item, keep_alive, arrived = self._queue.popleft()
                try:
                    out = item if isinstance(item, Outgoing) else await self._server.route(item)
                    if self._transport is None:
                        return
                    if out.stream is not None:
                        await self._stream(out)
                    else:
                        self._transport.write(_head(out, len(out.body)) + out.body)
                    if out.after is not None:
                        self._server.run_after(out.after)
                finally:
                    self._server.done(arrived)
                if not keep_alive and self._transport is not None:
                    self._transport.close()
        finally:
            self._busy = False
            if self._transport is None:
                self._forget_queue()

    def _forget_queue(self) -> None:
        """The connection went: what it sent and was never answered is no longer in flight."""
        while self._queue:
            self._server.done(self._queue.popleft()[2])

    async def _stream(self, out: Outgoing) -> None:
        assert out.stream is not None and self._transport is not None
        self._transport.write(_head(out, None))
        try:
            async for chunk in out.stream:
                if chunk and self._transport is not None:
                    self._transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        finally:
            if self._transport is not None:
                self._transport.write(b"0\r\n\r\n")

    def _fail(self, status: int, message: str) -> None:
        if self._transport is not None:
            out = json_outgoing({"error": "bad_request", "message": message}, status)
            self._transport.write(_head(out, len(out.body), close=True) + out.body)
            self._transport.close()

    def close_if_idle(self) -> bool:
        if not self._busy and self._transport is not None:
            self._transport.close()
            return True
        return False


def _head(out: Outgoing, length: int | None, close: bool = False) -> bytes:
    reason = _REASONS.get(out.status, b"")
    lines = [b"HTTP/1.1 %d %s" % (out.status, reason)]
    lines += [name + b": " + value for name, value in out.headers if name.lower() != b"content-length"]
    lines.append(b"content-length: %d" % length if length is not None else b"transfer-encoding: chunked")
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class FastServer:
    """Serves one API's endpoint (``prefix``) with ``app`` on ``host:port`` (0: any free port).

    ``limit``: at most this many requests at once (received, not yet answered); more get a
    503 at once (Cortex's ``max_replica_concurrency``).
    """

    def __init__(self, app: App, prefix: str, limit: int | None = None) -> None:
        self.app = app
        self.prefix = "" if prefix == "/" else prefix.rstrip("/")
        self.limit = limit
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        """Requests received and not yet answered (waiting ones included)."""
        self._busy_seconds = 0.0
        self._after: set[asyncio.Future[None]] = set()
        self._window = (time.monotonic(), 0.0)
        self.draining = False
        self._server: asyncio.base_events.Server | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=2048)
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]
        log.info("fast path: serving %s on http://%s:%d", self.prefix or "/", host, self.port)

    async def route(self, incoming: Incoming) -> Outgoing:
        """The API's endpoint below its prefix; the health check; a JSON 404 elsewhere."""
        path = incoming.path
        prefix = self.prefix
        if path == prefix or path.startswith(prefix + "/") or (not prefix and path.startswith("/")):
            incoming.path = path[len(prefix) :]
            try:
                return await self.app(incoming)
            except Exception as exc:  # the app answers its own errors; this is a last resort
                return error_outgoing(exc)
        if path == "/-/healthz":
            status = 503 if self.draining else 200
            return Outgoing(
                status, [(b"content-type", b"text/plain")], b"draining" if self.draining else b"ok"
            )
        return json_outgoing({"error": "not_found", "message": f"Path '{path}' not found"}, 404)

    def run_after(self, after: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.ensure_future(after())
        self._after.add(task)
        task.add_done_callback(self._after.discard)

    def done(self, arrived: float) -> None:
        self.in_flight -= 1
        self._busy_seconds += time.monotonic() - arrived

    def average_in_flight(self) -> float:
        """Requests in flight on average since the last call (Little's law: busy time / time),
        what Serve's autoscaler compares with ``target_ongoing_requests``."""
        now = time.monotonic()
        since, busy_then = self._window
        self._window = (now, self._busy_seconds)
        elapsed = now - since
        return (self._busy_seconds - busy_then) / elapsed if elapsed > 0 else float(self.in_flight)

    async def drain(self, timeout: float) -> None:
        """Stop taking work: fail health checks, close idle connections, wait for what runs."""
        self.draining = True
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for conn in list(self.connections):
                conn.close_if_idle()
            if self.in_flight == 0 and not self.connections:
                break
            await asyncio.sleep(0.05)
        if self._server is not None:
            self._server.close()
