"""The Open Inference Protocol's tensors: datatypes, JSON data, the binary extension."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from cortex_ray.errors import BadRequestError
from cortex_ray.protocols.tensors import decode_tensor, encode_tensor

DATATYPES = [
    ("BOOL", [True, False], np.bool_),
    ("UINT8", [0, 255], np.uint8),
    ("UINT16", [0, 65535], np.uint16),
    ("UINT32", [0, 2**32 - 1], np.uint32),
    ("UINT64", [0, 2**64 - 1], np.uint64),
    ("INT8", [-128, 127], np.int8),
    ("INT16", [-(2**15), 2**15 - 1], np.int16),
    ("INT32", [-(2**31), 2**31 - 1], np.int32),
    ("INT64", [-(2**63), 2**63 - 1], np.int64),
    ("FP16", [0.5, -2.0], np.float16),
    ("FP32", [0.1, -2.5], np.float32),
    ("FP64", [0.1, 1e300], np.float64),
]


@pytest.mark.parametrize(("datatype", "data", "dtype"), DATATYPES)
def test_every_datatype_goes_both_ways_as_json_and_binary(datatype: str, data: list, dtype: type) -> None:
    name, array = decode_tensor({"name": "t", "shape": [2, 1], "datatype": datatype, "data": data})
    assert name == "t" and array.dtype == dtype and array.shape == (2, 1)
    as_json, raw = encode_tensor("t", array, binary=False)
    data_out = as_json.pop("data")
    assert raw is None and as_json == {"name": "t", "datatype": datatype, "shape": [2, 1]}
    np.testing.assert_array_equal(
        np.array(data_out, dtype=dtype).reshape(2, 1), array
    )  # (read back: the same)
    as_binary, raw = encode_tensor("t", array, binary=True)
    assert raw is not None and as_binary["parameters"] == {"binary_data_size": len(raw)}
    _, back = decode_tensor({"name": "t", "shape": [2, 1], "datatype": datatype}, raw)
    np.testing.assert_array_equal(back, array)
    assert back.dtype == dtype


def test_bytes_tensors_and_nested_data() -> None:
    _, array = decode_tensor(
        {"name": "s", "shape": [2, 2], "datatype": "BYTES", "data": [["a", "bc"], ["", "é"]]}
    )
    assert array.tolist() == [[b"a", b"bc"], [b"", "é".encode()]]
    _out, raw = encode_tensor("s", array, binary=True)
    assert raw == b"".join(struct.pack("<I", len(v)) + v for v in [b"a", b"bc", b"", "é".encode()])
    _, back = decode_tensor({"name": "s", "shape": [2, 2], "datatype": "BYTES"}, raw)
    assert back.tolist() == array.tolist()
    assert encode_tensor("s", array, binary=False)[0]["data"] == ["a", "bc", "", "é"]


def test_float32_is_written_as_the_double_it_is_and_reads_back_the_same() -> None:
    values = np.array([0.1, 1 / 3, 3.5], dtype=np.float32)
    out, _ = encode_tensor("f", values, binary=False)
    assert out["data"][2] == 3.5 and np.array(out["data"], dtype=np.float32).tolist() == values.tolist()


def test_v1_writes_float32_as_its_shortest_decimal() -> None:
    from cortex_ray.protocols.v1 import to_json

    assert to_json(np.array([[0.1, 1 / 3]], dtype=np.float32), "y") == [[0.1, 0.33333334]]


@pytest.mark.parametrize(
    ("tensor", "raw", "message"),
    [
        ({"name": "t", "shape": [3], "datatype": "FP32", "data": [1, 2]}, None, "2 values for shape [3]"),
        ({"name": "t", "shape": [1], "datatype": "FP8", "data": [1]}, None, "unknown datatype 'FP8'"),
        ({"name": "t", "shape": [1], "datatype": "BF16", "data": [1]}, None, "BF16 is not supported"),
        ({"name": "t", "shape": [-1], "datatype": "FP32", "data": [1]}, None, "negative dimension"),
        ({"name": "t", "shape": "2", "datatype": "FP32", "data": [1]}, None, "shape must be a list"),
        ({"name": "t", "shape": [1], "datatype": "INT8", "data": [300]}, None, "does not fit INT8"),
        ({"name": "t", "shape": [1], "datatype": "INT32", "data": [1.5]}, None, "must be integers"),
        ({"name": "t", "shape": [1], "datatype": "FP32", "data": ["x"]}, None, "must be numbers"),
        ({"name": "t", "shape": [1], "datatype": "BOOL", "data": [1]}, None, "true or false"),
        ({"name": "t", "shape": [2], "datatype": "FP32", "data": [1.0, True]}, None, "must be numbers"),
        ({"name": "t", "shape": [2], "datatype": "INT64", "data": [[1], [None]]}, None, "must be numbers"),
        ({"name": "t", "shape": [1], "datatype": "BYTES", "data": [7]}, None, "must be strings"),
        ({"name": "t", "shape": [2], "datatype": "UINT8", "data": [1, 2.0]}, None, "must be integers"),
        ({"name": "t", "shape": [1], "datatype": "FP32"}, None, "has no data"),
        ({"shape": [1], "datatype": "FP32", "data": [1]}, None, "no name"),
        ({"name": "t", "shape": [2], "datatype": "FP32"}, b"\0" * 7, "7 bytes of binary data"),
        ({"name": "t", "shape": [1], "datatype": "BYTES"}, b"\5\0\0\0ab", "ends inside an element"),
    ],
)
def test_a_tensor_that_does_not_match_what_it_claims_is_a_400(
    tensor: dict, raw: bytes | None, message: str
) -> None:
    with pytest.raises(BadRequestError) as raised:
        decode_tensor(tensor, raw)
    assert message in str(raised.value)


def test_values_from_python_rather_than_json_are_read_as_the_json_types_they_stand_for() -> None:
    import numpy as np

    name, array = decode_tensor(
        {"name": "x", "shape": [3], "datatype": "FP32", "data": [np.float64(1.5), np.int64(2), 3]}
    )
    assert name == "x" and array.dtype == np.float32 and array.tolist() == [1.5, 2.0, 3.0]
    _, flags = decode_tensor({"name": "b", "shape": [2], "datatype": "BOOL", "data": [np.bool_(True), False]})
    assert flags.tolist() == [True, False]
    with pytest.raises(BadRequestError, match="must be numbers"):
        decode_tensor({"name": "x", "shape": [1], "datatype": "FP32", "data": [np.bool_(True)]})
