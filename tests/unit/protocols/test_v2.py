"""The Open Inference Protocol on a fake API's models (no Ray, no TF), with the assertions of
MLServer's REST endpoint tests ported (health, metadata, readiness, infer, repository index,
errors), and the binary tensor extension."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from cortex_ray.protocols import ProtocolRoutes
from tests.unit.protocols.fake import FakeModels, call


@pytest.fixture
def models() -> FakeModels:
    return FakeModels()


@pytest.fixture
def routes(models: FakeModels) -> ProtocolRoutes:
    return ProtocolRoutes(models, ("v2",))


def infer_body(data: list[float], **extra: object) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "shape": [len(data)], "datatype": "FP32", "data": data}], **extra}
    ).encode()


def test_live_and_ready(routes: ProtocolRoutes, models: FakeModels) -> None:
    assert call(routes, "GET", "/v2/health/live").status == 200
    assert call(routes, "GET", "/v2/health/ready").status == 200
    models.ready = False
    assert call(routes, "GET", "/v2/health/ready").status == 400


def test_server_metadata(routes: ProtocolRoutes) -> None:
    body = json.loads(call(routes, "GET", "/v2").body)
    assert body["name"] == "cortex-ray" and body["extensions"] == [
        "binary_tensor_data",
        "model_repository",
        "model_configuration",
        "statistics",
    ]
    assert isinstance(body["version"], str)


def test_model_ready(routes: ProtocolRoutes, models: FakeModels) -> None:
    assert call(routes, "GET", "/v2/models/half_plus_two/ready").status == 200
    assert call(routes, "GET", "/v2/models/half_plus_two/versions/123/ready").status == 200
    assert call(routes, "GET", "/v2/models/half_plus_two/versions/1/ready").status == 400
    assert call(routes, "GET", "/v2/models/nope/ready").status == 400
    models.states[("text", 2)] = {"state": "failed", "reason": "corrupt"}
    out = call(routes, "GET", "/v2/models/text/ready")
    assert out.status == 400 and "corrupt" in json.loads(out.body)["error"]


def test_model_metadata(routes: ProtocolRoutes) -> None:
    body = json.loads(call(routes, "GET", "/v2/models/text").body)
    assert body == {
        "name": "text",
        "versions": ["1", "2"],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "length", "datatype": "INT32", "shape": [-1]},
            {"name": "raw_bytes", "datatype": "BYTES", "shape": [-1]},
            {"name": "upper", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    assert json.loads(call(routes, "GET", "/v2/models/text/versions/1").body)["versions"] == ["1"]
    out = call(routes, "GET", "/v2/models/nope")
    assert out.status == 404 and "nope" in json.loads(out.body)["error"]


def test_infer(routes: ProtocolRoutes, models: FakeModels) -> None:
    out = call(routes, "POST", "/v2/models/half_plus_two/infer", infer_body([1, 2], id="r-1"))
    assert out.status == 200 and (b"content-type", b"application/json") in out.headers
    assert json.loads(out.body) == {
        "model_name": "half_plus_two",
        "model_version": "123",
        "id": "r-1",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "data": [2.5, 3.0]}],
    }
    out = call(
        routes,
        "POST",
        "/v2/models/text/versions/1/infer",
        json.dumps(
            {
                "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ab"]}],
                "outputs": [{"name": "upper"}],
            }
        ).encode(),
    )
    assert json.loads(out.body)["outputs"] == [
        {"name": "upper", "datatype": "BYTES", "shape": [1], "data": ["AB"]}
    ]
    assert models.calls[-1] == ("text", 1)


def test_infer_with_the_binary_extension_both_ways(routes: ProtocolRoutes) -> None:
    x = np.array([1.0, 2.0, 0.1], dtype=np.float32)
    head = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    out = call(
        routes,
        "POST",
        "/v2/models/half_plus_two/infer",
        head + x.tobytes(),
        [(b"Inference-Header-Content-Length", str(len(head)).encode())],
    )
    assert out.status == 200, out.body
    length = int(dict(out.headers)[b"inference-header-content-length"])
    answer = json.loads(out.body[:length])
    assert answer["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 12}}
    ]
    np.testing.assert_array_equal(
        np.frombuffer(out.body[length:], dtype="<f4"), x * np.float32(0.5) + np.float32(2)
    )
    # every output binary, from the request's parameters; BYTES with their length prefixes
    body = json.dumps(
        {
            "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "bc"]}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    out = call(routes, "POST", "/v2/models/text/infer", body)
    length = int(dict(out.headers)[b"inference-header-content-length"])
    sizes = [o["parameters"]["binary_data_size"] for o in json.loads(out.body[:length])["outputs"]]
    assert sizes == [8, 4 + 1 + 4 + 2, 4 + 1 + 4 + 2] and len(out.body) == length + sum(sizes)
    assert (
        out.body[length + 8 : length + 8 + sizes[1]]
        == struct.pack("<I", 1) + b"A" + struct.pack("<I", 2) + b"BC"
    )


def test_repository_index(routes: ProtocolRoutes, models: FakeModels) -> None:
    models.states[("text", 1)] = {"state": "loading"}
    models.states[("text", 2)] = {"state": "failed", "reason": "corrupt"}
    models.states[("half_plus_two", 123)] = {"state": "available", "in_memory": False}
    index = json.loads(call(routes, "POST", "/v2/repository/index").body)
    assert index == [
        {
            "name": "half_plus_two",
            "version": "123",
            "state": "READY",
            "reason": "not in memory: loaded by its first request",
        },
        {"name": "text", "version": "1", "state": "LOADING", "reason": ""},
        {"name": "text", "version": "2", "state": "UNAVAILABLE", "reason": "corrupt"},
    ]
    ready = json.loads(call(routes, "POST", "/v2/repository/index", b'{"ready": true}').body)
    assert [m["name"] for m in ready] == ["half_plus_two"]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"),
    [
        ("POST", "/v2/models/nope/infer", infer_body([1]), [], 404, "'nope' is not served"),
        ("POST", "/v2/models/half_plus_two/versions/9/infer", infer_body([1]), [], 404, "no version 9"),
        ("POST", "/v2/models/half_plus_two/infer", b"{", [], 400, "not JSON"),
        ("POST", "/v2/models/half_plus_two/infer", b"[]", [], 400, "JSON object"),
        ("POST", "/v2/models/half_plus_two/infer", b'{"inputs": []}', [], 400, "no inputs"),
        (
            "POST",
            "/v2/models/half_plus_two/infer",
            json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}).encode(),
            [],
            400,
            "is FP32, the request says FP64",
        ),
        (
            "POST",
            "/v2/models/half_plus_two/infer",
            infer_body([1], outputs=[{"name": "z"}]),
            [],
            400,
            "no output(s) z",
        ),
        (
            "POST",
            "/v2/models/half_plus_two/infer",
            infer_body([1]),
            [(b"inference-header-content-length", b"999")],
            400,
            "does not fit",
        ),
        (
            "POST",
            "/v2/models/half_plus_two/infer",
            json.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
                    ]
                }
            ).encode(),
            [],
            400,
            "goes past the body",
        ),
        ("GET", "/v2/models/half_plus_two/infer", b"", [], 405, "POST"),
        ("POST", "/v2/health/live", b"", [], 405, "GET"),
        ("GET", "/v2/models/half_plus_two/versions/abc", b"", [], 400, "positive integer"),
        (
            "GET",
            "/v2/models/half_plus_two/versions/\u00b2",
            b"",
            [],
            400,
            "positive integer",
        ),  # (isdigit, not int)
        ("GET", "/v2/models/half_plus_two/versions/" + "9" * 40, b"", [], 400, "positive integer"),
        ("GET", "/v2/elsewhere", b"", [], 404, "no such route"),
    ],
)
def test_errors(
    routes: ProtocolRoutes, method: str, path: str, body: bytes, headers: list, status: int, message: str
) -> None:
    out = call(routes, method, path, body, headers)
    answer = json.loads(out.body)
    assert (out.status, list(answer)) == (status, ["error"]), answer
    assert message in answer["error"]


@pytest.mark.parametrize("path", ["/v2/models/half_plus_two/infer", "/v1/models/half_plus_two:predict"])
def test_json_nested_too_deep_or_with_a_huge_number_is_a_400(path: str) -> None:
    routes = ProtocolRoutes(FakeModels(), ("v1", "v2"))
    for body in (
        b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"inputs": [' + b"9" * 5000 + b"]}",
    ):
        out = call(routes, "POST", path, body)
        assert out.status == 400 and "not JSON" in json.loads(out.body)["error"], out.body[:200]


def test_model_configuration_as_triton_writes_it(routes: ProtocolRoutes) -> None:
    body = json.loads(call(routes, "GET", "/v2/models/text/config").body)
    assert body == {
        "name": "text",
        "platform": "tensorflow_savedmodel",
        "backend": "tensorflow",
        "version_policy": {"all": {}},
        "max_batch_size": 0,
        "input": [
            {
                "name": "text",
                "data_type": "TYPE_STRING",
                "format": "FORMAT_NONE",
                "dims": [-1],
                "is_shape_tensor": False,
                "allow_ragged_batch": False,
                "optional": False,
            }
        ],
        "output": [
            {"name": n, "data_type": t, "dims": [-1], "label_filename": "", "is_shape_tensor": False}
            for n, t in (("length", "TYPE_INT32"), ("raw_bytes", "TYPE_STRING"), ("upper", "TYPE_STRING"))
        ],
    }
    half = json.loads(call(routes, "GET", "/v2/models/half_plus_two/versions/123/config").body)
    assert [(i["name"], i["data_type"]) for i in half["input"]] == [("x", "TYPE_FP32")]
    assert call(routes, "GET", "/v2/models/half_plus_two/versions/9/config").status == 404
    refused = call(routes, "POST", "/v2/models/text/config")
    assert refused.status == 405 and (b"allow", b"GET, HEAD") in refused.headers


def test_statistics_count_this_replicas_requests_per_version(
    routes: ProtocolRoutes, models: FakeModels
) -> None:
    def stats(path: str) -> list[dict[str, object]]:
        out = call(routes, "GET", path)
        assert out.status == 200, out.body
        return json.loads(out.body)["model_stats"]  # type: ignore[no-any-return]

    before = stats("/v2/models/stats")
    assert [(m["name"], m["version"], m["inference_count"]) for m in before] == [
        ("half_plus_two", "123", 0),
        ("text", "1", 0),
        ("text", "2", 0),
    ]
    assert before[0]["inference_stats"]["success"] == {"count": 0, "ns": 0}  # type: ignore[index]
    for data in ([1.0, 2.0], [3.0, 4.0, 5.0]):
        assert call(routes, "POST", "/v2/models/half_plus_two/infer", infer_body(data)).status == 200
    bad = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}).encode()
    assert call(routes, "POST", "/v2/models/half_plus_two/infer", bad).status == 400
    assert call(routes, "POST", "/v2/models/nope/infer", infer_body([1.0])).status == 404  # (no version)
    (half,) = stats("/v2/models/half_plus_two/stats")
    assert half["inference_count"] == 2 and half["execution_count"] == 2  # (one per request, as Triton's
    # count for a model without a batch dimension: max_batch_size 0)
    inference = half["inference_stats"]
    assert inference["success"]["count"] == 2 and inference["success"]["ns"] > 0  # type: ignore[index]
    assert inference["fail"]["count"] == 1  # type: ignore[index]
    for phase in ("compute_input", "compute_infer", "compute_output"):
        assert inference[phase]["count"] == 2 and inference[phase]["ns"] > 0, phase  # type: ignore[index]
    assert inference["queue"] == {"count": 0, "ns": 0}  # type: ignore[index]
    assert half["last_inference"] > 1_700_000_000_000  # type: ignore[operator]
    assert stats("/v2/models/half_plus_two/versions/123/stats") == [half]
    assert stats("/v2/models/text/stats")[0]["execution_count"] == 0
    assert call(routes, "GET", "/v2/models/nope/stats").status == 404
    # a version gone from the tree is forgotten
    models.tree = FakeModels({"text": [1, 2]}).tree
    assert [m["name"] for m in stats("/v2/models/stats")] == ["text", "text"]
    models.tree = FakeModels().tree
    assert stats("/v2/models/half_plus_two/stats")[0]["execution_count"] == 0
    # ...and when a new version is counted, those no longer served are forgotten too
    assert call(routes, "POST", "/v2/models/half_plus_two/infer", infer_body([1.0])).status == 200
    models.tree = FakeModels({"half_plus_two": [124], "text": [1, 2]}).tree
    assert call(routes, "POST", "/v2/models/half_plus_two/infer", infer_body([1.0])).status == 200
    assert sorted(routes._v2.stats._versions) == [("half_plus_two", 124)]  # type: ignore[union-attr]
