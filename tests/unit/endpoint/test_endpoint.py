"""The request path in-process: an Incoming in, an Outgoing out, through a real ApiCore (no Ray).

Every way a call comes in (HTTP on either ingress path, a Serve handle, an AsyncAPI workload)
goes through :class:`~cortex_ray.endpoint.Endpoint`; these tests feed it requests directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.responses import Response, StreamingResponse

from cortex_ray.cache import ModelCache
from cortex_ray.endpoint import Endpoint, Incoming, Outgoing
from cortex_ray.errors import MethodNotAllowedError, ModelLoadError
from cortex_ray.models import discover_models
from cortex_ray.replica.core import ApiCore
from cortex_ray.replica.model_client import ModelClient
from cortex_ray.spec import ApiSpec, MultiModelsSpec, parse_spec
from cortex_ray.storage import open_storage, reset_memory_storage


def api_spec(tmp_path: Path, kind: str = "RealtimeAPI", **handler: Any) -> ApiSpec:
    (tmp_path / "handler.py").write_text("class Handler:\n    pass\n")
    api: dict[str, Any] = {
        "name": "t",
        "kind": kind,
        "handler": {"type": "python", "path": "handler.py", **handler},
    }
    if kind == "AsyncAPI":
        api["workloads"] = {"store": str(tmp_path / "store")}
    return parse_spec([api], base_dir=tmp_path).apis[0]


def endpoint(tmp_path: Path, handler: Any, kind: str = "RealtimeAPI") -> tuple[ApiCore, Endpoint]:
    core = ApiCore(api_spec(tmp_path, kind))
    core.use_handler(handler)
    return core, core.endpoint


def request(
    method: str = "POST",
    body: bytes = b"",
    content_type: str | None = "application/json",
    path: str = "",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Incoming:
    raw = [(b"Content-Type", content_type.encode())] if content_type else []
    return Incoming(method, path, query, raw + (headers or []), body)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def body_of(out: Outgoing) -> Any:
    return json.loads(out.body)


def header(out: Outgoing, name: bytes) -> str | None:
    found = [v.decode() for k, v in out.headers if k.lower() == name]
    return found[0] if found else None


class Echo:
    def handle_post(self, payload: Any) -> Any:
        return {
            "payload": payload if not isinstance(payload, bytes) else payload.decode(),
            "type": type(payload).__name__,
        }


# --- payloads --------------------------------------------------------------------------


def test_a_json_body_reaches_the_handler_and_the_answer_is_json(tmp_path: Path) -> None:
    _, ep = endpoint(tmp_path, Echo())
    out = run(ep(request(body=b'{"x": [1, 2]}')))
    assert out.status == 200 and header(out, b"content-type") == "application/json"
    assert body_of(out) == {"payload": {"x": [1, 2]}, "type": "dict"}


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/vnd.api+json", b'{"a": 1}', {"payload": {"a": 1}, "type": "dict"}),
        ("text/plain; charset=latin-1", "café".encode("latin-1"), {"payload": "café", "type": "str"}),
        ("text/csv", b"a,b\n1,2", {"payload": "a,b\n1,2", "type": "str"}),
        ("application/octet-stream", b"\x00raw", {"payload": "\x00raw", "type": "bytes"}),
        (None, b"plain bytes", {"payload": "plain bytes", "type": "bytes"}),
        ("application/json", '{"k": "v"}'.encode("utf-16"), {"payload": {"k": "v"}, "type": "dict"}),
    ],
)
def test_the_payload_follows_the_content_type(
    tmp_path: Path, content_type: str | None, body: bytes, expected: dict[str, Any]
) -> None:
    _, ep = endpoint(tmp_path, Echo())
    out = run(ep(request(body=body, content_type=content_type)))
    assert (out.status, body_of(out)) == (200, expected)


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"{not json", "application/json", "malformed JSON body"),
        (b"", "application/json", "JSON body is empty"),
        (b"  \n", "application/json", "JSON body is empty"),
        (b"\xff\xfe\x00", "text/plain; charset=utf-8", "the text body is not valid utf-8"),
        (b"abc", "text/plain; charset=no-such-charset", "charset 'no-such-charset' is unknown"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "nests too deeply"),
        (b"9" * 5000, "application/json", "a number with too many digits"),
        (b'{"a": tru}', "application/json", "malformed JSON body: Expecting value at line 1, column 7"),
    ],
)
def test_a_body_that_cannot_be_read_is_a_400_and_the_handler_never_runs(
    tmp_path: Path, body: bytes, content_type: str, says: str
) -> None:
    calls: list[Any] = []

    class Handler:
        def handle_post(self, payload: Any) -> Any:
            calls.append(payload)
            return "ran"

    _, ep = endpoint(tmp_path, Handler())
    out = run(ep(request(body=body, content_type=content_type)))
    assert out.status == 400 and body_of(out)["error"] == "bad_request"
    assert says in body_of(out)["message"] and calls == []
    assert "Error" not in body_of(out)["message"]  # no Python exception named to the client


def test_forms_become_form_data(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Handler:
        def handle_post(self, payload: Any) -> Any:
            seen["fields"] = {k: payload[k] for k in payload}
            upload = payload.get("file")
            seen["file"] = (upload.filename, upload.file.read()) if upload is not None else None
            return {"ok": True}

    _, ep = endpoint(tmp_path, Handler())
    out = run(ep(request(body=b"a=1&b=two", content_type="application/x-www-form-urlencoded")))
    assert out.status == 200 and seen["fields"] == {"a": "1", "b": "two"}
    multipart = (
        b'--XX\r\nContent-Disposition: form-data; name="file"; filename="m.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\nDATA\r\n--XX--\r\n"
    )
    out = run(ep(request(body=multipart, content_type="multipart/form-data; boundary=XX")))
    assert out.status == 200 and seen["file"] == ("m.bin", b"DATA")
    out = run(ep(request(body=b"--XX\r\nbroken", content_type="multipart/form-data")))
    assert out.status == 400 and "form body cannot be parsed" in body_of(out)["message"]


# --- arguments ----------------------------------------------------------------------------


def test_a_method_gets_only_the_arguments_it_names_in_any_order(tmp_path: Path) -> None:
    class Handler:
        def handle_get(self, headers: Any, path: str, query_params: Any) -> Any:
            return {
                "ids": query_params.getlist("id"),
                "key": headers["x-api-key"],  # case-insensitive
                "path": path,
            }

        def handle_put(self, **everything: Any) -> Any:
            return sorted(everything)

    _, ep = endpoint(tmp_path, Handler())
    incoming = request(
        "GET",
        content_type=None,
        path="/items/7",
        query=b"id=1&id=2",
        headers=[(b"X-API-Key", b"secret")],
    )
    out = run(ep(incoming))
    assert body_of(out) == {"ids": ["1", "2"], "key": "secret", "path": "/items/7"}
    out = run(ep(request("PUT", body=b"{}")))
    assert body_of(out) == ["headers", "path", "payload", "query_params"]


def test_an_unhandled_verb_is_a_405_naming_the_ones_handled(tmp_path: Path) -> None:
    class Handler:
        def handle_post(self, payload: Any) -> Any:
            return payload

        def handle_async(self, payload: Any, request_id: str) -> Any:
            return payload

    _, ep = endpoint(tmp_path, Handler())
    for verb in ("DELETE", "ASYNC"):  # handle_async is never reachable over HTTP
        out = run(ep(request(verb)))
        assert out.status == 405 and body_of(out)["allowed"] == ["POST"], verb
        assert (b"allow", b"POST") in out.headers  # (RFC 9110: a 405 says what is allowed)

    class Reader:
        def handle_get(self) -> Any:
            return {}

        def handle_put(self, payload: Any) -> Any:
            return payload

    _, ep = endpoint(tmp_path, Reader())
    out = run(ep(request("POST")))
    assert out.status == 405 and (b"allow", b"GET, PUT, HEAD") in out.headers  # (a HEAD is a GET)


# --- answers ------------------------------------------------------------------------------


def test_results_are_encoded_by_their_type(tmp_path: Path) -> None:
    results: dict[str, Any] = {
        "none": None,
        "text": "hello",
        "bytes": b"\x01\x02",
        "numpy": {"v": np.array([1.5, 2.0]), "n": np.int64(3)},
        "response": Response("made", status_code=201, headers={"x-own": "1"}, media_type="text/html"),
    }

    class Handler:
        def handle_post(self, payload: Any) -> Any:
            return results[payload["want"]]

    _, ep = endpoint(tmp_path, Handler())

    def answer(want: str) -> Outgoing:
        out: Outgoing = run(ep(request(body=json.dumps({"want": want}).encode())))
        return out

    assert answer("none").body == b"null"
    assert (answer("text").body, header(answer("text"), b"content-type")) == (
        b"hello",
        "text/plain; charset=utf-8",
    )
    assert header(answer("bytes"), b"content-type") == "application/octet-stream"
    assert body_of(answer("numpy")) == {"v": [1.5, 2.0], "n": 3}
    made = answer("response")
    assert (made.status, made.body, header(made, b"x-own")) == (201, b"made", "1")


def test_a_streamed_answer_is_passed_on_as_a_stream(tmp_path: Path) -> None:
    class Handler:
        def handle_get(self) -> Any:
            async def parts() -> Any:
                for i in range(3):
                    yield f"p{i}"

            return StreamingResponse(parts(), media_type="text/plain")

    async def main() -> list[bytes]:
        _, ep = endpoint(tmp_path, Handler())
        out = await ep(request("GET", content_type=None))
        assert out.stream is not None and out.body == b""
        return [chunk async for chunk in out.stream]

    assert run(main()) == [b"p0", b"p1", b"p2"]


def test_a_result_json_cannot_hold_is_a_500_that_says_so(tmp_path: Path) -> None:
    class Handler:
        def handle_post(self) -> Any:
            return {"when": object()}

    _, ep = endpoint(tmp_path, Handler())
    out = run(ep(request(body=b"{}")))
    assert out.status == 500 and "cannot be serialized to JSON" in body_of(out)["message"]


def test_a_handler_error_is_a_500_naming_its_type(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Handler:
        def handle_post(self, payload: Any) -> Any:
            raise ValueError("bad input: " + str(payload["x"]))

    _, ep = endpoint(tmp_path, Handler())
    with caplog.at_level(logging.ERROR):
        out = run(ep(request(body=b'{"x": 3}')))
    assert out.status == 500
    assert body_of(out) == {
        "error": "handler_error",
        "message": "ValueError: bad input: 3",
        "type": "ValueError",
    }


@pytest.mark.parametrize(
    "raised", [SystemExit(3), KeyboardInterrupt(), asyncio.CancelledError(), GeneratorExit()]
)
def test_whatever_a_handler_raises_is_answered_and_the_loop_goes_on(
    tmp_path: Path, raised: BaseException
) -> None:
    class Handler:
        def handle_post(self, payload: Any) -> Any:
            if payload.get("raise"):
                raise raised
            return {"fine": True}

    async def main() -> tuple[Outgoing, Outgoing]:
        _, ep = endpoint(tmp_path, Handler())
        failed = await ep(request(body=b'{"raise": true}'))
        return failed, await ep(request(body=b"{}"))

    failed, after = run(main())
    assert failed.status == 500 and body_of(failed)["type"] == type(raised).__name__
    assert (after.status, body_of(after)) == (200, {"fine": True})


def test_an_unexpected_error_names_nothing_of_python_to_the_client(tmp_path: Path) -> None:
    async def info(details: bool, cluster: bool) -> dict[str, Any]:
        raise KeyError("secret internal detail")

    core, _ = endpoint(tmp_path, Echo())
    out = run(Endpoint(core, "t", info)(request("GET", content_type=None, path="/info")))
    assert out.status == 500 and body_of(out) == {
        "error": "internal_error",
        "message": "the replica failed to answer (its log says why)",
    }


def test_a_header_that_could_split_the_answer_is_refused(tmp_path: Path) -> None:
    class Handler:
        def handle_get(self, query_params: Any) -> Any:
            return Response("x", headers={"x-echo": query_params["v"]})

    _, ep = endpoint(tmp_path, Handler())
    out = run(ep(request("GET", content_type=None, query=b"v=a%0D%0ASet-Cookie:%20evil=1")))
    assert out.status == 500 and "invalid header" in body_of(out)["message"]
    assert b"evil" not in b"".join(v for _, v in out.headers)
    ok = run(ep(request("GET", content_type=None, query=b"v=fine")))
    assert ok.status == 200 and header(ok, b"x-echo") == "fine"


def test_head_is_a_get_without_a_body(tmp_path: Path) -> None:
    class Handler:
        def handle_get(self) -> Any:
            return {"got": True}

    _, ep = endpoint(tmp_path, Handler())
    out = run(ep(request("HEAD", content_type=None)))
    assert out.status == 200 and body_of(out) == {"got": True}  # the server leaves the body out


def test_a_callback_runs_once_the_answer_is_out_and_its_error_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[tuple[str, bool]] = []
    loop_thread: list[int] = []

    class Handler:
        def handle_post(self, payload: Any) -> Any:
            kind = payload["kind"]

            def sync_callback() -> None:
                ran.append(("sync", threading.get_ident() != loop_thread[0]))

            async def async_callback() -> None:
                ran.append(("async", threading.get_ident() == loop_thread[0]))

            def failing() -> None:
                raise RuntimeError("callback broke")

            callback = {"sync": sync_callback, "async": async_callback, "failing": failing}[kind]
            return {"kind": kind}, callback

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        _, ep = endpoint(tmp_path, Handler())
        for kind in ("sync", "async", "failing"):
            out = await ep(request(body=json.dumps({"kind": kind}).encode()))
            assert out.status == 200 and body_of(out) == {"kind": kind}
            assert out.after is not None and len(ran) == ("sync", "async", "failing").index(kind)
            await out.after()  # what both ingress paths do once the answer is written

    with caplog.at_level(logging.ERROR):
        run(main())
    assert ran == [("sync", True), ("async", True)]  # sync callbacks off the loop, async on it
    assert "raised after the response was sent" in caplog.text and "callback broke" in caplog.text


# --- /info ---------------------------------------------------------------------------------


def test_info_is_answered_from_the_core(tmp_path: Path) -> None:
    asked: list[tuple[bool, bool]] = []

    async def info(details: bool, cluster: bool) -> dict[str, Any]:
        asked.append((details, cluster))
        return {"model_metadata": {}}

    core, _ = endpoint(tmp_path, Echo())
    ep = Endpoint(core, "t", info, info_details=True)
    assert body_of(run(ep(request("GET", content_type=None, path="/info")))) == {"model_metadata": {}}
    run(ep(request("GET", content_type=None, path="/info/", query=b"all=1")))
    assert asked == [(True, False), (True, True)]
    _, plain = endpoint(tmp_path, Echo())  # a core without models has nothing to show
    assert body_of(run(plain(request("GET", content_type=None, path="/info")))) == {}


# --- without HTTP ------------------------------------------------------------------------


def test_a_call_through_a_handle_follows_the_same_rules(tmp_path: Path) -> None:
    done = threading.Event()

    class Handler:
        def handle_post(self, payload: Any, query_params: Any, headers: Any) -> Any:
            answer = {"payload": payload, "q": query_params.getlist("a"), "h": headers.get("x-k")}
            return answer, done.set

    async def main() -> Any:
        _, ep = endpoint(tmp_path, Handler())
        result = await ep.call("post", b"raw bytes stay bytes", {"a": "1"}, {"X-K": "v"})
        for _ in range(1000):  # the callback runs once the result is returned
            if done.is_set():
                break
            await asyncio.sleep(0.001)
        with pytest.raises(MethodNotAllowedError):
            await ep.call("patch")
        return result

    assert run(main()) == {"payload": b"raw bytes stay bytes", "q": ["1"], "h": "v"}
    assert done.is_set()


def test_an_async_workload_gets_its_payload_and_request_id(tmp_path: Path) -> None:
    class Handler:
        def handle_async(self, payload: Any, request_id: str) -> Any:
            return {"got": payload, "id": request_id}

    _, ep = endpoint(tmp_path, Handler(), kind="AsyncAPI")
    assert run(ep.call_async({"x": 1}, "wl-1")) == {"got": {"x": 1}, "id": "wl-1"}


# --- models: the version header and model errors ------------------------------------------


def test_the_versions_a_request_used_are_in_its_header_and_model_errors_keep_their_status(
    tmp_path: Path,
) -> None:
    reset_memory_storage()
    storage = open_storage("mem://endpoint/models/")
    for key, data in {"a/1/m": b"a1", "a/2/m": b"a2", "b/3/m": b"b3", "bad/1/m": b"x"}.items():
        storage.upload(key, data)
    tree = discover_models(MultiModelsSpec(dir="mem://endpoint/models/"), "python")

    def load(path: str, name: str, version: int) -> Any:
        if name == "bad":
            raise RuntimeError("corrupt model file")
        return (Path(path) / "m").read_bytes().decode()

    class Handler:
        def __init__(self, model_client: ModelClient) -> None:
            self.models = model_client

        def handle_post(self, payload: Any) -> Any:
            return [self.models.get_model(name, version) for name, version in payload]

    async def main() -> None:
        core = ApiCore(api_spec(tmp_path))
        cache = ModelCache(load, tmp_path / "disk", tree=tree)
        core.use_handler(Handler(ModelClient(cache, asyncio.get_running_loop(), core.invoker.slots)))
        ep = core.endpoint
        out = await ep(request(body=json.dumps([["a", "latest"], ["b", "3"]]).encode()))
        assert (out.status, body_of(out)) == (200, ["a2", "b3"])
        assert header(out, b"x-cortex-model-version") == "a=2, b=3"
        out = await ep(request(body=b'[["nope", "latest"]]'))
        assert out.status == 404 and body_of(out)["error"] == "model_not_found"
        out = await ep(request(body=b'[["a", "7"]]'))
        assert out.status == 404 and body_of(out)["error"] == "model_version_not_found"
        out = await ep(request(body=b'[["a", "seven"]]'))
        assert out.status == 400
        out = await ep(request(body=b'[["bad", "1"]]'))
        assert out.status == 503 and body_of(out)["error"] == ModelLoadError.error_type
        assert "corrupt model file" in body_of(out)["message"]
        await cache.close()

    run(main())
    reset_memory_storage()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_model_a_running_request_uses_is_not_evicted_for_another_request(tmp_path: Path, kind: str) -> None:
    """cache_size 1: a slow request holds model a; a request for b waits for it to end (instead of
    taking a from under it), then loads b; a request that raises lets go of its models too."""
    reset_memory_storage()
    storage = open_storage("mem://endpoint/models/")
    for key, data in {"a/1/m": b"a1", "b/1/m": b"b1"}.items():
        storage.upload(key, data)
    tree = discover_models(MultiModelsSpec(dir="mem://endpoint/models/"), "python")
    release = threading.Event()

    def load(path: str, name: str, version: int) -> Any:
        return (Path(path) / "m").read_bytes().decode()

    class Sync:
        def __init__(self, model_client: ModelClient) -> None:
            self.models = model_client

        def handle_post(self, payload: Any) -> Any:
            model = self.models.get_model(payload["model"])
            if payload.get("slow"):
                release.wait(30)
            if payload.get("fail"):
                raise RuntimeError("the handler failed")
            return {"model": model}

    class Async(Sync):
        async def handle_post(self, payload: Any) -> Any:  # type: ignore[override]
            model = await self.models.get_model_async(payload["model"])
            if payload.get("slow"):
                await asyncio.to_thread(release.wait, 30)
            if payload.get("fail"):
                raise RuntimeError("the handler failed")
            return {"model": model}

    async def main() -> None:
        core = ApiCore(api_spec(tmp_path, threads_per_process=4))
        cache = core.cache = ModelCache(load, tmp_path / "disk", memory_limit=1, disk_limit=4, tree=tree)
        client = ModelClient(cache, asyncio.get_running_loop(), core.invoker.slots)
        core.use_handler((Sync if kind == "sync" else Async)(client))
        ep = core.endpoint

        def post(payload: dict[str, Any]) -> asyncio.Task[Outgoing]:
            return asyncio.create_task(ep(request(body=json.dumps(payload).encode())))

        slow = post({"model": "a", "slow": True})
        while cache.tiers.in_use(("a", 1)) == 0:
            await asyncio.sleep(0.001)
        other = post({"model": "b"})
        for _ in range(50):  # b's load downloads, then waits for the slot a holds
            await asyncio.sleep(0.002)
        assert not other.done() and cache.tiers.in_memory == [("a", 1)]
        release.set()
        first, second = await asyncio.wait_for(asyncio.gather(slow, other), 30)
        assert (body_of(first), body_of(second)) == ({"model": "a1"}, {"model": "b1"})
        assert cache.tiers.in_memory == [("b", 1)] and cache.tiers.in_use(("b", 1)) == 0
        failed = await ep(request(body=b'{"model": "b", "fail": true}'))
        assert failed.status == 500 and cache.tiers.in_use(("b", 1)) == 0
        await cache.close()

    run(main())
    reset_memory_storage()
