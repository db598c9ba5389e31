"""A replica's health, answered on a port and threads of its own.

The balancer checks every replica every second. Those checks must not wait behind the
handler: a model that takes seconds to answer, or a burst that fills the replica up to its
``max_replica_concurrency``, leaves a replica busy, not dead. So the checks do not go to the
replica's HTTP server (whose loop runs the handler), but here: a small threaded server that
answers ``200 ok`` while the replica's loop is alive and it is not draining, ``503``
otherwise. Any request gets that answer; the connection is closed after it.

Only the balancer needs to reach this port (HAProxy's ``check port``), like the replica's own.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["HealthResponder"]

log = logging.getLogger("cortex_ray.ingress")
READ_TIMEOUT_S = 2.0
"""How long a check may take to send its request, in all."""
MAX_CHECKS = 16
"""Checks answered at once; more are closed unanswered (a flood never holds more threads)."""


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        deadline = time.monotonic() + READ_TIMEOUT_S
        received = b""
        try:
            while b"\r\n\r\n" not in received and len(received) < 4096:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        except OSError:  # a check that sends nothing in time gets its answer anyway
            pass
        healthy, reason = self.server.state()
        status = b"200 OK" if healthy else b"503 Service Unavailable"
        body = reason.encode()
        head = b"HTTP/1.1 %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        try:
            sock.sendall(head % (status, len(body)) + body)
        except OSError:  # the checker went away
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, host: str, state: Callable[[], tuple[bool, str]]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.state = state
        self._slots = threading.BoundedSemaphore(MAX_CHECKS)
        super().__init__((host, 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # too many at once: no thread for this one
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HealthResponder:
    """``state()`` -> ``(healthy, reason)``, asked at every check (from the responder's threads)."""

    def __init__(self, state: Callable[[], tuple[bool, str]]) -> None:
        self._state = state
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self, host: str) -> int:
        self._server = _Server(host, self._state)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="cortex-ray-health",
            daemon=True,
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
