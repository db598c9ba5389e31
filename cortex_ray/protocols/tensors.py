"""Tensors as the Open Inference Protocol (KServe v2) writes them: datatype names, shapes, and
data as JSON (flat or nested, row-major) or as the binary tensor extension's raw bytes.

Numpy arrays stand between the protocols and the models. A tensor that does not match what it
claims (a datatype the protocol does not name, data of the wrong length or kind, a shape with a
negative dimension) is a :class:`~cortex_ray.errors.BadRequestError` naming the tensor.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from cortex_ray.errors import BadRequestError

__all__ = [
    "DATATYPES",
    "TensorSpec",
    "datatype_of",
    "decode_tensor",
    "encode_tensor",
    "numpy_dtype",
    "shortest_floats",
]

DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
"""The protocol's datatypes and the numpy types that hold them (BF16 has none: refused)."""
_NAMES = {np.dtype(t): name for name, t in DATATYPES.items() if name != "BYTES"}


@dataclass(frozen=True)
class TensorSpec:
    """A model input's or output's name, datatype and shape (``-1``: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def numpy_dtype(datatype: Any, what: str) -> Any:
    if datatype == "BF16":
        raise BadRequestError(f"{what}: datatype BF16 is not supported (numpy has no bfloat16)")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequestError(f"{what}: unknown datatype {datatype!r} (one of {', '.join(DATATYPES)})")
    return DATATYPES[datatype]


def datatype_of(array: np.ndarray) -> str:
    """The protocol's name for an array's datatype (strings and bytes: ``BYTES``)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    name = _NAMES.get(array.dtype)
    if name is None:
        raise BadRequestError(f"the model returned a {array.dtype} tensor, which the protocol cannot carry")
    return name


def decode_tensor(tensor: Any, raw: bytes | None = None) -> tuple[str, np.ndarray]:
    """An input tensor of a request (its JSON object, and its bytes with the binary extension)
    as ``(name, array)`` shaped as it says."""
    if not isinstance(tensor, dict):
        raise BadRequestError(
            f"each input must be an object with name, shape, datatype and data, got {tensor!r:.80}"
        )
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequestError("an input has no name")
    what = f"input '{name}'"
    shape = _shape(tensor.get("shape"), what)
    dtype = numpy_dtype(tensor.get("datatype"), what)
    count = math.prod(shape)  # (not numpy's: a reduction costs microseconds on a tiny shape)
    if raw is not None:
        if tensor["datatype"] == "BYTES":
            items = _unpack_bytes(raw, what)
            array = np.empty(len(items), dtype=object)
            array[:] = items
        else:
            size = np.dtype(dtype).itemsize
            if len(raw) != count * size:
                raise BadRequestError(
                    f"{what}: {len(raw)} bytes of binary data for {count} values of "
                    f"{tensor['datatype']} ({count * size} bytes)"
                )
            array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    else:
        if "data" not in tensor:
            raise BadRequestError(f"{what} has no data (and no binary_data_size)")
        array = _from_json(tensor["data"], dtype, tensor["datatype"], what)
    if array.size != count:
        raise BadRequestError(f"{what}: {array.size} values for shape {list(shape)} ({count} values)")
    return name, array.reshape(shape)


def encode_tensor(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    """An output tensor as the response's JSON object, and its bytes when sent binary."""
    datatype = datatype_of(array)
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    flat = array.reshape(-1)
    if binary:
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(b)) + b for b in (_as_bytes(v) for v in flat))
        else:
            raw = np.ascontiguousarray(flat, dtype=flat.dtype.newbyteorder("<")).tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        return out, raw
    if datatype == "BYTES":
        out["data"] = [_as_text(v) for v in flat]
    else:  # (float32 values as the doubles they are: read back as float32, the same values)
        out["data"] = flat.tolist()
    return out, None


def shortest_floats(flat: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that read back as them (``0.1``, not
    ``0.10000000149011612``), as Triton and TF Serving write them."""
    return [float(np.format_float_positional(v, unique=True, trim="-")) for v in flat]


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise BadRequestError(f"{what}: shape must be a list of integers, got {value!r:.80}")
    if any(d < 0 for d in value):
        raise BadRequestError(f"{what}: shape {value} has a negative dimension")
    return tuple(value)


def _from_json(data: Any, dtype: Any, datatype: str, what: str) -> np.ndarray:
    flat = _flatten(data)
    types = set(map(type, flat))  # (JSON's values are exactly these types: one pass, in C)
    if not types <= _JSON_TYPES:  # (from Python, not JSON: numpy scalars, subclasses)
        types = {_json_type(v) for v in flat}
    if datatype == "BYTES":
        if not types <= {str, bytes}:
            raise BadRequestError(f"{what}: BYTES data must be strings")
        array = np.empty(len(flat), dtype=object)
        array[:] = [v.encode() if isinstance(v, str) else v for v in flat]
        return array
    if datatype == "BOOL":
        if not types <= {bool}:
            raise BadRequestError(f"{what}: BOOL data must be true or false")
    elif not types <= {int, float}:  # (not bool: True is no number here)
        raise BadRequestError(f"{what}: {datatype} data must be numbers")
    elif datatype.startswith(("INT", "UINT")) and float in types:
        raise BadRequestError(f"{what}: {datatype} data must be integers")
    try:
        with np.errstate(over="raise", invalid="raise"):
            array = np.array(flat, dtype=dtype)
    except (OverflowError, ValueError, FloatingPointError) as exc:
        raise BadRequestError(f"{what}: a value does not fit {datatype}: {exc}") from exc
    if datatype.startswith(("INT", "UINT")) and flat and array.tolist() != flat:
        raise BadRequestError(f"{what}: a value does not fit {datatype}")
    return array


_JSON_TYPES = frozenset({bool, int, float, str, bytes})


def _json_type(value: Any) -> type:
    """The JSON type ``value`` stands for (a ``numpy.float32`` for ``float``...), else its own."""
    if isinstance(value, bool | np.bool_):
        return bool
    for kind in (int, float, str, bytes):
        if isinstance(value, kind):
            return kind
    if isinstance(value, np.integer):
        return int
    if isinstance(value, np.floating):
        return float
    return type(value)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if all(not isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item))
    return out


def _unpack_bytes(raw: bytes, what: str) -> list[bytes]:
    items, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise BadRequestError(f"{what}: binary BYTES data ends inside a length prefix")
        (length,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + length > len(raw):
            raise BadRequestError(f"{what}: binary BYTES data ends inside an element")
        items.append(raw[at : at + length])
        at += length
    return items


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value.decode("latin-1")
    return str(value)
