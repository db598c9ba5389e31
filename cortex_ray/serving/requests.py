"""One HTTP request and its response, as both ingress paths hand them to an API.

Serve's proxy (a Starlette ``Request`` in the replica) and cortex-ray's fast path (bytes
parsed by its own server) both become an :class:`Incoming`; the API answers with an
:class:`Outgoing`, which the fast path writes as it is and the proxy path wraps in a
Starlette ``Response``. Everything in between (routing within the API, payload decoding,
the handler call, encoding, errors) is the same code on both paths.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cortex_ray.errors import AtCapacityError, CortexRayError, to_response_body

__all__ = ["JSON", "Incoming", "Outgoing", "error_outgoing", "from_starlette", "json_outgoing"]

JSON = b"application/json"


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

    def header_dict(self) -> dict[str, str]:
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.headers}

    def query_dict(self) -> dict[str, str]:
        return dict(parse_qsl(self.query.decode("latin-1"), keep_blank_values=True))


@dataclass
class Outgoing:
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    """A streamed body (sent chunked on the fast path) instead of ``body``."""
    after: Callable[[], Coroutine[Any, Any, None]] | None = None
    """Run on the API's loop once the answer is sent (a handler's ``(result, callback)``)."""

    def to_starlette(self) -> Response:
        if self.stream is not None:
            response: Response = StreamingResponse(self.stream, status_code=self.status)
        else:
            response = Response(self.body, status_code=self.status)
        known = {k.lower() for k, _ in self.headers}
        response.raw_headers = [
            *self.headers,
            *((k, v) for k, v in response.raw_headers if k.lower() not in known),
        ]
        return response


def json_outgoing(
    value: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> Outgoing:
    return Outgoing(status, [(b"content-type", JSON), *(headers or [])], json.dumps(value).encode())


def error_outgoing(exc: BaseException) -> Outgoing:
    """The one place (with :func:`~cortex_ray.errors.to_response_body`) an error becomes HTTP."""
    import logging

    status, body = to_response_body(exc)
    if status >= 500 and not isinstance(exc, CortexRayError):
        logging.getLogger("cortex_ray.http").error("request failed: %s", exc, exc_info=exc)
    elif status >= 500 and not isinstance(exc, AtCapacityError):  # overload is no error to log
        logging.getLogger("cortex_ray.http").error("request failed: %s", exc)
    return json_outgoing(body, status)


async def from_starlette(request: Request) -> Incoming:
    """The proxy path: a Starlette request inside a replica, as an :class:`Incoming`."""
    path = request.scope.get("path", "/")
    root = request.scope.get("root_path", "")
    sub = path[len(root) :] if root and path.startswith(root) else path
    return Incoming(
        request.method,
        "" if sub == "/" else sub,
        request.scope.get("query_string", b""),
        list(request.scope.get("headers", [])),
        await request.body(),
    )
