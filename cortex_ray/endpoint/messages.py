"""One HTTP request and its answer, as every way into an API hands them over.

cortex-ray's fast path (bytes parsed by its own server) and Serve's proxy (a Starlette
request in the replica) both become an :class:`Incoming`; the API answers with an
:class:`Outgoing`, which the fast path writes as it is and the proxy path wraps in a Starlette
response. Everything in between (payload decoding, the handler's arguments, the call,
encoding, errors) is the same code on both paths: :class:`~cortex_ray.endpoint.Endpoint`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from cortex_ray.errors import AtCapacityError, CortexRayError, MethodNotAllowedError, to_response_body

__all__ = ["JSON", "Incoming", "Outgoing", "error_headers", "error_outgoing", "json_outgoing"]

JSON = b"application/json"
log = logging.getLogger("cortex_ray.http")


@dataclass
class Incoming:
    method: str
    """Upper case, as sent."""
    path: str
    """Below the API's endpoint: ``""``, ``"/info"``, ``"/<id>"``..."""
    query: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    """As received (names in any case)."""
    body: bytes = b""

    def header(self, name: bytes) -> str | None:
        """One header's value (``name`` in lower case), or ``None``."""
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None


@dataclass
class Outgoing:
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    """A streamed body (sent chunked on the fast path) instead of ``body``."""
    after: Callable[[], Coroutine[Any, Any, None]] | None = None
    """Run on the API's loop once the answer is sent (a handler's ``(result, callback)``)."""


def json_outgoing(
    value: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> Outgoing:
    return Outgoing(status, [(b"content-type", JSON), *(headers or [])], json.dumps(value).encode())


def error_outgoing(exc: BaseException) -> Outgoing:
    """The one place (with :func:`~cortex_ray.errors.to_response_body`) an error becomes HTTP.

    A 5xx is logged with its traceback (the user's code's, for a handler error), at most once a
    minute for the same error: a client repeating a failing request cannot flood the log."""
    status, body = to_response_body(exc)
    if status >= 500 and not isinstance(exc, AtCapacityError):  # overload is no error to log
        suppressed = _LIMITER.allow((type(exc).__name__, str(exc)[:200]))
        if suppressed is not None:
            again = f" (and {suppressed} more times since it was last logged)" if suppressed else ""
            cause = exc.__cause__ if isinstance(exc, CortexRayError) and exc.__cause__ else exc
            log.error("request failed: %s%s", exc, again, exc_info=cause)
    return json_outgoing(body, status, error_headers(exc))


def error_headers(exc: BaseException) -> list[tuple[bytes, bytes]]:
    """The headers an error's answer must carry: a 405's ``Allow`` (RFC 9110), with ``HEAD``
    wherever ``GET`` is allowed (a HEAD is served as a GET)."""
    allowed = exc.details.get("allowed") if isinstance(exc, MethodNotAllowedError) else None
    if not isinstance(allowed, list):
        return []
    verbs = list(dict.fromkeys(str(m) for m in allowed))
    if "GET" in verbs and "HEAD" not in verbs:
        verbs.append("HEAD")
    return [(b"allow", ", ".join(verbs).encode("ascii", "replace"))]


class _LogLimiter:
    """At most one log line per error per ``every`` seconds; counts the ones left out."""

    def __init__(self, every: float = 60.0, keep: int = 1000) -> None:
        self.every = every
        self.keep = keep
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def allow(self, key: tuple[str, str], now: float | None = None) -> int | None:
        """``None`` when the line is left out; else how many were left out before it."""
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if len(self._last) >= self.keep:
            self._last.clear()
        self._last[key] = (now, 0)
        return last[1] if last is not None else 0


_LIMITER = _LogLimiter()
