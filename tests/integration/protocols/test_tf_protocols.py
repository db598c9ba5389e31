"""TF Serving's REST API and the Open Inference Protocol of a TensorFlow API, over real HTTP
on a real local Ray Serve, with a real SavedModel (TF Serving's ``half_plus_two``, built here),
on the fast path and on Serve's proxy; v2 through the real ``tritonclient`` too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import tf_models
from tests.support.project import write_handler

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.ray

HANDLER = """
class Handler:
    def __init__(self, tensorflow_client):
        self.client = tensorflow_client

    def handle_post(self, payload):
        return self.client.predict(payload, "half_plus_two")
"""


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tf-protocols")
    tf_models.save_half_plus_two(root / "half_plus_two" / "00000123")  # (TF Serving's test folder)
    tf_models.save_text_model(root / "text" / "1")
    tf_models.save_classifier(root / "clf" / "1")
    tf_models.save_half_plus_two_examples(root / "examples" / "00000123")
    return root


def api(name: str, models: Path) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "RealtimeAPI",
        "handler": {"type": "tensorflow", "path": "handler.py", "models": {"dir": str(models)}},
    }


@pytest.mark.parametrize("ingress", ["fast", "proxy"])
def test_tf_serving_rest_api(
    tmp_path: Path, models_dir: Path, deploy: Any, serve_url: str, proxy_url: str, ingress: str
) -> None:
    write_handler(tmp_path, HANDLER)
    name = f"tfs-{ingress}"
    deploy(tmp_path, [api(name, models_dir)], **({"ingress": "proxy"} if ingress == "proxy" else {}))
    base = f"{serve_url if ingress == 'fast' else proxy_url}/{name}"
    with httpx.Client(base_url=base, timeout=60) as http:
        # TF Serving's own REST tests (tensorflow_model_server_test.py), ported
        r = http.post("/v1/models/half_plus_two:predict", json={"instances": [2.0, 3.0, 4.0]})
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [3.0, 3.5, 4.0]}
        assert r.headers["x-cortex-model-version"] == "half_plus_two=123"
        r = http.post("/v1/models/half_plus_two:predict", json={"inputs": [2.0, 3.0, 4.0]})
        assert r.json() == {"outputs": [3.0, 3.5, 4.0]}
        r = http.get("/v1/models/half_plus_two")
        assert r.json() == {
            "model_version_status": [
                {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        }
        # a version named with leading zeros, as TF Serving reads it; the handler path still works
        r = http.post("/v1/models/half_plus_two/versions/0123:predict", json={"instances": [{"x": 1.0}]})
        assert r.json() == {"predictions": [2.5]}
        assert http.post("", json={"x": [1.0]}).json() == {"y": [2.5]}
        meta = http.get("/v1/models/half_plus_two/metadata").json()
        assert meta["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
        serving = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert serving["method_name"] == "tensorflow/serving/predict"
        assert serving["inputs"]["x"]["dtype"] == "DT_FLOAT"
        assert serving["inputs"]["x"]["tensor_shape"] == {
            "dim": [{"size": "-1", "name": ""}],
            "unknown_rank": False,
        }
        assert serving["outputs"]["y"]["dtype"] == "DT_FLOAT"
        # several outputs: an object per instance; strings and b64
        r = http.post("/v1/models/clf:predict", json={"instances": [[1, 0, 0, 0], [0, 0, 0, 1]]})
        assert r.json() == {
            "predictions": [
                {"label": 2, "scores": [0.0, 1.0, 2.0]},
                {"label": 2, "scores": [9.0, 10.0, 11.0]},
            ]
        }
        r = http.post("/v1/models/text:predict", json={"instances": ["ab", {"b64": "Y2Rl"}]})
        assert r.json() == {"predictions": [{"length": 2, "upper": "AB"}, {"length": 3, "upper": "CDE"}]}
        # :classify and :regress (testClassifyREST, testRegressREST), on a TF1 graph that parses tf.Example
        r = http.post(
            "/v1/models/examples:classify",
            json={"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
        )
        assert (r.status_code, r.json()) == (200, {"results": [[["", 3.0]]]}), r.text
        assert r.headers["x-cortex-model-version"] == "examples=123"
        r = http.post(
            "/v1/models/examples/versions/123:regress",
            json={"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": [-4.0]}]},
        )
        assert (r.status_code, r.json()) == (200, {"results": [3.0, 0.0]}), r.text
        r = http.post(
            "/v1/models/examples:classify",
            json={
                "signature_name": "classify_x2_to_y3",
                "context": {"x": 0.0, "x2": 4.0},
                "examples": [{}, {"x2": 2.0}],
            },
        )
        assert r.json() == {"results": [[["", 5.0]], [["", 4.0]]]}  # (the context, then an example's own x2)
        r = http.post(
            "/v1/models/examples:regress", json={"signature_name": "classify_x_to_y", "examples": [{}]}
        )
        assert r.status_code == 400 and "method_name is tensorflow/serving/classify" in r.json()["error"]
        r = http.post(
            "/v1/models/examples:classify", json={"examples": [{"x": 1.0}]}
        )  # ("predict" answers y)
        assert r.status_code == 400 and "outputs must be classes and/or scores" in r.json()["error"]
        r = http.post(
            "/v1/models/examples:regress", json={"signature_name": "regress_x_to_y", "examples": [{"x": 2}]}
        )
        assert r.status_code == 400 and "the input was rejected" in r.json()["error"]  # (int64 where float)
        # errors: {"error": ...} with TF Serving's statuses
        r = http.post("/v1/models/nope:predict", json={"instances": [1.0]})
        assert r.status_code == 404 and "nope" in r.json()["error"]
        r = http.post("/v1/models/half_plus_two/versions/7:predict", json={"instances": [1.0]})
        assert r.status_code == 404 and "version 7" in r.json()["error"]
        r = http.post("/v1/models/half_plus_two:predict", json={"instances": [[1.0, 2.0], [3.0]]})
        assert r.status_code == 400 and set(r.json()) == {"error"}
        r = http.post("/v1/models/half_plus_two:predict", content=b"{not json")
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = http.post("/v1/models/half_plus_two:predict", json={"instances": ["a"]})
        assert r.status_code == 400, r.text
        r = http.get("/v1/models/half_plus_two:predict")
        assert r.status_code == 405


@pytest.mark.parametrize("ingress", ["fast", "proxy"])
def test_open_inference_protocol_with_tritonclient(
    tmp_path: Path, models_dir: Path, deploy: Any, serve_url: str, proxy_url: str, ingress: str
) -> None:
    tritonclient = pytest.importorskip("tritonclient.http")
    write_handler(tmp_path, HANDLER)
    name = f"v2-{ingress}"
    deploy(tmp_path, [api(name, models_dir)], **({"ingress": "proxy"} if ingress == "proxy" else {}))
    base = serve_url if ingress == "fast" else proxy_url
    client = tritonclient.InferenceServerClient(f"{base.removeprefix('http://')}/{name}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("half_plus_two") and client.is_model_ready("half_plus_two", "123")
        assert not client.is_model_ready("nope")
        server = client.get_server_metadata()
        assert server["name"] == "cortex-ray" and "binary_tensor_data" in server["extensions"]
        meta = client.get_model_metadata("half_plus_two")
        assert meta == {
            "name": "half_plus_two",
            "versions": ["123"],
            "platform": "tensorflow_savedmodel",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
        }
        index = client.get_model_repository_index()
        assert {(m["name"], m["version"], m["state"]) for m in index} == {
            ("clf", "1", "READY"),
            ("examples", "123", "READY"),
            ("half_plus_two", "123", "READY"),
            ("text", "1", "READY"),
        }
        x = np.array([1.0, 2.0, 0.1], dtype=np.float32)
        for binary_in in (True, False):
            for binary_out in (True, False):
                data = tritonclient.InferInput("x", [3], "FP32")
                data.set_data_from_numpy(x, binary_data=binary_in)
                out = tritonclient.InferRequestedOutput("y", binary_data=binary_out)
                result = client.infer("half_plus_two", [data], outputs=[out], request_id="r1")
                assert result.get_response()["model_version"] == "123"
                assert result.get_response()["id"] == "r1"
                np.testing.assert_array_equal(result.as_numpy("y"), x * np.float32(0.5) + np.float32(2.0))
        text = tritonclient.InferInput("text", [2], "BYTES")
        text.set_data_from_numpy(np.array([b"ab", b"xyz"], dtype=object), binary_data=True)
        result = client.infer("text", [text], model_version="1")
        assert result.as_numpy("length").tolist() == [2, 3]
        assert result.as_numpy("upper").tolist() == [b"AB", b"XYZ"]
        # the protocol's errors
        with pytest.raises(Exception, match="is FP32, the request says FP64"):
            wrong = tritonclient.InferInput("x", [1], "FP64")
            wrong.set_data_from_numpy(np.array([1.0]), binary_data=False)
            client.infer("half_plus_two", [wrong])
        with pytest.raises(Exception, match="no version 9"):
            data = tritonclient.InferInput("x", [1], "FP32")
            data.set_data_from_numpy(np.array([1.0], dtype=np.float32))
            client.infer("half_plus_two", [data], model_version="9")
        # Triton's model configuration and statistics extensions
        config = client.get_model_config("half_plus_two")
        assert (config["name"], config["platform"], config["max_batch_size"]) == (
            "half_plus_two",
            "tensorflow_savedmodel",
            0,
        )
        assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("x", "TYPE_FP32", [-1])]
        (stats,) = client.get_inference_statistics("half_plus_two")["model_stats"]
        assert (stats["name"], stats["version"]) == ("half_plus_two", "123")
        # (one replica: 4 requests; the FP64 one failed, the version 9 one named no version)
        assert (stats["inference_count"], stats["execution_count"]) == (4, 4)
        assert stats["inference_stats"]["success"]["count"] == 4
        assert stats["inference_stats"]["fail"]["count"] == 1
    finally:
        client.close()
    with httpx.Client(base_url=f"{base}/{name}", timeout=60) as http:
        r = http.post(
            "/v2/models/half_plus_two/infer",
            json={"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]},
        )
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json()["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [2], "data": [2.5, 3.0]}]
        r = http.post(
            "/v2/models/half_plus_two/infer",
            json={"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]},
        )
        assert r.status_code == 400 and "2 values for shape [3]" in r.json()["error"]
        assert http.get("/v2/models/nope").status_code == 404
        assert http.get("/v2/models/half_plus_two/infer").status_code == 405
