"""A loaded SavedModel version: its serving signature, input conversion and outputs.

TensorFlow is imported lazily (it is the optional ``tensorflow`` extra). Inputs
are fed the way TF Serving fed them: converted to the signature's dtypes, and a
value with one dimension less than an input whose leading (batch) dimension is
unknown is taken as a batch of one. Outputs come back as Cortex returned them,
each output name mapped to a flat list, or with their shapes kept on request.
"""

from __future__ import annotations

from typing import Any

from cortex_ray.errors import BadRequestError, ModelLoadError

__all__ = ["SavedModel", "resolve_signature_key"]


def resolve_signature_key(configured: str | None, available: list[str]) -> str:
    """Cortex's rule: the configured key; else the only one; else ``predict``; else an error."""
    if configured is not None:
        if configured not in available:
            raise ModelLoadError(
                f"signature_key '{configured}' was not found in signature def map, "
                f"but found the following keys: {', '.join(sorted(available))}"
            )
        return configured
    if len(available) == 1:
        return available[0]
    if "predict" in available:
        return "predict"
    raise ModelLoadError(
        "signature_key was not configured by user, please specify one the following keys "
        f"'{', '.join(sorted(available))}'"
    )


class SavedModel:
    """One SavedModel version, loaded and ready to predict (thread-safe)."""

    def __init__(self, path: str, name: str, version: int | None, signature_key: str | None) -> None:
        tf = _tf()
        self.name = name
        self.version = version
        try:
            self._loaded = tf.saved_model.load(path)
        except Exception as exc:
            raise _load_error(exc, path) from exc
        self.path = path
        self.signatures: dict[str, Any] = dict(self._loaded.signatures)
        self.signature_key = resolve_signature_key(signature_key, list(self.signatures))
        self._fn = self.signatures[self.signature_key]
        self.inputs: dict[str, Any] = _inputs_of(self._fn)
        self._described: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
        self._signature_defs: dict[str, Any] | str
        try:  # (now: the version's files may leave the disk while it serves from memory)
            self._signature_defs = _read_signature_defs(path)
        except ModelLoadError as exc:
            self._signature_defs = str(exc)

    def signature(self, name: str | None = None) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """A signature's key, its inputs and its outputs (``tf.TensorSpec`` by name); ``name``
        ``None`` or empty: the API's (``signature_key``, else Cortex's rule)."""
        key = name or self.signature_key
        described = self._described.get(key)
        if described is not None:
            return described
        fn = self.signatures.get(key)
        if fn is None:
            raise BadRequestError(
                f"model '{self.name}' of version {self.version} has no signature '{key}' "
                f"(it has {', '.join(sorted(self.signatures))})"
            )
        outputs = fn.structured_outputs
        # (kept: TensorFlow's introspection costs more than a small model's inference)
        described = self._described[key] = (
            key,
            _inputs_of(fn),
            dict(outputs) if isinstance(outputs, dict) else {},
        )
        return described

    def run(self, arrays: dict[str, Any], signature_name: str | None = None) -> dict[str, Any]:
        """Run a signature on named arrays (converted to its dtypes, shapes checked); its
        outputs as numpy arrays by name."""
        tf = _tf()
        key, inputs, _ = self.signature(signature_name)
        where = f"model '{self.name}' of version {self.version}"
        missing = sorted(set(inputs) - set(arrays))
        if missing:
            raise BadRequestError(f"{where}: missing input(s) {', '.join(missing)} of signature '{key}'")
        extra = sorted(set(arrays) - set(inputs))
        if extra:
            raise BadRequestError(
                f"{where}: unexpected input(s) {', '.join(extra)} (signature '{key}' takes "
                f"{', '.join(sorted(inputs))})"
            )
        tensors = {k: _convert(tf, arrays[k], spec, k, where) for k, spec in inputs.items()}
        try:
            outputs = self.signatures[key](**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise BadRequestError(f"{where}: the input was rejected: {_first_line(exc)}") from exc
        return {n: v.numpy() for n, v in outputs.items()}

    def method_name(self, key: str) -> str:
        """A signature's ``method_name`` (``tensorflow/serving/predict``, ``.../classify``, ...);
        ``""`` when ``saved_model.pb`` could not be read."""
        if isinstance(self._signature_defs, str):
            return ""
        return str(self._signature_defs.get(key, {}).get("method_name", ""))

    def signature_defs(self) -> dict[str, Any]:
        """The SavedModel's ``signature_def`` map as TF Serving's metadata API writes it (the
        protobuf's JSON, field names kept, defaults written), read from ``saved_model.pb`` at load."""
        if isinstance(self._signature_defs, str):
            raise ModelLoadError(self._signature_defs)
        return self._signature_defs

    @property
    def cortex_metadata(self) -> dict[str, Any]:
        """For ``/info``: the signature key and each input's name, dtype and shape."""
        return {
            "signature_key": self.signature_key,
            "inputs": {
                name: {"dtype": spec.dtype.name, "shape": _shape(spec.shape)}
                for name, spec in self.inputs.items()
            },
        }

    def predict(self, model_input: Any, keep_shapes: bool = False) -> dict[str, Any]:
        tf = _tf()
        where = f"model '{self.name}' of version {self.version}"
        if not isinstance(model_input, dict):
            raise BadRequestError(
                f"{where}: the input must be a dict keyed by the signature's input names "
                f"({', '.join(sorted(self.inputs))}), got {type(model_input).__name__}"
            )
        tensors = {}
        for key, spec in self.inputs.items():
            if key not in model_input:
                raise BadRequestError(
                    f"missing key '{key}' for model '{self.name}' of version {self.version} "
                    f"(expected {spec.dtype.name} of shape {_shape(spec.shape)})"
                )
            tensors[key] = _convert(tf, model_input[key], spec, key, where)
        extra = sorted(set(model_input) - set(self.inputs))
        if extra:
            raise BadRequestError(
                f"{where}: unexpected input key(s) {', '.join(extra)} "
                f"(inputs: {', '.join(sorted(self.inputs))})"
            )
        try:
            outputs = self._fn(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise BadRequestError(f"{where}: the input was rejected: {_first_line(exc)}") from exc
        return {name: _to_python(value.numpy(), keep_shapes) for name, value in outputs.items()}


def _inputs_of(fn: Any) -> dict[str, Any]:
    _, kwargs = fn.structured_input_signature
    return dict(kwargs)


def _read_signature_defs(path: str) -> dict[str, Any]:
    import os

    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved.ParseFromString(f.read())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the signatures of the SavedModel at {path}: {exc}") from exc
    if not saved.meta_graphs:
        return {}
    defs = saved.meta_graphs[0].signature_def
    return {
        key: json_format.MessageToDict(
            defs[key], always_print_fields_with_no_presence=True, preserving_proto_field_name=True
        )
        for key in sorted(defs)
    }


def _convert(tf: Any, value: Any, spec: Any, key: str, where: str) -> Any:
    import numpy as np

    expected = f"{spec.dtype.name} of shape {_shape(spec.shape)}"
    try:
        array = np.asarray(value, dtype=spec.dtype.as_numpy_dtype if spec.dtype != tf.string else object)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequestError(f"{where}: key '{key}' expected {expected}: {exc}") from exc
    rank = spec.shape.rank
    if rank is not None and array.ndim == rank - 1 and rank > 0 and spec.shape[0] is None:
        array = np.expand_dims(array, 0)  # a batch of one, as TF Serving accepted it
    if rank is not None and array.ndim != rank:
        raise BadRequestError(
            f"{where}: key '{key}' expected {expected}, got a value of shape {list(array.shape)}"
        )
    if not spec.shape.is_compatible_with(array.shape):
        raise BadRequestError(
            f"{where}: key '{key}' expected {expected}, got a value of shape {list(array.shape)}"
        )
    return tf.convert_to_tensor(array, dtype=spec.dtype)


def _to_python(array: Any, keep_shapes: bool) -> Any:
    values = array if keep_shapes else array.reshape(-1)
    out = values.tolist()
    return _decode(out)


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _shape(shape: Any) -> list[int | None] | str:
    if shape.rank is None:
        return "unknown"
    return [None if d is None else int(d) for d in shape.as_list()]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _load_error(exc: BaseException, path: str) -> ModelLoadError:
    text = str(exc)
    if "Neuron" in text or "neuron" in text.lower():
        return ModelLoadError(
            "this SavedModel was compiled for AWS Inferentia (Neuron) and cannot run without the Neuron "
            "runtime: serve it on an Inferentia node with tensorflow-neuron installed "
            f"({_first_line(exc)})"
        )
    return ModelLoadError(f"cannot load the SavedModel at {path}: {type(exc).__name__}: {_first_line(exc)}")


def _tf() -> Any:
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ModelLoadError(
            "the tensorflow handler needs TensorFlow: pip install 'cortex-ray[tensorflow]'"
        ) from exc
    return tf
