"""Serve's proxy path, inside a replica: a Starlette request in, a Starlette response out.

The request becomes the same :class:`~cortex_ray.endpoint.Incoming` the fast path makes,
the answer the same :class:`~cortex_ray.endpoint.Outgoing` wrapped for Starlette; a
handler's callback runs once the response is sent (Starlette's background task).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cortex_ray.endpoint import Incoming, Outgoing

__all__ = ["from_starlette", "to_starlette"]


async def from_starlette(request: Request) -> Incoming:
    """A Starlette request inside a replica, as an :class:`Incoming` (path below the endpoint)."""
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


def to_starlette(
    out: Outgoing,
    run_after: Callable[[Callable[[], Coroutine[Any, Any, None]]], Awaitable[Any]] | None = None,
) -> Response:
    """``out`` as a Starlette response; ``run_after(out.after)`` once it is sent, if it has one."""
    if out.stream is not None:
        response: Response = StreamingResponse(out.stream, status_code=out.status)
    else:
        response = Response(out.body, status_code=out.status)
    known = {k.lower() for k, _ in out.headers}
    response.raw_headers = [
        *out.headers,
        *((k, v) for k, v in response.raw_headers if k.lower() not in known),
    ]
    if out.after is not None and run_after is not None:
        after = out.after

        async def after_sent() -> None:
            await run_after(after)

        response.background = BackgroundTask(after_sent)
    return response
