"""A gRPC API's replica side without Ray: the handler checked against the service (Cortex's
rules), requests parsed, responses checked, streams advanced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.endpoint.arguments import Method
from cortex_ray.errors import BadRequestError, UserHandlerError
from cortex_ray.replica.rpc import RpcAbort, RpcService

PROTO = """
syntax = "proto3";
package replica_rpc_test;
service Handler {
  rpc Predict (Sample) returns (Response);
  rpc Count (Sample) returns (stream Response);
}
message Sample { int32 n = 1; }
message Response { string text = 1; }
"""


@pytest.fixture(scope="module")
def rpc(tmp_path_factory: pytest.TempPathFactory) -> RpcService:
    folder: Path = tmp_path_factory.mktemp("proto")
    (folder / "replica_rpc_test.proto").write_text(PROTO)
    return RpcService.load(str(folder / "replica_rpc_test.proto"), str(folder / "out"))


async def call(method: Method, kwargs: dict[str, Any], used: dict[str, Any]) -> Any:
    """The core's call_handler, without threads."""
    result = method.func(**kwargs)
    return await result if method.is_async else result


async def run_sync(func: Any) -> Any:
    return func()


def handler_class(pb2_arg: bool = True) -> type:
    class Handler:
        def __init__(self, config: Any, proto_module_pb2: Any) -> None:
            self.pb2 = proto_module_pb2

        def Predict(self, payload: Any, context: Any) -> Any:
            if payload.n < 0:
                context.abort("FAILED_PRECONDITION", "negative")
            if payload.n == 7:
                return "not a message"
            return self.pb2.Response(text=f"n={payload.n}")

        def Count(self, payload: Any) -> Iterator[Any]:
            for i in range(payload.n):
                if i == 3:
                    raise ValueError("three")
                yield self.pb2.Response(text=str(i))

    if not pb2_arg:

        def init(self: Any, config: Any) -> None:
            pass

        Handler.__init__ = init  # type: ignore[method-assign]
    return Handler


def bound(rpc: RpcService, handler: Any) -> RpcService:
    rpc.bind(handler)
    return rpc


def test_the_handler_must_take_the_module_and_define_every_rpc(rpc: RpcService) -> None:
    rpc.check(handler_class())
    with pytest.raises(UserHandlerError, match="must accept a 'proto_module_pb2' argument"):
        rpc.check(handler_class(pb2_arg=False))

    class NoCount(handler_class()):  # type: ignore[misc]
        Count = None

    with pytest.raises(UserHandlerError, match="must define a method named Count, to match the rpc Count"):
        rpc.check(NoCount)

    class OddArgs(handler_class()):  # type: ignore[misc]
        def Predict(self, payload: Any, request: Any) -> Any:  # type: ignore[override]
            return None

    with pytest.raises(UserHandlerError, match="asks for 'request'"):
        rpc.check(OddArgs)


def test_a_unary_call_parses_the_request_and_checks_the_response(rpc: RpcService) -> None:
    handler = handler_class()(None, rpc.module)
    recorded: list[tuple[dict[str, Any], int]] = []
    rpc.bind(handler, lambda used, status, seconds: recorded.append((dict(used), status)))
    request = rpc.module.Sample(n=4).SerializeToString()
    reply = asyncio.run(rpc.unary(call, "Predict", request, None))
    assert reply == rpc.module.Response(text="n=4")
    with pytest.raises(UserHandlerError, match="returned str, not the rpc's response message"):
        asyncio.run(rpc.unary(call, "Predict", rpc.module.Sample(n=7).SerializeToString(), None))
    with pytest.raises(BadRequestError, match=r"not a valid replica_rpc_test\.Sample message"):
        asyncio.run(rpc.unary(call, "Predict", b"\xff\xff\xff", None))
    assert recorded == [({}, 200), ({}, 500), ({}, 400)]  # (request metrics: statuses as HTTP reads them)


def test_the_model_versions_a_call_used_are_its_trailing_metadata(rpc: RpcService) -> None:
    class Context:
        trailer: Any = None

        def set_trailing_metadata(self, metadata: Any) -> None:
            self.trailer = metadata

    async def call_using(method: Method, kwargs: dict[str, Any], used: dict[str, Any]) -> Any:
        used.update({"iris": 3, "b": 1})
        return await call(method, kwargs, used)

    context = Context()
    bound(rpc, handler_class()(None, rpc.module))
    asyncio.run(rpc.unary(call_using, "Predict", rpc.module.Sample(n=1).SerializeToString(), context))
    assert context.trailer == [("x-cortex-model-version", "b=1, iris=3")]


def test_abort_sets_the_status_on_the_calls_context(rpc: RpcService) -> None:
    class Context:
        code = details = None

        def set_code(self, code: Any) -> None:
            self.code = code

        def set_details(self, details: str) -> None:
            self.details = details

    context = Context()
    service = bound(rpc, handler_class()(None, rpc.module))
    with pytest.raises(RpcAbort):
        asyncio.run(service.unary(call, "Predict", rpc.module.Sample(n=-1).SerializeToString(), context))
    assert (context.code, context.details) == ("FAILED_PRECONDITION", "negative")


def collect(stream: AsyncIterator[Any]) -> list[Any]:
    async def run() -> list[Any]:
        return [item async for item in stream]

    return asyncio.run(run())


def test_a_sync_generator_streams_and_its_error_ends_the_stream(rpc: RpcService) -> None:
    service = bound(rpc, handler_class()(None, rpc.module))
    three = rpc.module.Sample(n=3).SerializeToString()
    assert [r.text for r in collect(service.stream(call, run_sync, "Count", three, None))] == ["0", "1", "2"]
    five = rpc.module.Sample(n=5).SerializeToString()
    got: list[str] = []

    async def until_error() -> None:
        async for item in service.stream(call, run_sync, "Count", five, None):
            got.append(item.text)

    with pytest.raises(UserHandlerError, match="ValueError: three"):
        asyncio.run(until_error())
    assert got == ["0", "1", "2"]


def test_an_async_generator_streams_and_a_plain_return_is_refused(rpc: RpcService) -> None:
    pb2 = rpc.module

    class Async(handler_class()):  # type: ignore[misc]
        async def Count(self, payload: Any) -> AsyncIterator[Any]:  # type: ignore[override]
            for i in range(payload.n):
                await asyncio.sleep(0)
                yield pb2.Response(text=f"a{i}")

    service = bound(rpc, Async(None, pb2))
    two = pb2.Sample(n=2).SerializeToString()
    assert [r.text for r in collect(service.stream(call, run_sync, "Count", two, None))] == ["a0", "a1"]

    class Plain(handler_class()):  # type: ignore[misc]
        def Count(self, payload: Any) -> Any:  # type: ignore[override]
            return pb2.Response(text="once")

    service = bound(rpc, Plain(None, pb2))
    with pytest.raises(UserHandlerError, match="serves a server-streaming rpc: it must yield its responses"):
        collect(service.stream(call, run_sync, "Count", two, None))
