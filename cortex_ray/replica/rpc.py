"""A gRPC API in its replica: the ``.proto`` compiled, the handler's RPC methods, calls in.

Cortex's contract: ``Handler.__init__`` takes ``proto_module_pb2`` (the compiled module), and the
handler has one method per RPC of the service, named as the RPC, taking ``payload`` (the request
message) and/or ``context`` (the call's context), both optional. A unary RPC's method returns the
response message; a server-streaming one yields them (a generator, or an async generator).

Serve's gRPC proxy hands the request's bytes over unparsed (:mod:`cortex_ray.rpc.proxy`); they are
parsed here, with the API's own module. Errors become gRPC status codes (the HTTP status each
error has, :func:`cortex_ray.rpc.status.grpc_code`), with the message as the details.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from cortex_ray.endpoint import VERSION_HEADER
from cortex_ray.endpoint.arguments import Method, signature_params
from cortex_ray.errors import BadRequestError, UserHandlerError, to_response_body
from cortex_ray.rpc.proto import ProtoService, compile_module, describe, message_class

__all__ = ["RPC_ARGS", "CallHandler", "RpcAbort", "RpcContext", "RpcService", "rpc_status"]

RPC_ARGS = ("payload", "context")
"""What an RPC method of the handler may ask for."""
_END = object()

CallHandler = Callable[[Method, dict[str, Any], dict[str, Any]], Awaitable[Any]]
Record = Callable[[dict[str, Any], int, float], None]
"""Request metrics: the model versions a call used, its status (as HTTP reads it), its seconds."""


class RpcAbort(Exception):
    """``context.abort(code, details)`` in a handler: the call ends with that status."""

    def __init__(self, code: Any, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class RpcContext:
    """The ``context`` an RPC method gets: Serve's gRPC context (metadata in, code, details and
    trailing metadata out), plus ``abort`` as grpc's ``ServicerContext`` has it."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def abort(self, code: Any, details: str) -> None:
        if self._context is not None:
            self._context.set_code(code)
            self._context.set_details(details)
        raise RpcAbort(code, details)

    def __getattr__(self, name: str) -> Any:
        if self._context is None:
            raise AttributeError(f"this call has no gRPC context ({name})")
        return getattr(self._context, name)


class RpcService:
    """One replica's gRPC service (see the module's docstring)."""

    def __init__(self, service: ProtoService, module: Any) -> None:
        self.service = service
        self.module = module
        described = module.DESCRIPTOR.services_by_name[service.name]
        self._requests = {m.name: message_class(m.input_type) for m in described.methods}
        self._responses = {m.name: message_class(m.output_type) for m in described.methods}
        self.methods: dict[str, Method] = {}
        self._record: Record | None = None

    @classmethod
    def load(cls, proto_path: str, out_dir: str) -> RpcService:
        """Read and compile the API's ``.proto`` (blocking: run off the loop)."""
        service = describe(proto_path)
        if service.problems:  # (the spec's checks said it already; a file changed since)
            raise UserHandlerError(f"{proto_path}: " + "; ".join(service.problems))
        return cls(service, compile_module(service, os.path.join(out_dir, ".proto-modules")))

    def check(self, handler_cls: type) -> None:
        """Cortex's checks of the ``Handler`` class against the service."""
        if "proto_module_pb2" not in signature_params(handler_cls.__init__):  # type: ignore[misc]
            raise UserHandlerError(
                "Handler.__init__ must accept a 'proto_module_pb2' argument: handler.protobuf_path makes "
                "this a gRPC API, and the handler builds its responses with that module"
            )
        for name in self.service.methods:
            func = getattr(handler_cls, name, None)
            if not callable(func):
                raise UserHandlerError(
                    f"Handler must define a method named {name}, to match the rpc {name} of service "
                    f"{self.service.full_name} ({os.path.basename(self.service.file)})"
                )
            Method.of(func, RPC_ARGS, f"Handler.{name}")

    def bind(self, handler: Any, record: Record | None = None) -> None:
        """The RPC methods of the constructed ``handler``; ``record``: request metrics."""
        self._record = record
        self.methods = {
            name: Method.of(getattr(handler, name), RPC_ARGS, f"Handler.{name}")
            for name in self.service.methods
        }

    async def unary(self, call: CallHandler, name: str, request: bytes, context: Any) -> Any:
        """One unary call: the handler's response message (the model versions it used in the
        ``x-cortex-model-version`` trailing metadata, as the HTTP header)."""
        method = self.methods[name]
        started, status = time.perf_counter(), 200
        used: dict[str, Any] = {}
        try:
            reply = await call(method, method.kwargs(self._arguments(name, request, context)), used)
            return self._checked(name, reply)
        except BaseException as exc:
            status = _status_of(exc, context)
            raise
        finally:
            _versions_trailer(context, used)
            if self._record is not None:
                self._record(used, status, time.perf_counter() - started)

    async def stream(
        self, call: CallHandler, name: str, request: bytes, context: Any
    ) -> AsyncGenerator[Any, None]:
        """One server-streaming call: the messages the handler yields. Each step of its generator
        runs as a handler call (in the handler's slots, holding the models it gets while it runs);
        the versions the whole stream used are its trailing metadata; a stream left early (the
        client went away) closes the generator."""
        method = self.methods[name]
        started, status = time.perf_counter(), 200
        used: dict[str, Any] = {}
        produced: Any = None
        try:
            produced = await call(method, method.kwargs(self._arguments(name, request, context)), used)
            if inspect.isasyncgen(produced):
                step = _ADVANCE_ASYNC
            elif isinstance(produced, Iterator):
                step = _ADVANCE
            else:
                raise UserHandlerError(
                    f"Handler.{name} serves a server-streaming rpc: it must yield its responses (got "
                    f"{type(produced).__name__})"
                )
            while (item := await call(step, {"payload": produced}, used)) is not _END:
                yield self._checked(name, item)
            _versions_trailer(context, used)
        except BaseException as exc:
            status = _status_of(exc, context)
            raise
        finally:
            await _close(produced)
            if self._record is not None:
                self._record(used, status, time.perf_counter() - started)

    def _arguments(self, name: str, request: bytes, context: Any) -> dict[str, Any]:
        from google.protobuf.message import DecodeError

        try:
            payload = self._requests[name].FromString(request)
        except DecodeError as exc:
            expected = self._requests[name].DESCRIPTOR.full_name
            raise BadRequestError(f"the request is not a valid {expected} message: {exc}") from exc
        return {"payload": payload, "context": RpcContext(context)}

    def _checked(self, name: str, reply: Any) -> Any:
        expected = self._responses[name]
        if not isinstance(reply, expected):
            raise UserHandlerError(
                f"Handler.{name} returned {type(reply).__name__}, not the rpc's response message "
                f"{expected.DESCRIPTOR.full_name}"
            )
        return reply


def rpc_status(exc: BaseException, context: Any) -> tuple[Any, str]:
    """The gRPC status (code, details) a failed call ends with: a handler's ``abort``, a code the
    handler set on ``context`` itself, else the error's HTTP status as a gRPC code (INTERNAL for
    what is not cortex-ray's), its message as the details."""
    import grpc

    from cortex_ray.rpc.status import grpc_code

    if isinstance(exc, RpcAbort):
        return exc.code, exc.details
    code = getattr(context, "code", None)
    set_code = code() if callable(code) else None
    if set_code not in (None, grpc.StatusCode.OK):
        details = getattr(context, "details", None)
        return set_code, str(details() if callable(details) else "") or str(exc)
    status, body = to_response_body(exc)
    return grpc_code(status), str(body.get("message", ""))


def _status_of(exc: BaseException, context: Any) -> int:
    """A failed call's status as HTTP reads it (request metrics); 499 for a call the client left."""
    import asyncio

    from cortex_ray.rpc.status import http_status

    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return 499
    return http_status(rpc_status(exc, context)[0])


def _next(payload: Iterator[Any]) -> Any:
    """One step of a sync stream (a handler call: in the handler's slots)."""
    return next(payload, _END)


async def _anext(payload: AsyncIterator[Any]) -> Any:
    """One step of an async stream."""
    return await anext(payload, _END)


_ADVANCE = Method(_next, ("payload",), False, ("payload",))
_ADVANCE_ASYNC = Method(_anext, ("payload",), True, ("payload",))


async def _close(produced: Any) -> None:
    """Close a stream's generator (``GeneratorExit`` where it stopped: its ``finally`` runs)."""
    try:
        if inspect.isasyncgen(produced):
            await produced.aclose()
        elif inspect.isgenerator(produced):
            produced.close()
    except Exception:  # (the handler's cleanup failed: the call has its answer already)
        pass


def _versions_trailer(context: Any, used: dict[str, Any]) -> None:
    """The model versions a call used, as trailing metadata (``name=version, ...``)."""
    if used and context is not None:
        value = ", ".join(f"{n}={v}" for n, v in sorted(used.items()))
        context.set_trailing_metadata([(VERSION_HEADER.decode(), value)])
