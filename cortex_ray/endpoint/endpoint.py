"""An API's endpoint: its handler's methods, answering every way a call comes in.

Built once per replica around a narrow interface of the API's core (:class:`HandlerCore`:
the handler's methods, a way to call one, a way to run a callback), as Starlette's
``request_response`` wraps an endpoint once:

* :meth:`Endpoint.__call__`: one HTTP request (cortex-ray's fast path and Serve's proxy path);
* :meth:`Endpoint.call`: a call without HTTP (a Serve handle: the SDK's ``ApiHandle``);
* :meth:`Endpoint.call_async`: an AsyncAPI workload (``handle_async``).

All three build the handler's arguments by the same rules (:mod:`cortex_ray.endpoint.arguments`).
Over HTTP, as Cortex 0.35 did it: ``payload`` for every verb whose method asks for it (an empty
or malformed JSON body is a 400); the answer encoded by :func:`~cortex_ray.endpoint.codec.encode_result`
(``None`` is JSON ``null``); a ``(result, callback)`` pair sends the result, then runs
``callback`` (its errors are logged, never turned into an error after the fact); the model
versions a request used in the ``X-Cortex-Model-Version`` header; ``GET <endpoint>/info``
answered from the core's models.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from starlette.datastructures import FormData, QueryParams

from cortex_ray.endpoint.arguments import Arguments, Method
from cortex_ray.endpoint.codec import decode_payload, encode_result
from cortex_ray.endpoint.messages import Incoming, Outgoing, error_outgoing, json_outgoing
from cortex_ray.errors import MethodNotAllowedError, ModelLoadError
from cortex_ray.metrics.requests import RequestMetrics

__all__ = ["ASYNC", "VERSION_HEADER", "Endpoint", "HandlerCore", "Routes", "is_callback_pair"]

log = logging.getLogger("cortex_ray.replica")
VERSION_HEADER = b"x-cortex-model-version"
"""The model versions a request used, ``name=version`` comma-separated (Cortex's header)."""
ASYNC = "ASYNC"
"""The key of ``handle_async`` among the core's methods (never reachable over HTTP)."""

Info = Callable[[bool, bool], Awaitable[dict[str, Any]]]
"""``info(details, cluster)``: the ``/info`` body."""


class Routes(Protocol):
    """Routes answered beside the handler's methods (the protocols' ``v1/...``, ``v2/...``)."""

    def serves(self, path: str) -> bool: ...

    async def __call__(self, incoming: Incoming, used: dict[str, Any]) -> Outgoing: ...


class HandlerCore(Protocol):
    """What the endpoint needs of an API's core, and nothing more."""

    @property
    def methods(self) -> Mapping[str, Method]:
        """The handler's methods by verb in upper case (``POST``..., and :data:`ASYNC`)."""
        ...

    async def call_handler(self, method: Method, kwargs: dict[str, Any], used: dict[str, Any]) -> Any:
        """Run one handler method; records the model versions it used in ``used``."""
        ...

    async def run_callback(self, callback: Callable[[], Any]) -> None:
        """Run a ``(result, callback)`` pair's callback, as the handler's methods run."""
        ...


def _version_header(out: Outgoing, used: dict[str, Any]) -> None:
    if used:
        value = ", ".join(f"{n}={v}" for n, v in sorted(used.items()))
        out.headers.append((VERSION_HEADER, value.encode()))


def is_callback_pair(result: Any) -> bool:
    return isinstance(result, tuple) and len(result) == 2 and callable(result[1])


class Endpoint:
    def __init__(
        self,
        core: HandlerCore,
        name: str,
        info: Info | None = None,
        info_details: bool = False,
        metrics: RequestMetrics | None = None,
    ) -> None:
        self.core = core
        self.name = name
        self._info = info
        self.info_details = info_details
        self.metrics = metrics
        self.routes: Routes | None = None
        """Set once the handler is known, if the API serves protocol routes."""
        self._after: set[asyncio.Task[None]] = set()

    # --- HTTP ----------------------------------------------------------------

    async def __call__(self, incoming: Incoming) -> Outgoing:
        """One HTTP request to this API (``incoming.path`` below the endpoint)."""
        if incoming.method == "GET" and incoming.path.rstrip("/") == "/info":
            return await self._info_answer(incoming)
        started = time.perf_counter()
        used: dict[str, Any] = {}
        if self.routes is not None and self.routes.serves(incoming.path):
            out = await self.routes(incoming, used)
            _version_header(out, used)
        else:
            out = await self._answer(incoming, used)
        if self.metrics is not None:
            self.metrics.record(used, out.status, time.perf_counter() - started)
        return out

    async def _info_answer(self, incoming: Incoming) -> Outgoing:
        try:
            if self._info is None:
                return json_outgoing({})
            cluster = QueryParams(incoming.query.decode("latin-1")).get("all", "") not in ("", "0", "false")
            return json_outgoing(await self._info(self.info_details, cluster))
        except Exception as exc:
            return error_outgoing(exc)

    async def _answer(self, incoming: Incoming, used: dict[str, Any]) -> Outgoing:
        payload: Any = None
        try:
            method = self._http_method(incoming.method)
            if method.wants_payload():
                payload = await decode_payload(incoming.body, incoming.header(b"content-type"))
            arguments = Arguments(payload, query=incoming.query, headers=incoming.headers, path=incoming.path)
            result = await self.core.call_handler(method, method.kwargs(arguments), used)
            callback = None
            if is_callback_pair(result):
                result, callback = result
            out = encode_result(result)
            _version_header(out, used)
            if callback is not None:
                out.after = self._callback(callback)
            return out
        except Exception as exc:
            if isinstance(exc, ModelLoadError) and not used and isinstance(exc.details.get("model"), str):
                used[exc.details["model"]] = exc.details.get("version")  # a model that exists and failed
            return error_outgoing(exc)
        finally:
            if isinstance(payload, FormData):
                await payload.close()

    def _http_method(self, verb: str) -> Method:
        if verb == "HEAD":  # a GET whose answer's body is left out (by the server)
            verb = "GET"
        method = self.core.methods.get(verb) if verb != ASYNC else None
        if method is None:
            allowed = [m for m in self.core.methods if m != ASYNC]
            raise MethodNotAllowedError(
                f"this API does not handle {verb} requests (it handles {', '.join(allowed)})",
                allowed=allowed,
            )
        return method

    # --- without HTTP ----------------------------------------------------------

    async def call(
        self,
        verb: str = "post",
        payload: Any = None,
        query_params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Call the handler through a Serve handle: ``payload`` as given (not decoded); the
        result as the handler returned it (a callback runs once it is returned)."""
        method = self._http_method(verb.upper())
        arguments = Arguments.of_call(payload, query_params, headers)
        result = await self.core.call_handler(method, method.kwargs(arguments), {})
        if is_callback_pair(result):
            result, callback = result
            # outside the call's context: its request (its holds, a warm-up's model) has ended
            task = contextvars.Context().run(asyncio.ensure_future, self._callback(callback)())
            self._after.add(task)
            task.add_done_callback(self._after.discard)
        return result

    async def call_async(self, payload: Any, request_id: str) -> Any:
        """Run ``handle_async`` for one AsyncAPI workload; its result as returned."""
        method = self.core.methods[ASYNC]
        arguments = Arguments(payload, request_id=request_id)
        return await self.core.call_handler(method, method.kwargs(arguments), {})

    def _callback(self, callback: Any) -> Callable[[], Coroutine[Any, Any, None]]:
        """The callback of a ``(result, callback)`` answer, to run once the result is sent."""

        async def run() -> None:
            try:
                if inspect.iscoroutinefunction(callback):
                    await callback()
                else:
                    await self.core.run_callback(callback)
            except Exception:
                log.exception(
                    "api %s: the callback %r raised after the response was sent", self.name, callback
                )

        return run
