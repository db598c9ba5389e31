"""One HTTP request to an API, the way Cortex 0.35's handlers expect it.

* ``headers``: Starlette ``Headers`` (case-insensitive); ``query_params``: Starlette
  ``QueryParams`` (``getlist`` for repeated keys); ``path``: the path below the endpoint (a
  cortex-ray addition). Each is built only if the method asks for it.
* ``payload``, for every verb whose method asks for it: a JSON body parsed (empty or
  malformed: 400), ``text/*`` as ``str``, a form (``multipart/form-data``,
  ``application/x-www-form-urlencoded``) as Starlette ``FormData``, anything else as bytes.
* The answer: :func:`~cortex_ray.serving.http.encode_result` (``None`` is JSON ``null``); a
  ``(result, callback)`` pair sends the result, then runs ``callback`` in the background
  (its errors are logged, never turned into an error after the fact).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData, Headers, QueryParams

from cortex_ray.errors import MethodNotAllowedError, ModelLoadError
from cortex_ray.serving.http import decode_payload, encode_result
from cortex_ray.serving.requests import Incoming, Outgoing, error_outgoing, json_outgoing

if TYPE_CHECKING:
    from cortex_ray.serving.core import ApiCore

__all__ = ["HTTP_ARGS", "handle_request", "is_callback_pair"]

log = logging.getLogger("cortex_ray.replica")
HTTP_ARGS = ("payload", "query_params", "headers", "path")
_VERSION_HEADER = b"x-cortex-model-version"


class _Arguments(Mapping[str, Any]):
    """A request's handler arguments, each built only if the method asks for it."""

    __slots__ = ("_incoming", "_payload")

    def __init__(self, incoming: Incoming, payload: Any) -> None:
        self._incoming, self._payload = incoming, payload

    def __getitem__(self, key: str) -> Any:
        if key == "payload":
            return self._payload
        if key == "query_params":
            return QueryParams(self._incoming.query.decode("latin-1"))
        if key == "headers":
            return Headers(raw=[(k.lower(), v) for k, v in self._incoming.headers])
        if key == "path":
            return self._incoming.path
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(HTTP_ARGS)

    def __len__(self) -> int:
        return len(HTTP_ARGS)


def is_callback_pair(result: Any) -> bool:
    return isinstance(result, tuple) and len(result) == 2 and callable(result[1])


async def handle_request(core: ApiCore, incoming: Incoming) -> Outgoing:
    if incoming.method == "GET" and incoming.path.rstrip("/") == "/info":
        try:
            cluster = QueryParams(incoming.query.decode("latin-1")).get("all", "") not in ("", "0", "false")
            return json_outgoing(await core.info(core.info_details, cluster=cluster))
        except Exception as exc:
            return error_outgoing(exc)
    started = time.perf_counter()
    used: dict[str, Any] = {}
    out = await _answer(core, incoming, used)
    core.request_metrics.record(used, out.status, time.perf_counter() - started)
    return out


async def _answer(core: ApiCore, incoming: Incoming, used: dict[str, Any]) -> Outgoing:
    payload: Any = None
    try:
        method = core.methods.get(incoming.method) if incoming.method != "ASYNC" else None
        if method is None:
            allowed = [m for m in core.methods if m != "ASYNC"]
            raise MethodNotAllowedError(
                f"this API does not handle {incoming.method} requests (it handles {', '.join(allowed)})",
                allowed=allowed,
            )
        if method.wants is None or "payload" in method.wants:
            payload = await decode_payload(incoming.body, incoming.header(b"content-type"))
        result, versions = await core.call_handler(method, method.kwargs(_Arguments(incoming, payload)), used)
        callback = None
        if is_callback_pair(result):
            result, callback = result
        out = encode_result(result)
        if versions:
            value = ", ".join(f"{n}={v}" for n, v in sorted(versions.items()))
            out.headers.append((_VERSION_HEADER, value.encode()))
        if callback is not None:
            out.after = _background(core, callback)
        return out
    except Exception as exc:
        if isinstance(exc, ModelLoadError) and not used and isinstance(exc.details.get("model"), str):
            used[exc.details["model"]] = exc.details.get("version")  # a model that exists and failed
        return error_outgoing(exc)
    finally:
        if isinstance(payload, FormData):
            await payload.close()


def _background(core: ApiCore, callback: Any) -> Any:
    """The callback of a ``(result, callback)`` answer, to run once the result is sent."""

    async def run() -> None:
        try:
            if inspect.iscoroutinefunction(callback):
                await callback()
            else:
                await asyncio.get_running_loop().run_in_executor(core.invoker.pool, callback)
        except Exception:
            log.exception(
                "api %s: the callback %r raised after the response was sent", core.api.name, callback
            )

    return run
