"""TF Serving's REST API on a fake API's models (no Ray, no TF): TF Serving's own request and
response pairs (tensorflow_model_server_test.py), rows, columns, b64, errors."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from cortex_ray.protocols import ProtocolRoutes, Signature, TensorSpec
from cortex_ray.protocols.examples import CLASSIFY
from tests.unit.protocols.fake import FakeModels, call


@pytest.fixture
def models() -> FakeModels:
    return FakeModels()


@pytest.fixture
def routes(models: FakeModels) -> ProtocolRoutes:
    return ProtocolRoutes(models, ("v1", "v2"))


def post(routes: ProtocolRoutes, path: str, body: object) -> tuple[int, object]:
    out = call(routes, "POST", path, json.dumps(body).encode())
    return out.status, json.loads(out.body)


def get(routes: ProtocolRoutes, path: str) -> tuple[int, object]:
    out = call(routes, "GET", path)
    return out.status, json.loads(out.body)


def test_tf_serving_predict_rest_and_columnar(routes: ProtocolRoutes) -> None:
    assert post(routes, "/v1/models/half_plus_two:predict", {"instances": [2.0, 3.0, 4.0]}) == (
        200,
        {"predictions": [3.0, 3.5, 4.0]},
    )
    assert post(routes, "/v1/models/half_plus_two:predict", {"inputs": [2.0, 3.0, 4.0]}) == (
        200,
        {"outputs": [3.0, 3.5, 4.0]},
    )
    assert post(routes, "/v1/models/half_plus_two:predict", {"instances": [{"x": 0.2}]}) == (
        200,
        {"predictions": [2.1]},  # (float32 2.1 written as its shortest decimal)
    )
    assert post(
        routes,
        "/v1/models/half_plus_two:predict",
        {"inputs": {"x": [1]}, "signature_name": "serving_default"},
    ) == (
        200,
        {"outputs": [2.5]},
    )


def test_tf_serving_get_status_rest(routes: ProtocolRoutes, models: FakeModels) -> None:
    assert get(routes, "/v1/models/half_plus_two") == (
        200,
        {
            "model_version_status": [
                {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        },
    )
    models.states[("text", 2)] = {"state": "failed", "reason": "corrupt"}
    models.states[("text", 1)] = {"state": "loading"}
    _status, body = get(routes, "/v1/models/text")
    assert [(s["version"], s["state"], s["status"]["error_code"]) for s in body["model_version_status"]] == [  # type: ignore[index]
        ("1", "LOADING", "OK"),
        ("2", "END", "UNKNOWN"),
    ]
    assert (
        get(routes, "/v1/models/text/versions/2")[1]["model_version_status"][0]["status"]["error_message"]
        == "corrupt"
    )  # type: ignore[index]


def test_metadata_names_the_version_served(routes: ProtocolRoutes) -> None:
    status, body = get(routes, "/v1/models/text/metadata")
    assert status == 200 and body == {
        "model_spec": {"name": "text", "signature_name": "", "version": "2"},
        "metadata": {
            "signature_def": {
                "signature_def": {"serving_default": {"method_name": "tensorflow/serving/predict"}}
            }
        },
    }
    assert get(routes, "/v1/models/text/versions/0001/metadata")[1]["model_spec"]["version"] == "1"  # type: ignore[index]


def test_several_outputs_bytes_and_b64(routes: ProtocolRoutes) -> None:
    status, body = post(
        routes, "/v1/models/text:predict", {"instances": ["ab", {"b64": base64.b64encode(b"c").decode()}]}
    )
    raw = base64.b64encode(b"AB").decode()
    assert status == 200 and body == {
        "predictions": [
            {"length": 2, "raw_bytes": {"b64": raw}, "upper": "AB"},
            {"length": 1, "raw_bytes": {"b64": "Qw=="}, "upper": "C"},
        ]
    }
    status, body = post(routes, "/v1/models/text/versions/1:predict", {"inputs": {"text": ["x"]}})
    assert body == {"outputs": {"length": [1], "raw_bytes": [{"b64": "WA=="}], "upper": ["X"]}}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        (
            "POST",
            "/v1/models/nope:predict",
            {"instances": [1]},
            404,
            "Could not find any versions of model nope",
        ),
        ("POST", "/v1/models/half_plus_two/versions/7:predict", {"instances": [1]}, 404, "version 7"),
        ("POST", "/v1/models/half_plus_two/labels/stable:predict", {"instances": [1]}, 404, "labels"),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            {"instances": [[1.0, 2.0], [3.0]]},
            400,
            "do not form a tensor",
        ),
        ("POST", "/v1/models/half_plus_two:predict", {}, 400, "exactly one of 'instances'"),
        ("POST", "/v1/models/half_plus_two:predict", {"instances": [1], "inputs": [1]}, 400, "exactly one"),
        ("POST", "/v1/models/half_plus_two:predict", {"instances": []}, 400, "non-empty list"),
        ("POST", "/v1/models/half_plus_two:predict", {"instances": [1], "signature_name": 3}, 400, "string"),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            {"instances": [1], "signature_name": "other"},
            400,
            "no signature",
        ),
        ("POST", "/v1/models/half_plus_two:predict", {"instances": [{"b64": "!!"}]}, 400, "not base64"),
        ("POST", "/v1/models/half_plus_two:predict", {"instances": [{"x": 1}, 2]}, 400, "mixes"),
        ("POST", "/v1/models/half_plus_two:predict", {"instances": [{"x": 1}, {"z": 2}]}, 400, "same inputs"),
        ("POST", "/v1/models/half_plus_two:explain", {"examples": []}, 400, "not a TF Serving verb"),
        ("POST", "/v1/models/half_plus_two:classify", {"examples": []}, 400, "'examples' is an empty list"),
        ("POST", "/v1/models/half_plus_two:regress", {"instances": [1]}, 400, "must hold 'examples'"),
        ("GET", "/v1/models/half_plus_two:regress", None, 405, "POST"),
        ("POST", "/v1/models/half_plus_two/versions/x:predict", {"instances": [1]}, 400, "positive integer"),
        (
            "POST",
            "/v1/models/half_plus_two/versions/\u00b2:predict",
            {"instances": [1]},
            400,
            "positive integer",
        ),
        ("GET", "/v1/models/half_plus_two:predict", None, 405, "POST"),
        ("POST", "/v1/models/half_plus_two", {}, 405, "GET"),
        ("GET", "/v1/models/half_plus_two/other", None, 404, "no such route"),
    ],
)
def test_errors_are_tf_serving_shaped(
    routes: ProtocolRoutes, method: str, path: str, body: object, status: int, message: str
) -> None:
    out = call(routes, method, path, b"" if body is None else json.dumps(body).encode())
    answer = json.loads(out.body)
    assert (out.status, list(answer)) == (status, ["error"]), answer
    assert message in answer["error"]


def test_a_body_that_is_not_json_is_a_400(routes: ProtocolRoutes) -> None:
    out = call(routes, "POST", "/v1/models/half_plus_two:predict", b"{nope")
    assert out.status == 400 and "not JSON" in json.loads(out.body)["error"]


def test_only_the_protocols_switched_on_are_served(models: FakeModels) -> None:
    routes = ProtocolRoutes(models, ("v2",))
    assert routes.serves("/v2/health/live") and not routes.serves("/v1/models/half_plus_two")
    assert not routes.serves("/v3") and not routes.serves("/info")


def test_classify_and_regress_feed_the_examples_to_the_signature(models: FakeModels) -> None:
    """The route's part: the serialized examples go to the signature's one string input, the
    ``signature_name`` is passed on, the outputs are shaped (the encoding and the shaping have
    their own tests, and the real SavedModel its integration test)."""
    fed: list[tuple[str | None, dict[str, np.ndarray]]] = []
    signature = Signature(
        (TensorSpec("inputs", "BYTES", (-1,)),),
        (TensorSpec("scores", "FP32", (-1, 1)),),
        "c",
        method=CLASSIFY,
    )

    async def infer(
        name: str, version: int | None, prepare: Any, key: str | None, used: dict[str, Any]
    ) -> Any:
        inputs = prepare(signature)
        fed.append((key, inputs))
        return {"scores": np.arange(len(inputs["inputs"]), dtype=np.float32).reshape(-1, 1)}, 123

    models.infer = infer  # type: ignore[method-assign]
    routes = ProtocolRoutes(models, ("v1",))
    body = {"signature_name": "c", "context": {"k": 1}, "examples": [{"x": 2.0}, {"x": 3.0}]}
    assert post(routes, "/v1/models/half_plus_two:classify", body) == (
        200,
        {"results": [[["", 0.0]], [["", 1.0]]]},
    )
    ((key, inputs),) = fed
    assert key == "c" and list(inputs) == ["inputs"]
    assert inputs["inputs"].shape == (2,) and all(isinstance(v, bytes) for v in inputs["inputs"])
    status, answer = post(routes, "/v1/models/half_plus_two:regress", body)
    assert status == 400 and "method_name is tensorflow/serving/classify" in answer["error"]  # type: ignore[index]


def test_classify_is_for_tensorflow_apis() -> None:
    models = FakeModels()
    models.platform = "python"  # type: ignore[misc]
    routes = ProtocolRoutes(models, ("v1",))
    status, answer = post(routes, "/v1/models/half_plus_two:classify", {"examples": [{"x": 1.0}]})
    assert status == 400 and "TensorFlow APIs" in answer["error"]  # type: ignore[index]
