"""TF Serving's ``:classify`` / ``:regress`` pieces: JSON examples written as ``tf.Example`` protos
(read back with TensorFlow's own message class), signatures checked, results shaped as TF
Serving's ``json_tensor`` writes them."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from cortex_ray.errors import BadRequestError
from cortex_ray.protocols import Signature, TensorSpec
from cortex_ray.protocols.examples import (
    CLASSIFY,
    PREDICT,
    REGRESS,
    check_signature,
    classify_results,
    regress_results,
    serialize,
)


def read(serialized: bytes) -> dict[str, tuple[str, list[Any]]]:
    """A serialized tf.Example as {feature: (kind, values)}, by TensorFlow's own parser."""
    example_pb2 = pytest.importorskip("tensorflow.core.example.example_pb2")
    example = example_pb2.Example.FromString(serialized)
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value) if kind else [])
    return out


def test_features_are_typed_as_tf_serving_types_them() -> None:
    (one,) = serialize(
        {
            "examples": [
                {
                    "f": 2.0,
                    "fs": [0.5, -1.25, 1e-3],
                    "i": 3,
                    "neg": [-1, -(2**63), 2**63 - 1],
                    "flag": [True, False],
                    "s": "héllo",
                    "b": {"b64": base64.b64encode(b"\x00\xff").decode()},
                    "mixed_bytes": ["a", {"b64": "Yg=="}],
                    "none": [],
                }
            ]
        }
    )
    features = read(one)
    assert features["f"] == ("float_list", [2.0])
    assert features["fs"][0] == "float_list"
    assert features["fs"][1] == pytest.approx([0.5, -1.25, 1e-3])
    assert features["i"] == ("int64_list", [3])
    assert features["neg"] == ("int64_list", [-1, -(2**63), 2**63 - 1])
    assert features["flag"] == ("int64_list", [1, 0])
    assert features["s"] == ("bytes_list", ["héllo".encode()])
    assert features["b"] == ("bytes_list", [b"\x00\xff"])
    assert features["mixed_bytes"] == ("bytes_list", [b"a", b"b"])
    assert features["none"] == (None, [])


def test_the_context_is_merged_into_every_example_and_an_example_wins() -> None:
    a, b, empty = serialize(
        {"context": {"shared": "c", "x2": 1.0}, "examples": [{"x": 2.0}, {"x": 1.0, "x2": 4.0}, {}]}
    )
    assert read(a) == {
        "shared": ("bytes_list", [b"c"]),
        "x2": ("float_list", [1.0]),
        "x": ("float_list", [2.0]),
    }
    assert read(b)["x2"] == ("float_list", [4.0])
    assert read(empty) == {"shared": ("bytes_list", [b"c"]), "x2": ("float_list", [1.0])}
    assert read(serialize({"examples": [{}]})[0]) == {}


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({}, "must hold 'examples'"),
        ({"examples": {"x": 1}}, "must be a list"),
        ({"examples": []}, "empty list"),
        ({"examples": [[1.0]]}, "example 0 must be a JSON object"),
        ({"examples": [{"x": 1.0}], "context": [1]}, "'context' must be a JSON object"),
        ({"examples": [{"x": None}]}, "feature 'x' has a value of an unexpected JSON type: null"),
        ({"examples": [{"x": [[1.0]]}]}, "unexpected JSON type: a list"),
        ({"examples": [{"x": {"a": 1}}]}, "unexpected JSON type: an object"),
        ({"examples": [{"x": [1.0, 2]}]}, "feature 'x' mixes kinds of values: int64 after float"),
        ({"examples": [{"x": ["a", 2.5]}]}, "float after bytes"),
        ({"examples": [{"x": 2**63}]}, "does not fit an int64"),
        ({"examples": [{"x": 1e300}]}, "without loss of precision"),
        ({"examples": [{"x": {"b64": "***"}}]}, "not base64"),
        ({"examples": [{"x": "\ud800"}]}, "feature 'x' is not valid Unicode"),  # (JSON's lone surrogate)
        ({"examples": [{"\udfff": 1}]}, "example 0: a feature name is not valid Unicode"),
    ],
)
def test_bad_examples_are_400s_that_say_what(request_body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequestError, match=message) as caught:
        serialize(request_body)
    assert caught.value.status_code == 400


def signature(method: str, inputs: list[tuple[str, str]], outputs: list[str]) -> Signature:
    return Signature(
        tuple(TensorSpec(n, d, (-1,)) for n, d in inputs),
        tuple(TensorSpec(n, "FP32", (-1, -1)) for n in outputs),
        "sig",
        method=method,
    )


def test_a_signature_fits_a_verb_by_its_method_or_by_its_shape() -> None:
    assert check_signature(signature(CLASSIFY, [("inputs", "BYTES")], ["scores"]), "classify") == "inputs"
    assert check_signature(signature(CLASSIFY, [("ex", "BYTES")], ["classes", "scores"]), "classify") == "ex"
    assert check_signature(signature(REGRESS, [("inputs", "BYTES")], ["outputs"]), "regress") == "inputs"
    # tf.saved_model.save writes "predict" for every signature: such a model qualifies by its shape
    assert check_signature(signature(PREDICT, [("inputs", "BYTES")], ["scores"]), "classify") == "inputs"
    with pytest.raises(BadRequestError, match=f"method_name is {REGRESS}, expected {CLASSIFY}"):
        check_signature(signature(REGRESS, [("inputs", "BYTES")], ["outputs"]), "classify")
    with pytest.raises(BadRequestError, match=r"one string input .* it takes x \(FP32\)"):
        check_signature(signature(CLASSIFY, [("x", "FP32")], ["scores"]), "classify")
    with pytest.raises(BadRequestError, match=r"it takes a .*, b "):
        check_signature(signature(PREDICT, [("a", "BYTES"), ("b", "BYTES")], ["scores"]), "classify")
    with pytest.raises(BadRequestError, match="outputs must be outputs, it has y"):
        check_signature(signature(PREDICT, [("inputs", "BYTES")], ["y"]), "regress")
    with pytest.raises(BadRequestError, match="classes and/or scores, it has scores, y"):
        check_signature(signature(CLASSIFY, [("inputs", "BYTES")], ["scores", "y"]), "classify")


def strings(rows: list[list[str]]) -> np.ndarray:
    out = np.empty((len(rows), len(rows[0])), dtype=object)
    out[:] = [[v.encode() for v in row] for row in rows]
    return out


def test_classify_results_as_tf_serving_writes_them() -> None:
    # json_tensor_test.cc's ClassificationResult, and TF Serving's testClassifyREST: no classes -> ""
    classes = strings([["car", "bike", "bus"], ["car", "bike", "bus"]])
    scores = np.array([[0.2, 0.7, 0.1], [0.7, 0.1, 0.2]], dtype=np.float32)
    assert classify_results({"classes": classes, "scores": scores}, 2) == [
        [["car", 0.2], ["bike", 0.7], ["bus", 0.1]],
        [["car", 0.7], ["bike", 0.1], ["bus", 0.2]],
    ]
    assert classify_results({"scores": np.array([[3.0]], dtype=np.float32)}, 1) == [[["", 3.0]]]
    assert classify_results({"classes": strings([["a", "b"]])}, 1) == [[["a", 0.0], ["b", 0.0]]]


@pytest.mark.parametrize(
    ("outputs", "count", "message"),
    [
        ({"scores": np.zeros(2, dtype=np.float32)}, 2, r"scores have shape \[2\]: expected \[2, classes\]"),
        ({"scores": np.zeros((3, 1), dtype=np.float32)}, 2, "for 2 example"),
        ({"scores": np.zeros((1, 1), dtype=np.int64)}, 1, "scores are int64, expected floats"),
        ({"classes": np.zeros((1, 1), dtype=np.float32)}, 1, "classes are float32, expected strings"),
        (
            {"classes": strings([["a", "b"]]), "scores": np.zeros((1, 3), dtype=np.float32)},
            1,
            "2 classes, 3 scores",
        ),
        ({}, 1, "neither classes nor scores"),
    ],
)
def test_classify_outputs_of_the_wrong_shape_say_so(
    outputs: dict[str, np.ndarray], count: int, message: str
) -> None:
    with pytest.raises(BadRequestError, match=message):
        classify_results(outputs, count)


def test_regress_results_take_a_batch_or_a_batch_of_ones() -> None:
    assert regress_results({"outputs": np.array([3.0, 0.1], dtype=np.float32)}, 2) == [3.0, 0.1]
    assert regress_results({"outputs": np.array([[3.0], [2.5]], dtype=np.float32)}, 2) == [3.0, 2.5]
    with pytest.raises(BadRequestError, match=r"shape \[2, 2\]: expected \[2\] or \[2, 1\]"):
        regress_results({"outputs": np.zeros((2, 2), dtype=np.float32)}, 2)
    with pytest.raises(BadRequestError, match="no 'outputs'"):
        regress_results({"y": np.zeros(2, dtype=np.float32)}, 2)
    with pytest.raises(BadRequestError, match="expected floats"):
        regress_results({"outputs": np.zeros(2, dtype=np.int32)}, 2)
