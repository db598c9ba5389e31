"""TF Serving's ``:classify`` and ``:regress``: JSON examples in, results out.

A request is ``{"examples": [{feature: value | [values]}, ...], "context": {...},
"signature_name": "..."}`` (``context`` optional: features shared by every example, merged into
each, an example's own feature winning). Each example becomes a serialized ``tf.Example``, written
here in protobuf's wire format (no TensorFlow import), by TF Serving's typing rules: a JSON
integer or boolean is an ``int64_list``, a number with a fraction or exponent a ``float_list``, a
string or ``{"b64": ...}`` a ``bytes_list``; one feature's values share one kind.

The signature takes the serialized examples as its one string input. A ``:classify`` signature
answers ``classes`` (strings) and/or ``scores`` (floats), each ``[examples, classes]``; the answer
is ``{"results": [[[label, score], ...] per example]}`` (a missing label is ``""``, a missing
score ``0.0``). A ``:regress`` signature answers ``outputs``, ``[examples]`` or ``[examples, 1]``;
the answer is ``{"results": [value per example]}``.

The signature's method must be the verb's (``tensorflow/serving/classify`` or ``.../regress``), as
TF Serving requires, or ``tensorflow/serving/predict``: ``tf.saved_model.save`` writes that method
for every signature, so a TF2 model qualifies by its shape (one string input, the verb's outputs).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Any

import numpy as np

from cortex_ray.errors import BadRequestError
from cortex_ray.protocols.models import Signature
from cortex_ray.protocols.tensors import shortest_floats

__all__ = [
    "CLASSIFY",
    "PREDICT",
    "REGRESS",
    "check_signature",
    "classify_results",
    "regress_results",
    "serialize",
]

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"

_METHODS = {"classify": CLASSIFY, "regress": REGRESS}
_OUTPUTS = {"classify": {"classes", "scores"}, "regress": {"outputs"}}
_INT64 = 1 << 63
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# a Feature's oneof: bytes_list = 1, float_list = 2, int64_list = 3
_BYTES, _FLOATS, _INTS = 1, 2, 3
_KIND_NAMES = {_BYTES: "bytes", _FLOATS: "float", _INTS: "int64"}


def serialize(request: dict[str, Any]) -> list[bytes]:
    """The request's examples as serialized ``tf.Example`` protos, the context merged into each."""
    examples = request.get("examples")
    if examples is None:
        raise BadRequestError("the request must hold 'examples': a list of objects, one per example")
    if not isinstance(examples, list):
        raise BadRequestError("'examples' must be a list of objects, one per example")
    if not examples:
        raise BadRequestError("'examples' is an empty list")
    context = request.get("context")
    shared = b"" if context is None else _example(context, "'context'")
    # (a message written twice reads as the two merged: the example's features win over the context's)
    return [shared + _example(e, f"example {i}") for i, e in enumerate(examples)]


def check_signature(signature: Signature, verb: str) -> str:
    """The name of the signature's one input, once it fits ``verb`` (``classify``, ``regress``)."""
    method, key = _METHODS[verb], signature.key or "the default"
    if signature.method not in (method, PREDICT, ""):
        raise BadRequestError(
            f"signature '{key}' cannot :{verb}: its method_name is {signature.method}, expected {method}"
        )
    inputs = signature.inputs
    if len(inputs) != 1 or inputs[0].datatype != "BYTES":
        taking = ", ".join(f"{s.name} ({s.datatype})" for s in inputs) or "nothing"
        raise BadRequestError(
            f"signature '{key}' cannot :{verb}: it must take one string input (serialized tf.Example "
            f"protos), it takes {taking}"
        )
    outputs = {s.name for s in signature.outputs}
    allowed = _OUTPUTS[verb]
    if not outputs or not outputs <= allowed:
        raise BadRequestError(
            f"signature '{key}' cannot :{verb}: its outputs must be {' and/or '.join(sorted(allowed))}, "
            f"it has {', '.join(sorted(outputs)) or 'none'}"
        )
    return inputs[0].name


def classify_results(outputs: dict[str, np.ndarray], count: int) -> list[list[list[Any]]]:
    classes, scores = outputs.get("classes"), outputs.get("scores")
    width = None
    if classes is not None:
        classes = np.asarray(classes)
        if classes.dtype.kind not in "OSU":
            raise BadRequestError(f"the signature's classes are {classes.dtype}, expected strings")
        width = _batch_shape("classes", classes, count)
    if scores is not None:
        scores = np.asarray(scores)
        if scores.dtype.kind != "f":
            raise BadRequestError(f"the signature's scores are {scores.dtype}, expected floats")
        scores_width = _batch_shape("scores", scores, count)
        if width is not None and scores_width != width:
            raise BadRequestError(
                f"the signature's classes and scores differ in size: {width} classes, {scores_width} scores"
            )
        width = scores_width
    if width is None:
        raise BadRequestError("the signature answered neither classes nor scores")
    labels = [[""] * width] * count if classes is None else [[_text(v) for v in row] for row in classes]
    values = (
        [[0.0] * width] * count
        if scores is None
        else [shortest_floats(row.astype(np.float32)) for row in scores]
    )
    return [
        [[label, score] for label, score in zip(ls, vs, strict=True)]
        for ls, vs in zip(labels, values, strict=True)
    ]


def regress_results(outputs: dict[str, np.ndarray], count: int) -> list[float]:
    values = outputs.get("outputs")
    if values is None:
        raise BadRequestError("the signature answered no 'outputs'")
    values = np.asarray(values)
    if values.dtype.kind != "f":
        raise BadRequestError(f"the signature's outputs are {values.dtype}, expected floats")
    if values.shape not in ((count,), (count, 1)):
        raise BadRequestError(
            f"the signature's outputs have shape {list(values.shape)}: expected [{count}] or [{count}, 1] "
            f"for {count} example(s)"
        )
    return shortest_floats(values.reshape(-1).astype(np.float32))


def _batch_shape(name: str, array: np.ndarray, count: int) -> int:
    if array.ndim != 2 or array.shape[0] != count:
        raise BadRequestError(
            f"the signature's {name} have shape {list(array.shape)}: expected [{count}, classes] for "
            f"{count} example(s)"
        )
    return int(array.shape[1])


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# protobuf's wire format, for tf.Example's four messages


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a message, bytes, a string or a packed list)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _example(value: Any, what: str) -> bytes:
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} must be a JSON object of features, got {_json_type(value)}")
    entries = b"".join(
        _field(1, _field(1, _utf8(name, f"{what}: a feature name")) + _field(2, _feature(name, content)))
        for name, content in value.items()
    )
    return _field(1, entries)  # (Example.features: Features, whose field 1 is the map's entries)


def _feature(name: str, content: Any) -> bytes:
    values = content if isinstance(content, list) else [content]
    kind = 0
    items: list[Any] = []
    for item in values:
        item_kind, item_value = _typed(name, item)
        if kind and item_kind != kind:
            raise BadRequestError(
                f"feature '{name}' mixes kinds of values: {_KIND_NAMES[item_kind]} after {_KIND_NAMES[kind]}"
            )
        kind = item_kind
        items.append(item_value)
    if not kind:
        return b""  # (no values: a feature of no kind)
    if kind == _BYTES:
        payload = b"".join(_field(1, v) for v in items)
    elif kind == _FLOATS:
        payload = _field(1, struct.pack(f"<{len(items)}f", *items))
    else:
        payload = _field(1, b"".join(_varint(v & 0xFFFFFFFFFFFFFFFF) for v in items))
    return _field(kind, payload)


def _typed(name: str, item: Any) -> tuple[int, Any]:
    if isinstance(item, bool):
        return _INTS, int(item)
    if isinstance(item, int):
        if not -_INT64 <= item < _INT64:
            raise BadRequestError(f"feature '{name}': {item} does not fit an int64")
        return _INTS, item
    if isinstance(item, float):
        if math.isfinite(item) and abs(item) > _FLOAT32_MAX:
            raise BadRequestError(f"feature '{name}': {item} cannot be a float without loss of precision")
        return _FLOATS, item
    if isinstance(item, str):
        return _BYTES, _utf8(item, f"feature '{name}'")
    if isinstance(item, dict) and set(item) == {"b64"} and isinstance(item["b64"], str):
        try:
            return _BYTES, base64.b64decode(item["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequestError(f"feature '{name}': a b64 value is not base64: {exc}") from exc
    raise BadRequestError(
        f"feature '{name}' has a value of an unexpected JSON type: {_json_type(item)} (features take "
        'numbers, strings, booleans, {"b64": ...} or a list of one of these)'
    )


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # (JSON's \ud800 escapes: a lone surrogate is no text)
        raise BadRequestError(f"{what} is not valid Unicode: {exc.reason}") from exc


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
