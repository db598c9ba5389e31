"""A gRPC API's own gRPC server in each replica: the fast path's side of gRPC.

On the fast ingress, the replica serves its API's service on a port of its own (the node's
address, a port the system picks), on the core loop as its HTTP server, and registers it with
the ingress, whose HAProxy routes each call there by its path (:mod:`cortex_ray.ingress.balancer`).
The calls run as on Serve's gRPC proxy (:class:`~cortex_ray.replica.rpc.RpcService`), and count
with the replica's HTTP requests (:class:`~cortex_ray.ingress.server.FastServer`): against
``max_replica_concurrency`` (above it, ``UNAVAILABLE`` at once, as HTTP's 503) and in the load
Serve's autoscaler sees; a replica that stops finishes them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cortex_ray.errors import AtCapacityError
from cortex_ray.ingress.server import FastServer
from cortex_ray.replica.rpc import CallHandler, RpcService, rpc_status

__all__ = ["RpcServer"]

log = logging.getLogger("cortex_ray.replica")


class RpcServer:
    def __init__(self, rpc: RpcService, call: CallHandler, max_message: int) -> None:
        self.rpc = rpc
        self._call = call
        self._max_message = max_message
        self._server: Any = None
        self._counter: FastServer | None = None
        self.port = 0

    @property
    def service(self) -> str:
        return self.rpc.service.full_name

    async def start(self, host: str, counter: FastServer) -> int:
        """Listen on ``host`` (on the running loop), counting calls on ``counter``; the port."""
        import grpc

        self._counter = counter
        handlers = {
            name: self._unary(name) if kind == "unary" else self._stream(name)
            for name, kind in self.rpc.service.methods.items()
        }
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_message),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(self.service, handlers),))
        self.port = self._server.add_insecure_port(f"{host}:0")
        await self._server.start()
        return self.port

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)

    def _take(self) -> float:
        assert self._counter is not None
        started = self._counter.take_call()
        if started is None:
            limit = self._counter.limit
            raise AtCapacityError(f"this replica is at its max_replica_concurrency ({limit})")
        return started

    def _unary(self, name: str) -> Any:
        import grpc

        async def unary(request: bytes, context: Any) -> Any:
            started = None
            try:
                started = self._take()
                return await self.rpc.unary(self._call, name, request, context)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await context.abort(*rpc_status(exc, context))
            finally:
                if started is not None and self._counter is not None:
                    self._counter.release_call(started)

        return grpc.unary_unary_rpc_method_handler(unary, response_serializer=_serialize)

    def _stream(self, name: str) -> Any:
        import grpc

        async def stream(request: bytes, context: Any) -> Any:
            started = None
            messages = None
            try:
                started = self._take()
                messages = self.rpc.stream(self._call, name, request, context)
                async for message in messages:
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await context.abort(*rpc_status(exc, context))
            finally:
                if messages is not None:
                    await messages.aclose()
                if started is not None and self._counter is not None:
                    self._counter.release_call(started)

        return grpc.unary_stream_rpc_method_handler(stream, response_serializer=_serialize)


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())
