"""A gRPC API's replica side without Ray: the handler checked against the service (Cortex's
rules), requests parsed, responses checked, streams advanced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cortex_ray.endpoint.arguments import Method
from cortex_ray.errors import BadRequestError, CortexRayError, UserHandlerError
from cortex_ray.replica.rpc import RpcService, rpc_status

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
    """The core's call_handler, without threads: the user's errors become UserHandlerError."""
    try:
        result = method.func(**kwargs)
        return await result if method.is_async else result
    except CortexRayError:
        raise
    except Exception as exc:
        raise UserHandlerError(f"{type(exc).__name__}: {exc}") from exc


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
        """What a call's context holds (grpc's and Serve's have these methods)."""

        def __init__(self) -> None:
            self._code: Any = None
            self._details = ""

        def set_code(self, code: Any) -> None:
            self._code = code

        def set_details(self, details: str) -> None:
            self._details = details

        def code(self) -> Any:
            return self._code

        def details(self) -> str:
            return self._details

    context = Context()
    service = bound(rpc, handler_class()(None, rpc.module))
    with pytest.raises(UserHandlerError) as info:  # (the handler's call ends as its error)...
        asyncio.run(service.unary(call, "Predict", rpc.module.Sample(n=-1).SerializeToString(), context))
    assert (context.code(), context.details()) == ("FAILED_PRECONDITION", "negative")
    assert rpc_status(info.value, context) == ("FAILED_PRECONDITION", "negative")  # ...with its status


def test_a_stream_left_early_closes_the_handlers_generator(rpc: RpcService) -> None:
    closed: list[bool] = []
    pb2 = rpc.module

    class Endless(handler_class()):  # type: ignore[misc]
        def Count(self, payload: Any) -> Iterator[Any]:  # type: ignore[override]
            try:
                while True:
                    yield pb2.Response(text="again")
            finally:
                closed.append(True)

    service = bound(rpc, Endless(None, pb2))

    async def take_two() -> list[str]:
        stream = service.stream(call, "Count", pb2.Sample(n=1).SerializeToString(), None)
        got = [(await anext(stream)).text, (await anext(stream)).text]
        await stream.aclose()  # (the client went away)
        return got

    assert asyncio.run(take_two()) == ["again", "again"]
    assert closed == [True]


def collect(stream: AsyncIterator[Any]) -> list[Any]:
    async def run() -> list[Any]:
        return [item async for item in stream]

    return asyncio.run(run())


def test_a_sync_generator_streams_and_its_error_ends_the_stream(rpc: RpcService) -> None:
    service = bound(rpc, handler_class()(None, rpc.module))
    three = rpc.module.Sample(n=3).SerializeToString()
    assert [r.text for r in collect(service.stream(call, "Count", three, None))] == ["0", "1", "2"]
    five = rpc.module.Sample(n=5).SerializeToString()
    got: list[str] = []

    async def until_error() -> None:
        async for item in service.stream(call, "Count", five, None):
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
    assert [r.text for r in collect(service.stream(call, "Count", two, None))] == ["a0", "a1"]

    class Plain(handler_class()):  # type: ignore[misc]
        def Count(self, payload: Any) -> Any:  # type: ignore[override]
            return pb2.Response(text="once")

    service = bound(rpc, Plain(None, pb2))
    with pytest.raises(UserHandlerError, match="serves a server-streaming rpc: it must yield its responses"):
        collect(service.stream(call, "Count", two, None))


def test_the_replicas_grpc_server_counts_calls_with_http_and_refuses_above_the_limit(rpc: RpcService) -> None:
    """A real grpc.aio server (the fast path's): calls count on the replica's HTTP server's counter;
    above max_replica_concurrency a call is refused at once with UNAVAILABLE, as HTTP's 503."""
    import grpc

    from cortex_ray.endpoint import Incoming, Outgoing, json_outgoing
    from cortex_ray.ingress.server import FastServer
    from cortex_ray.replica.rpc_server import RpcServer

    pb2 = rpc.module
    release = asyncio.Event()

    class Slow(handler_class()):  # type: ignore[misc]
        async def Predict(self, payload: Any, context: Any) -> Any:  # type: ignore[override]
            await release.wait()
            return pb2.Response(text="done")

    async def app(incoming: Incoming) -> Outgoing:
        return json_outgoing({})

    async def scenario() -> tuple[str, Any, int, int]:
        counter = FastServer(app, "/api", limit=1)
        server = RpcServer(bound(rpc, Slow(None, pb2)), call, 1024)
        port = await server.start("127.0.0.1", counter)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            predict = channel.unary_unary(
                "/replica_rpc_test.Handler/Predict", response_deserializer=pb2.Response.FromString
            )
            first = asyncio.ensure_future(predict(pb2.Sample(n=1).SerializeToString(), timeout=10))
            while counter.in_flight == 0:  # (the first call holds the only slot)
                await asyncio.sleep(0.01)
            try:
                await predict(pb2.Sample(n=2).SerializeToString(), timeout=10)
                refused: Any = None
            except grpc.aio.AioRpcError as exc:
                refused = (exc.code(), exc.details())
            held = counter.in_flight
            release.set()
            answer = (await first).text
        await server.stop(1)
        return answer, refused, held, counter.in_flight

    answer, refused, held, after = asyncio.run(scenario())
    assert answer == "done" and held == 1 and after == 0
    assert refused == (grpc.StatusCode.UNAVAILABLE, "this replica is at its max_replica_concurrency (1)")
