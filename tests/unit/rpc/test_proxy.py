"""cortex-ray's part of Serve's gRPC proxy, on Serve's own proxy server class (no Ray): calls are
routed by the published route of their service, as its kind, naming the API's application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from ray.serve._private.grpc_util import gRPCGenericServer
from ray.serve._private.proxy_request_response import gRPCStreamingType

from cortex_ray.rpc.proxy import FOUND_TTL_S, MISS_LOOKUPS_PER_S, ApiServices, add_services
from cortex_ray.rpc.routes import ServiceRoute

ROUTE = ServiceRoute("iris_classifier.Handler", "iris-classifier", {"Predict": "unary", "Count": "stream"})


class Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata
        self.code: Any = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def set_code(self, code: Any) -> None:
        self.code = code


class Proxy:
    """Stands for Serve's proxy: its forwarding behaviours record what they were asked."""

    def __init__(self) -> None:
        self.made: list[tuple[str, gRPCStreamingType]] = []
        self.calls: list[tuple[str, bytes, tuple[tuple[str, str], ...]]] = []

    def factory(self, service_method: str, streaming_type: gRPCStreamingType) -> Callable[..., Any]:
        self.made.append((service_method, streaming_type))

        async def unary(request: bytes, context: Any) -> bytes:
            self.calls.append((service_method, request, tuple(context.invocation_metadata())))
            context.set_code(grpc.StatusCode.OK)
            return b"answer"

        async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
            self.calls.append((service_method, request, tuple(context.invocation_metadata())))
            for i in range(3):
                yield bytes([i])

        return stream if streaming_type == gRPCStreamingType.UNARY_STREAM else unary


def served(find: Callable[[str], ServiceRoute | None], clock: Callable[[], float] = lambda: 0.0) -> Any:
    """An ApiServices added to Serve's real proxy server class, as the proxy adds it."""

    async def make() -> tuple[Proxy, ApiServices]:
        proxy = Proxy()
        server = gRPCGenericServer(proxy.factory)
        add_services(object(), server)
        [[handler]] = server.generic_rpc_handlers
        assert isinstance(handler, ApiServices)
        handler._find = find
        handler._clock = clock
        handler._budget_at = clock()
        handler._spawn = lambda work: work()  # (the refresh, at once: no thread in a unit test)
        return proxy, handler

    return asyncio.run(make())


def test_a_unary_call_is_forwarded_with_the_api_named_and_its_bytes_unparsed() -> None:
    proxy, services = served(lambda s: ROUTE if s == ROUTE.service else None)
    handler = services.service(Details("/iris_classifier.Handler/Predict"))
    assert handler is not None and not handler.response_streaming and handler.request_deserializer is None
    context = Context((("request_id", "r1"),))
    assert asyncio.run(handler.unary_unary(b"\x08\x01", context)) == b"answer"
    method, request, metadata = proxy.calls[0]
    assert (method, request) == ("/iris_classifier.Handler/Predict", b"\x08\x01")
    assert metadata == (("request_id", "r1"), ("application", "iris-classifier"))
    assert context.code == grpc.StatusCode.OK  # (the rest of the context is the call's own)


def test_an_application_the_client_names_stands() -> None:
    proxy, services = served(lambda s: ROUTE)
    handler = services.service(Details("/iris_classifier.Handler/Predict"))
    asyncio.run(handler.unary_unary(b"", Context((("application", "other"),))))
    assert proxy.calls[0][2] == (("application", "other"),)


def test_a_server_streaming_rpc_streams() -> None:
    proxy, services = served(lambda s: ROUTE)
    handler = services.service(Details("/iris_classifier.Handler/Count"))
    assert handler is not None and handler.response_streaming and not handler.request_streaming

    async def collect() -> list[bytes]:
        return [m async for m in handler.unary_stream(b"", Context())]

    assert asyncio.run(collect()) == [b"\x00", b"\x01", b"\x02"]
    assert ("/iris_classifier.Handler/Count", gRPCStreamingType.UNARY_STREAM) in proxy.made


def test_unknown_services_and_methods_are_left_to_others() -> None:
    asked: list[str] = []

    def find(service: str) -> ServiceRoute | None:
        asked.append(service)
        return ROUTE if service == ROUTE.service else None

    _, services = served(find)
    assert services.service(Details("/iris_classifier.Handler/Nope")) is None
    assert services.service(Details("/other.Service/Predict")) is None
    assert services.service(Details("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")) is None
    assert services.service(Details("/nonsense")) is None
    assert asked == ["iris_classifier.Handler", "other.Service"]  # (reflection: not looked up)


def test_known_routes_are_read_again_when_stale_and_dropped_when_unpublished() -> None:
    now = [0.0]
    routes: dict[str, ServiceRoute] = {ROUTE.service: ROUTE}
    asked: list[str] = []

    def find(service: str) -> ServiceRoute | None:
        asked.append(service)
        return routes.get(service)

    _, services = served(find, lambda: now[0])
    first = services.service(Details("/iris_classifier.Handler/Predict"))
    assert first is not None
    assert services.service(Details("/iris_classifier.Handler/Predict")) is first  # one handler, reused
    assert len(asked) == 1  # (a known route: not read again while fresh)
    routes[ROUTE.service] = ServiceRoute(ROUTE.service, "moved", ROUTE.methods)
    now[0] += FOUND_TTL_S + 0.01
    services.service(Details("/iris_classifier.Handler/Predict"))  # stale: read again (off the loop)
    moved = services.service(Details("/iris_classifier.Handler/Predict"))
    assert moved is not None and moved is not first and len(asked) == 2
    del routes[ROUTE.service]  # the API was deleted
    now[0] += FOUND_TTL_S + 0.01
    services.service(Details("/iris_classifier.Handler/Predict"))
    assert services.service(Details("/iris_classifier.Handler/Predict")) is None


def test_unknown_names_cost_at_most_the_lookup_budget() -> None:
    now = [0.0]
    asked: list[str] = []

    def find(service: str) -> ServiceRoute | None:
        asked.append(service)
        return None

    _, services = served(find, lambda: now[0])
    for i in range(200):  # a client sending random service names, all at once
        assert services.service(Details(f"/random{i}.S/M")) is None
    assert len(asked) == MISS_LOOKUPS_PER_S
    now[0] += 0.5  # the budget refills with time
    for i in range(200):
        services.service(Details(f"/more{i}.S/M"))
    assert len(asked) == MISS_LOOKUPS_PER_S * 1.5
    assert services._routes == {}  # (misses are not remembered)


def test_an_unreachable_store_keeps_the_known_route() -> None:
    now = [0.0]
    failing = [False]

    def find(service: str) -> ServiceRoute | None:
        if failing[0]:
            raise ConnectionError("GCS down")
        return ROUTE

    _, services = served(find, lambda: now[0])
    assert services.service(Details("/iris_classifier.Handler/Predict")) is not None
    failing[0] = True
    now[0] += FOUND_TTL_S + 1
    assert services.service(Details("/iris_classifier.Handler/Predict")) is not None
    assert services.service(Details("/iris_classifier.Handler/Predict")) is not None


def test_a_route_round_trips_and_garbage_reads_as_none() -> None:
    assert ServiceRoute.from_json(ROUTE.to_json()) == ROUTE
    assert ServiceRoute.from_json(b"{not json") is None
    assert ServiceRoute.from_json(b'{"service": "a"}') is None
