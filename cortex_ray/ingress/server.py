"""The fast path's HTTP/1.1 server: one per replica, on the API core's own event loop.

Requests come from cortex-ray's load balancer (or, in tests and benchmarks, straight from a
client). Bytes are parsed by ``httptools`` (the parser uvicorn uses) into an
:class:`~cortex_ray.endpoint.Incoming` and handed to the API's endpoint, whose
:class:`~cortex_ray.endpoint.Outgoing` is written back: no ASGI, no Starlette objects, no
thread, no per-request work beyond the request itself. Keep-alive and pipelining are supported
(answers go out in request order, errors included), as are chunked request bodies (their
trailers are dropped), ``Expect: 100-continue``, ``HEAD`` and streamed (chunked) answers.

What it holds a client to (:class:`Limits`; ``docs/ingress.md`` puts them beside nginx's,
uvicorn's and Triton's):

* the request line (414), the head and the number of header fields (431), the body (413,
  refused from ``Content-Length`` before a byte of it is read, and without ``100 Continue``;
  a chunked body is cut at the limit), and the bytes of bodies a replica holds at once (503);
* time: the head must arrive within ``head_timeout``, a body must not stall longer than
  ``body_timeout``, an idle keep-alive connection is closed after ``keepalive_timeout`` (a
  handler that runs long is none of these: it is not timed out);
* flow: a connection whose answers are not being read, or that pipelines more than
  ``max_pipeline`` requests ahead, is not read until it catches up; a stream whose client is
  slow waits for the socket; a stream whose client went away is stopped; an error in the middle
  of a stream aborts the connection (the answer is not ended as if it were complete).

Above ``limit`` requests at once (Cortex's ``max_replica_concurrency``) a request gets a JSON
503 at once. ``GET /-/healthz`` is answered here too (``200``, ``503`` once draining), never by
the API, and never refused for capacity: the balancer's checks go to the replica's own health
responder (:mod:`cortex_ray.ingress.health`), which no handler can hold up.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools

from cortex_ray.endpoint.messages import Incoming, Outgoing, error_outgoing, json_outgoing
from cortex_ray.errors import AtCapacityError

__all__ = ["HEALTH_PATH", "FastServer", "Limits"]

log = logging.getLogger("cortex_ray.ingress")
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
HEALTH_PATH = "/-/healthz"
_HEALTH = HEALTH_PATH.encode()
SWEEP_EVERY = 1.0
"""How often connections are looked at for their timeouts."""
LINGER_S = 2.0
"""How long a connection closed after a refusal still reads (and drops) what the client sends."""

App = Callable[[Incoming], Awaitable[Outgoing]]

_IDLE, _HEAD, _BODY = 0, 1, 2
_NO_BODY = (204, 304)
_MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one replica's server accepts; every default is documented in ``docs/ingress.md``."""

    max_url: int = 8 * 1024
    """Bytes of the request target (path and query): 414 above."""
    max_head: int = 16 * 1024
    """Bytes of the request target and header fields together: 431 above."""
    max_headers: int = 100
    """Header fields: 431 above."""
    max_body: int = 64 * _MiB
    """Bytes of one request body: 413 above (``networking.max_body_size``)."""
    max_buffered: int = 256 * _MiB
    """Bytes of request bodies the replica holds at once, all connections together: 503 above."""
    max_pipeline: int = 16
    """Requests read ahead of their answers on one connection; past it, reading waits."""
    head_timeout: float = 60.0
    """Seconds for the request line and headers to arrive: 408 after."""
    body_timeout: float = 60.0
    """Seconds a request body may stall between two reads: 408 after."""
    keepalive_timeout: float = 75.0
    """Seconds an idle keep-alive connection is kept open."""
    send_timeout: float = 60.0
    """Seconds an answer may wait for a client that does not read it: the connection is cut."""

    @classmethod
    def for_body(cls, max_body: int) -> Limits:
        """The defaults, with ``max_body`` (and room for four such bodies at once)."""
        return cls(max_body=max_body, max_buffered=max(cls.max_buffered, 4 * max_body))


class _Refused(Exception):
    """Raised in a parser callback: the request is answered with ``answer``, then the connection
    is closed (nothing more is read from it)."""

    def __init__(self, answer: Outgoing) -> None:
        self.answer = answer


def _origin_form(url: bytes) -> bytes:
    """A request target in absolute form (``http://host/path?q``, which servers must accept:
    RFC 9112, 3.2.2) as the path and query it names; any other target as it is."""
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return url
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    tail = rest[cut:]
    return tail if tail.startswith(b"/") else b"/" + tail


def _refusal(status: int, error: str, message: str) -> _Refused:
    return _Refused(json_outgoing({"error": error, "message": message}, status))


class _Item:
    """One request in a connection's pipeline, or its answer when it was refused."""

    __slots__ = ("arrived", "counted", "head_only", "keep_alive", "request", "size")

    def __init__(
        self,
        request: Incoming | Outgoing,
        keep_alive: bool,
        arrived: float,
        counted: bool,
        head_only: bool,
        size: int,
    ) -> None:
        self.request = request
        self.keep_alive = keep_alive
        self.arrived = arrived
        self.counted = counted
        """Whether it counts against the replica's limit (it was taken, not refused)."""
        self.head_only = head_only
        self.size = size
        """Bytes of body it holds against ``max_buffered``."""


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_busy",
        "_can_write",
        "_closing",
        "_counted",
        "_eof",
        "_expecting",
        "_head",
        "_head_bytes",
        "_headers",
        "_headers_done",
        "_held",
        "_limits",
        "_nheaders",
        "_parser",
        "_phase",
        "_queue",
        "_read_paused",
        "_reject",
        "_server",
        "_since",
        "_size",
        "_task",
        "_transport",
        "_url",
        "_write_blocked",
    )

    def __init__(self, server: FastServer) -> None:
        self._server = server
        self._limits = server.limits
        self._parser = httptools.HttpRequestParser(self)
        self._queue: collections.deque[_Item] = collections.deque()
        self._busy = False
        self._task: asyncio.Future[None] | None = None
        self._transport: Any = None
        self._phase = _IDLE
        self._since = time.monotonic()
        self._closing = False
        self._eof = False
        self._read_paused = False
        self._can_write: asyncio.Future[None] | None = None
        """Set while the transport asked us to stop writing (done when it may go on)."""
        self._write_blocked = 0.0
        """Since when writing waits for the client to read (for ``send_timeout``)."""
        self._expecting = False
        """A ``100 Continue`` is due once the answers ahead of this request are out."""
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._held = 0
        """Bytes this request counts in the server's ``buffered``: its announced length, or what
        came of a chunked body."""
        self._head = 0
        self._nheaders = 0
        self._headers_done = False
        self._counted = False
        self._reject: Outgoing | None = None
        self._head_bytes = 0
        self._expecting = False

    # --- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None
        self._release_partial()
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)  # what waits to write finds the connection gone
        if not self._busy:
            self._forget_queue()

    def eof_received(self) -> bool:
        """The client is done sending (a half close): answer what it sent, then close."""
        self._eof = True
        return self._busy or bool(self._queue)  # keep the transport open while answers are due

    def pause_writing(self) -> None:
        """The client reads our answers slower than we write them: wait, and read no more."""
        if self._can_write is None or self._can_write.done():
            self._can_write = asyncio.get_running_loop().create_future()
            self._write_blocked = time.monotonic()
        self._pause_reading()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._maybe_resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
            if self._phase == _HEAD:  # the head is still coming: all of this was head (or before it)
                self._head_bytes += len(data)
                if self._head_bytes > self._limits.max_head + len(self._url) + 4096:
                    raise _refusal(431, "request_header_fields_too_large", self._too_large_head())
        except _Refused as stop:
            self._refuse(stop.answer)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _Refused):
                raise
            self._refuse(cause.answer)
        except httptools.HttpParserUpgrade:
            self._refuse(_refusal(400, "bad_request", "protocol upgrades are not supported").answer)
        except httptools.HttpParserError as exc:
            self._refuse(_refusal(400, "bad_request", f"malformed HTTP request: {exc}").answer)

    # --- httptools callbacks -----------------------------------------------

    def on_message_begin(self) -> None:
        self._phase, self._since = _HEAD, time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url:
            raise _refusal(414, "uri_too_long", f"the request target is over {self._limits.max_url} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:
            return  # a chunked body's trailer: never a request header
        self._headers.append((name, value))
        self._nheaders += 1
        self._head += len(name) + len(value) + 4
        limits = self._limits
        if self._nheaders > limits.max_headers or self._head + len(self._url) > limits.max_head:
            raise _refusal(431, "request_header_fields_too_large", self._too_large_head())

    def _too_large_head(self) -> str:
        limits = self._limits
        return f"the request head is over {limits.max_head} bytes or {limits.max_headers} header fields"

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._phase, self._since = _BODY, time.monotonic()
        server, limits = self._server, self._limits
        if not self._url.startswith(b"/"):
            self._url = _origin_form(self._url)
        if self._parser.should_upgrade() or self._parser.get_method() == b"CONNECT":
            raise _refusal(400, "bad_request", "protocol upgrades (and CONNECT) are not supported")
        length, expect, chunked, hosts = None, False, False, 0
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)  # the parser already refused anything but digits
            elif lower == b"expect" and value.lower() == b"100-continue":
                expect = True
            elif lower == b"transfer-encoding":
                chunked = True
            elif lower == b"host":
                hosts += 1
        if self._url == _HEALTH:  # a replica at capacity is busy, not down: the check is never refused
            if length or chunked:
                raise _refusal(400, "bad_request", "the health check takes no body")
            return  # and it holds nothing: it is not counted
        if hosts != 1 and (hosts or self._parser.get_http_version() != "1.0"):
            # RFC 9112 §3.2: an HTTP/1.1 request without Host, or any with two, is a 400
            raise _refusal(400, "bad_request", "an HTTP/1.1 request must carry exactly one Host header")
        if length is not None and length > limits.max_body:
            raise _refusal(
                413,
                "payload_too_large",
                f"the body is {length} bytes, over the limit of {limits.max_body} (networking.max_body_size)",
            )
        if server.limit is not None and server.in_flight >= server.limit:
            self._reject = error_outgoing(
                AtCapacityError(f"this replica is at its max_replica_concurrency ({server.limit})")
            )
        elif length is not None and server.buffered + length > limits.max_buffered:
            self._reject = error_outgoing(
                AtCapacityError("this replica holds as many request bodies as it may: try again")
            )
        if self._reject is not None:
            if expect:  # the client waits for our word before it sends the body: say no, and close
                raise _Refused(self._reject)
            return  # answered in turn; the body is read and dropped
        server.in_flight += 1
        self._counted = True
        self._hold(length or 0)
        if expect:
            if not self._queue and not self._busy:
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:  # never ahead of an earlier answer: once those are out
                self._expecting = True

    def on_body(self, body: bytes) -> None:
        self._since = time.monotonic()
        if self._reject is not None:  # dropped, but never without end
            self._head_bytes += len(body)
            if self._head_bytes > self._limits.max_body:
                raise _Refused(self._reject)
            return
        if self._size + len(body) > self._limits.max_body:
            raise _refusal(
                413,
                "payload_too_large",
                f"the body is over the limit of {self._limits.max_body} bytes (networking.max_body_size)",
            )
        self._size += len(body)
        self._body.append(body)
        if self._size > self._held:  # a chunked body: it holds what came
            self._hold(self._size)
            if self._server.buffered > self._limits.max_buffered:
                raise _Refused(
                    error_outgoing(
                        AtCapacityError("this replica holds as many request bodies as it may: try again")
                    )
                )

    def _hold(self, size: int) -> None:
        self._server.buffered += size - self._held
        self._held = size

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        keep_alive = self._parser.should_keep_alive()
        if self._reject is not None:
            request: Incoming | Outgoing = self._reject
        else:
            path, _, query = self._url.partition(b"?")
            body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
            request = Incoming(
                method.decode("ascii"), path.decode("utf-8", "replace"), query, self._headers, body
            )
        now = time.monotonic()
        self._queue.append(_Item(request, keep_alive, now, self._counted, method == b"HEAD", self._held))
        self._counted = False
        self._reset()
        self._phase, self._since = _IDLE, now
        if len(self._queue) >= self._limits.max_pipeline:
            self._pause_reading()
        self._start_answering()

    # --- answering, in request order -----------------------------------------

    def _start_answering(self) -> None:
        if not self._busy:
            self._busy = True
            self._task = asyncio.ensure_future(self._answer_all())

    async def _answer_all(self) -> None:
        try:
            while self._queue and self._transport is not None:
                item = self._queue.popleft()
                self._maybe_resume_reading()
                try:
                    await self._answer(item)
                finally:
                    self._server.done(item)
                if self._transport is None:
                    break
                if not item.keep_alive:  # the last answer of this connection: nothing after it
                    self._forget_queue()
                    if self._closing:
                        self._linger()
                    else:
                        self._transport.close()
                    break
                if not self._queue:
                    self._since = time.monotonic()  # idle (keep-alive) from now
                    if self._expecting and self._phase == _BODY:  # its turn came: ask for the body
                        self._expecting = False
                        self._since = time.monotonic()
                        self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # never the loop's end, never a connection left hanging
            log.error("answering a connection failed: %s", exc, exc_info=exc)
            if self._transport is not None:
                self._transport.abort()
        finally:
            self._busy = False
            if self._transport is None:
                self._forget_queue()
            elif self._eof and not self._queue and not self._closing:
                self._transport.close()  # the client said it is done: all it sent is answered

    async def _answer(self, item: _Item) -> None:
        request = item.request
        out = request if isinstance(request, Outgoing) else await self._server.route(request)
        if self._can_write is not None and not self._can_write.done():
            await self._can_write  # the client is not reading: wait (``send_timeout``), reading nothing more
        if self._transport is None:
            return
        close = not item.keep_alive
        if item.head_only or out.status in _NO_BODY:
            if out.stream is not None:
                await _close_stream(out.stream)
            if self._transport is not None:  # a HEAD: the head a GET gets; a 204/304: no length at all
                length = None if out.status in _NO_BODY else (len(out.body) if out.stream is None else None)
                self._transport.write(_head(out, length, close, out.status in _NO_BODY))
        elif out.stream is not None:
            await self._stream(out, close)
        else:
            self._transport.write(_head(out, len(out.body), close) + out.body)
        if out.after is not None:
            self._server.run_after(out.after)

    async def _stream(self, out: Outgoing, close: bool) -> None:
        assert out.stream is not None and self._transport is not None
        self._transport.write(_head(out, None, close))
        try:
            async for chunk in out.stream:
                if self._transport is None:
                    return  # the client went away: the generator is stopped (finally)
                if chunk:
                    self._transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if self._can_write is not None and not self._can_write.done():
                    await self._can_write  # a slow reader: the generator waits with it
        except BaseException as exc:  # never end a broken stream as if it were complete
            cancelling = getattr(asyncio.current_task(), "cancelling", None)
            if isinstance(exc, asyncio.CancelledError) and cancelling is not None and cancelling():
                raise
            log.error("a streamed answer failed after it started: %r", exc, exc_info=exc)
            if self._transport is not None:
                self._transport.abort()
            return
        finally:
            await _close_stream(out.stream)
        if self._transport is not None:
            self._transport.write(b"0\r\n\r\n")

    def _refuse(self, answer: Outgoing) -> None:
        """Answer ``answer`` after what is queued before it, then close; read nothing more."""
        self._closing = True
        self._pause_reading()
        self._release_partial()
        self._reset()
        self._queue.append(_Item(answer, False, time.monotonic(), False, False, 0))
        self._start_answering()

    def _linger(self) -> None:
        """After a refusal: stop writing, read (and drop) what the client still sends for a while,
        then close; closing at once with its body unread would reset the connection, and the
        client could lose the answer that says why (nginx's lingering close)."""
        transport = self._transport
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except (OSError, RuntimeError):  # already closing
            pass
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def _release_partial(self) -> None:
        """A request that was being read and will not be answered gives back what it held."""
        if self._counted:
            self._server.in_flight -= 1
            self._counted = False
        self._server.buffered -= self._held
        self._held = self._size = 0

    def _forget_queue(self) -> None:
        """The connection went: what it sent and was never answered is no longer in flight."""
        while self._queue:
            self._server.done(self._queue.popleft())

    # --- reading, paused and resumed -----------------------------------------

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self._read_paused
            and not self._closing
            and self._transport is not None
            and len(self._queue) <= self._limits.max_pipeline // 2
            and (self._can_write is None or self._can_write.done())
        ):
            self._read_paused = False
            self._since = time.monotonic()  # reading again: the head or body timeout starts over
            self._transport.resume_reading()

    # --- timeouts and the end --------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        """Called every ``SWEEP_EVERY``: a head or body too slow gets a 408; an idle keep-alive
        connection is closed; an answer the client has not read for ``send_timeout`` cuts the
        connection. A request being answered is never timed out, nor one this server stopped
        reading itself (its pipeline is full)."""
        if self._transport is None:
            return
        limits = self._limits
        if self._can_write is not None and not self._can_write.done():
            if now - self._write_blocked > limits.send_timeout:
                log.info("a client did not read its answers for %g s: connection cut", limits.send_timeout)
                self._transport.abort()
            return
        if self._closing or self._read_paused or self._expecting:  # (a client waiting for our 100 waits)
            return
        elapsed = now - self._since
        if self._phase == _HEAD and elapsed > limits.head_timeout:
            timeout = f"the request head did not arrive within {limits.head_timeout:g} s"
            self._refuse(_refusal(408, "request_timeout", timeout).answer)
        elif self._phase == _BODY and elapsed > limits.body_timeout:
            stalled = f"the request body stalled for over {limits.body_timeout:g} s"
            self._refuse(_refusal(408, "request_timeout", stalled).answer)
        elif (
            self._phase == _IDLE and not self._busy and not self._queue and elapsed > limits.keepalive_timeout
        ):
            self._transport.close()

    def close_if_idle(self) -> bool:
        """Close it unless it is reading a request or answering one (a draining replica)."""
        if not self._busy and (self._phase == _IDLE or self._closing) and self._transport is not None:
            self._transport.close()
            return True
        return False


async def _close_stream(stream: Any) -> None:
    """Stop a streamed answer's generator (its ``finally`` runs now, not at garbage collection)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception as exc:  # its own cleanup failed: nothing more to do for the client
            log.warning("closing a streamed answer failed: %s", exc)


def _head(out: Outgoing, length: int | None, close: bool = False, bodiless: bool = False) -> bytes:
    """The status line and headers; ``length`` (``None``: chunked); ``bodiless``: a 204 or 304,
    which carry neither."""
    reason = _REASONS.get(out.status, b"")
    lines = [b"HTTP/1.1 %d %s" % (out.status, reason)]
    lines += [
        name + b": " + value
        for name, value in out.headers
        if name.lower() not in (b"content-length", b"transfer-encoding", b"connection")
    ]
    if not bodiless:
        lines.append(b"content-length: %d" % length if length is not None else b"transfer-encoding: chunked")
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class FastServer:
    """Serves one API's endpoint (``prefix``) with ``app`` on ``host:port`` (0: any free port).

    ``limit``: at most this many requests at once (received, not yet answered); more get a
    503 at once (Cortex's ``max_replica_concurrency``). ``limits``: see :class:`Limits`.
    """

    def __init__(
        self,
        app: App,
        prefix: str,
        limit: int | None = None,
        limits: Limits | None = None,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        self.app = app
        self.sweep_every = sweep_every
        self.prefix = "" if prefix == "/" else prefix.rstrip("/")
        self.limit = limit
        self.limits = limits or Limits()
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        """Requests taken and not yet answered (waiting ones included; refused ones not)."""
        self.buffered = 0
        """Bytes of request bodies held, all connections together."""
        self._busy_seconds = 0.0
        self._after: set[asyncio.Future[None]] = set()
        self._window = (time.monotonic(), 0.0)
        self.draining = False
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=2048)
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]
        self._sweeper = loop.create_task(self._sweep())
        log.info("fast path: serving %s on http://%s:%d", self.prefix or "/", host, self.port)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.check_timeouts(now)

    async def route(self, incoming: Incoming) -> Outgoing:
        """The health check; the API's endpoint below its prefix; a JSON 404 elsewhere."""
        path = incoming.path
        if path == HEALTH_PATH:  # never the API's (an endpoint of "/" included)
            return self.health()
        prefix = self.prefix
        if path == prefix or path.startswith(prefix + "/") or (not prefix and path.startswith("/")):
            incoming.path = path[len(prefix) :]
            try:
                return await self.app(incoming)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the app answers its own errors; this is a last resort
                return error_outgoing(exc)
        return json_outgoing({"error": "not_found", "message": f"Path '{path}' not found"}, 404)

    def health(self) -> Outgoing:
        status = 503 if self.draining else 200
        return Outgoing(status, [(b"content-type", b"text/plain")], b"draining" if self.draining else b"ok")

    def run_after(self, after: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.ensure_future(after())
        self._after.add(task)
        task.add_done_callback(self._after.discard)

    def done(self, item: _Item) -> None:
        self.buffered -= item.size
        if item.counted:
            self.in_flight -= 1
            self._busy_seconds += time.monotonic() - item.arrived

    def take_call(self) -> float | None:
        """Count a call that came another way (a gRPC call to the same replica) against the same
        ``limit`` and load: when it started, or ``None`` when the replica is at its limit."""
        if self.limit is not None and self.in_flight >= self.limit:
            return None
        self.in_flight += 1
        return time.monotonic()

    def release_call(self, started: float) -> None:
        """A call :meth:`take_call` counted has ended."""
        self.in_flight -= 1
        self._busy_seconds += time.monotonic() - started

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
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
