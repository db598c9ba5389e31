"""The Python handler over real HTTP on a real local Ray Serve."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cortex_ray.errors import DeploymentError
from tests.support.project import write_handler

pytestmark = pytest.mark.ray

HANDLER = """
import json
import os
from starlette.datastructures import FormData
from starlette.responses import Response

class Handler:
    def __init__(self, metrics_client, config):
        self.config = config
        self.metrics = metrics_client

    def handle_post(self, payload, query_params, headers):
        self.metrics.increment("handled_posts", tags={"kind": type(payload).__name__})
        if query_params.get("reply") == "contract":
            return {
                "content_type": headers["Content-Type"],  # Starlette Headers: any case
                "tags": query_params.getlist("tag"),  # QueryParams: repeated keys
                "payload": None if isinstance(payload, FormData) else payload,
            }
        if isinstance(payload, FormData):
            upload = payload.get("file")
            return {
                "form": {k: v for k, v in payload.items() if isinstance(v, str)},
                "file": upload.filename if upload is not None and not isinstance(upload, str) else None,
            }
        if query_params.get("reply") == "none":
            return None
        if query_params.get("reply") == "callback":
            marker = query_params["marker"]

            def later():
                with open(marker + ".tmp", "w") as fh:
                    fh.write("ran after the response")
                os.rename(marker + ".tmp", marker)
                raise RuntimeError("a callback error is only logged")

            return {"sent": "first"}, later
        if query_params.get("reply") == "text":
            return "plain text"
        if query_params.get("reply") == "bytes":
            return b"\\x00\\x01raw"
        if query_params.get("reply") == "response":
            return Response("custom", status_code=201, headers={"x-custom": "yes"})
        if query_params.get("reply") == "fail":
            raise ValueError("the handler failed on purpose")
        if query_params.get("reply") == "metric":
            self.metrics.increment("cortex_reserved")
        return {
            "type": type(payload).__name__,
            "payload": payload if not isinstance(payload, bytes) else payload.hex(),
            "query": dict(query_params),
            "header": headers.get("x-test"),
            "config": self.config,
        }

    def handle_get(self, query_params, payload):
        body = payload.hex() if isinstance(payload, bytes) else payload
        return {"get": dict(query_params), "payload": body}

    async def handle_put(self, payload):
        return {"put": payload, "async": True}

    def handle_delete(self):
        return {"deleted": True}
"""


def api(name: str, **handler: object) -> dict[str, object]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {"type": "python", "path": "handler.py", **handler},
    }


@pytest.fixture(scope="module", params=["fast", "proxy"])
def echo_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ray_serve: Any) -> Any:
    """The handler contract on both ingress paths: the same API deployed on each."""
    from cortex_ray.sdk import delete, run_api
    from cortex_ray.spec import parse_spec

    ingress = request.param
    project = tmp_path_factory.mktemp(f"echo-{ingress}")
    write_handler(project, HANDLER)
    spec = parse_spec([api(f"echo-{ingress}", config={"greeting": "hi"})], base_dir=project)
    run_api(spec.apis[0], ingress=ingress, ray_actor_options={"num_cpus": 0.1})
    base = ray_serve["url"] if ingress == "fast" else ray_serve["proxy_url"]
    with httpx.Client(base_url=base, timeout=60) as client:
        yield client, f"/echo-{ingress}"
    delete(f"echo-{ingress}")


@pytest.fixture
def echo_http(echo_api: Any) -> httpx.Client:
    return echo_api[0]  # type: ignore[no-any-return]


@pytest.fixture
def echo(echo_api: Any) -> str:
    return echo_api[1]  # type: ignore[no-any-return]


def test_json_payload_and_injected_arguments(echo_http: httpx.Client, echo: str) -> None:
    r = echo_http.post(echo, json={"a": [1, 2]}, params={"q": "1"}, headers={"x-test": "hdr"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "type": "dict",
        "payload": {"a": [1, 2]},
        "query": {"q": "1"},
        "header": "hdr",
        "config": {"greeting": "hi"},
    }


def test_text_and_binary_payloads(echo_http: httpx.Client, echo: str) -> None:
    r = echo_http.post(echo, content="héllo", headers={"content-type": "text/plain; charset=utf-8"})
    assert r.json()["type"] == "str" and r.json()["payload"] == "héllo"
    r = echo_http.post(echo, content=b"\x00\xff", headers={"content-type": "application/octet-stream"})
    assert r.json()["type"] == "bytes" and r.json()["payload"] == "00ff"
    r = echo_http.post(echo, content=b"\x01", headers={"content-type": "image/png"})
    assert r.json()["type"] == "bytes"


def test_response_types(echo_http: httpx.Client, echo: str) -> None:
    r = echo_http.post(echo, json={}, params={"reply": "text"})
    assert r.text == "plain text" and r.headers["content-type"].startswith("text/plain")
    r = echo_http.post(echo, json={}, params={"reply": "bytes"})
    assert r.content == b"\x00\x01raw" and r.headers["content-type"] == "application/octet-stream"
    r = echo_http.post(echo, json={}, params={"reply": "response"})
    assert (r.status_code, r.text, r.headers["x-custom"]) == (201, "custom", "yes")


def test_each_method(echo_http: httpx.Client, echo: str) -> None:
    assert echo_http.get(echo, params={"x": "1"}).json() == {"get": {"x": "1"}, "payload": ""}
    with_body = echo_http.request("GET", echo, json={"q": 1})  # GET gets a payload too, as in Cortex
    assert with_body.json() == {"get": {}, "payload": {"q": 1}}
    assert echo_http.put(echo, json=[1]).json() == {"put": [1], "async": True}
    assert echo_http.delete(echo).json() == {"deleted": True}


def test_missing_method_is_405(echo_http: httpx.Client, echo: str) -> None:
    r = echo_http.patch(echo, json={})
    assert r.status_code == 405
    body = r.json()
    assert body["error"] == "method_not_allowed"
    assert set(body["allowed"]) == {"POST", "GET", "PUT", "DELETE"}


def test_malformed_json_is_400(echo_http: httpx.Client, echo: str) -> None:
    r = echo_http.post(echo, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == "bad_request"
    assert "malformed JSON" in r.json()["message"]


def test_handler_exception_is_500_with_type_and_message(echo_http: httpx.Client, echo: str) -> None:
    r = echo_http.post(echo, json={}, params={"reply": "fail"})
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "handler_error"
    assert body["type"] == "ValueError"
    assert "the handler failed on purpose" in body["message"]
    assert "Traceback" not in r.text


def test_reserved_metric_name_is_refused(echo_http: httpx.Client, echo: str) -> None:
    r = echo_http.post(echo, json={}, params={"reply": "metric"})
    assert r.status_code == 500
    assert "cortex exclusive prefix" in r.json()["message"]


def test_custom_metric_reaches_prometheus(
    echo_http: httpx.Client, echo: str, ray_serve: dict[str, object]
) -> None:
    for _ in range(3):
        assert echo_http.post(echo, json={"n": 1}).status_code == 200
    url = f"http://127.0.0.1:{ray_serve['metrics_port']}/metrics"
    deadline = time.time() + 60
    lines: list[str] = []
    text = ""
    while time.time() < deadline:
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            text = ""
        lines = [
            line
            for line in text.splitlines()
            if line.startswith("ray_handled_posts") and f'api_name="{echo[1:]}"' in line
        ]
        if lines:
            break
        time.sleep(2)
    assert lines, text[-2000:]
    assert any('kind="dict"' in line for line in lines)


def test_constructor_arguments_in_any_order_and_sibling_imports(
    tmp_path: Path, deploy: object, http: httpx.Client
) -> None:
    write_handler(tmp_path, "WORD = 'sibling'\n", name="helpers.py")
    write_handler(tmp_path, "EXTRA = 'from python_path'\n", name="libs/extra_mod.py")
    write_handler(
        tmp_path,
        """
        from helpers import WORD
        from extra_mod import EXTRA

        class Handler:
            def __init__(self, config, metrics_client):
                self.seen = [type(config).__name__, type(metrics_client).__name__]

            def handle_get(self):
                return {"seen": self.seen, "word": WORD, "extra": EXTRA}
        """,
    )
    write_handler(
        tmp_path,
        """
        class Handler:
            def __init__(self):
                pass

            def handle_get(self):
                return "no arguments"
        """,
        name="bare/handler.py",
    )
    deploy(
        tmp_path,
        [
            api("ordered", python_path="libs"),
            {**api("bare"), "handler": {"type": "python", "path": "bare/handler.py"}},
        ],
    )  # type: ignore[operator]
    assert http.get("/ordered").json() == {
        "seen": ["dict", "MetricsClient"],
        "word": "sibling",
        "extra": "from python_path",
    }
    assert http.get("/bare").text == "no arguments"


def test_user_error_in_handler_fails_the_deployment_with_its_traceback(
    tmp_path: Path, deploy: object
) -> None:
    from ray import serve

    write_handler(
        tmp_path,
        """
        import json

        def broken():
            return 1 / 0

        VALUE = broken()

        class Handler:
            def handle_get(self):
                return "never"
        """,
    )
    with pytest.raises(DeploymentError) as info:
        deploy(tmp_path, [api("broken-import")])  # type: ignore[operator]
    message = str(info.value)
    assert "ZeroDivisionError" in message
    assert "VALUE = broken()" in message
    status = serve.status().applications["broken-import"]
    assert status.status == "DEPLOY_FAILED"
    assert "ZeroDivisionError" in status.deployments["broken-import"].message


def test_user_error_in_init_fails_the_deployment(tmp_path: Path, deploy: object) -> None:
    write_handler(
        tmp_path,
        """
        class Handler:
            def __init__(self, config):
                raise KeyError("missing-setting")

            def handle_get(self):
                return "never"
        """,
    )
    with pytest.raises(DeploymentError) as info:
        deploy(tmp_path, [api("broken-init")])  # type: ignore[operator]
    assert "error in Handler.__init__: KeyError" in str(info.value)
    assert "missing-setting" in str(info.value)


def test_cortex_s_handler_contract(echo_http: httpx.Client, echo: str, tmp_path: Path) -> None:
    """Headers any case, repeated query keys, forms, an empty JSON body, None, a callback."""
    r = echo_http.post(echo, params=[("reply", "contract"), ("tag", "a"), ("tag", "b")], json={"x": 1})
    assert r.json() == {"content_type": "application/json", "tags": ["a", "b"], "payload": {"x": 1}}
    form = echo_http.post(echo, data={"name": "iris", "n": "3"})  # x-www-form-urlencoded
    assert form.json() == {"form": {"name": "iris", "n": "3"}, "file": None}
    upload = echo_http.post(echo, data={"name": "iris"}, files={"file": ("w.bin", b"\x00\x01")})  # multipart
    assert upload.json() == {"form": {"name": "iris"}, "file": "w.bin"}
    empty = echo_http.post(echo, content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 400 and "empty" in empty.json()["message"]
    none = echo_http.post(echo, json={}, params={"reply": "none"})
    assert none.status_code == 200 and none.headers["content-type"] == "application/json"
    assert none.text == "null"
    marker = tmp_path / "callback-ran"
    r = echo_http.post(echo, json={}, params={"reply": "callback", "marker": str(marker)})
    assert r.status_code == 200 and r.json() == {"sent": "first"}  # not a 500 for its error
    deadline = time.time() + 10
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "ran after the response"
