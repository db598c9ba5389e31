"""TF Serving's REST API, for TensorFlow APIs.

Routes, below the API's endpoint::

    GET  v1/models/{m}[/versions/{v}]             model status (model_version_status)
    GET  v1/models/{m}[/versions/{v}]/metadata    model_spec and the SavedModel's signature_def map
    POST v1/models/{m}[/versions/{v}]:predict     {"instances": ...} (rows) or {"inputs": ...}
                                                  (columns), optional "signature_name"
    POST v1/models/{m}[/versions/{v}]:classify    {"examples": [...], "context": ...} (TensorFlow
    POST v1/models/{m}[/versions/{v}]:regress     APIs: tf.Example in, ``{"results": ...}`` out;
                                                  see :mod:`cortex_ray.protocols.examples`)

Answers are TF Serving's: ``{"predictions": ...}`` for rows (a list per instance, or one object
per instance when the signature has several outputs), ``{"outputs": ...}`` for columns; a
``{"b64": "..."}`` value is bytes; outputs whose names end in ``_bytes`` come back as
``{"b64": ...}``; float32 values are written as their shortest decimals. Version labels
(``/labels/{l}``) are not built yet: a clear 404. Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from cortex_ray.endpoint.codec import decode_json
from cortex_ray.endpoint.messages import Incoming, Outgoing, json_outgoing
from cortex_ray.errors import BadRequestError, ModelNotFoundError, VersionNotFoundError
from cortex_ray.protocols.examples import check_signature, classify_results, regress_results
from cortex_ray.protocols.examples import serialize as serialize_examples
from cortex_ray.protocols.models import ProtocolModels, Signature
from cortex_ray.protocols.paths import allow, path_version
from cortex_ray.protocols.tensors import shortest_floats

__all__ = ["V1", "to_json"]

_STATES = {"available": "AVAILABLE", "loading": "LOADING", "failed": "END"}


class V1:
    def __init__(self, models: ProtocolModels) -> None:
        self.models = models

    async def __call__(self, incoming: Incoming, parts: list[str], used: dict[str, Any]) -> Outgoing:
        """``parts``: the path's segments below the endpoint, ``v1`` first."""
        method = "GET" if incoming.method == "HEAD" else incoming.method
        if len(parts) < 3 or parts[1] != "models":
            raise ModelNotFoundError(f"no such route: {'/'.join(parts)}")
        rest = parts[2:]
        verb = None
        if ":" in rest[-1]:
            rest[-1], verb = rest[-1].split(":", 1)
        name, tail = rest[0], rest[1:]
        version: int | None = None
        if len(tail) >= 2 and tail[0] == "labels":
            raise ModelNotFoundError(
                f"version labels are not supported yet (asked for label '{tail[1]}'): name the version"
            )
        if len(tail) >= 2 and tail[0] == "versions":
            version = path_version(tail[1])
            tail = tail[2:]
        if verb is not None:
            if tail:
                raise ModelNotFoundError(f"no such route: {'/'.join(parts)}")
            if verb not in ("predict", "classify", "regress"):
                raise BadRequestError(
                    f"':{verb}' is not a TF Serving verb: ':predict', ':classify' or ':regress'"
                )
            allow(method, "POST")
            if verb == "predict":
                return json_outgoing(await self._predict(incoming.body, name, version, used))
            return json_outgoing(await self._examples(verb, incoming.body, name, version, used))
        if not tail:
            allow(method, "GET")
            return json_outgoing(self._status(name, version))
        if tail == ["metadata"]:
            allow(method, "GET")
            return json_outgoing(await self._metadata(name, version, used))
        raise ModelNotFoundError(f"no such route: {'/'.join(parts)}")

    def _model(self, name: str) -> tuple[str, Any]:
        model_name = self.models.model_name(name)
        model = self.models.tree.models.get(model_name) if model_name else None
        if model_name is None or model is None or not model.versions:
            raise ModelNotFoundError(f"Could not find any versions of model {name}")
        return model_name, model

    def _status(self, name: str, version: int | None) -> dict[str, Any]:
        model_name, model = self._model(name)
        versions = sorted(model.versions) if version is None else [version]
        if version is not None and version not in model.versions:
            raise VersionNotFoundError(f"Could not find version {version} of model {name}")
        statuses = []
        for v in versions:
            info = model.versions[v]
            state = (
                {"state": "failed", "reason": info.error}
                if info.error
                else self.models.version_state(model_name, v)
            )
            failed = state.get("state") == "failed"
            statuses.append(
                {
                    "version": str(v),
                    "state": _STATES.get(str(state.get("state")), "AVAILABLE"),
                    "status": {
                        "error_code": "UNKNOWN" if failed else "OK",
                        "error_message": str(state.get("reason", "")) if failed else "",
                    },
                }
            )
        return {"model_version_status": statuses}

    def _resolve(self, name: str, version: int | None) -> tuple[str, int]:
        model_name, model = self._model(name)
        if not model.valid_versions:
            raise ModelNotFoundError(f"Could not find any valid versions of model {name}")
        if version is None:
            return model_name, max(model.valid_versions)
        if version not in model.valid_versions:
            raise VersionNotFoundError(f"Could not find version {version} of model {name}")
        return model_name, version

    async def _metadata(self, name: str, version: int | None, used: dict[str, Any]) -> dict[str, Any]:
        model_name, v = self._resolve(name, version)
        defs, v = await self.models.signature_defs(model_name, v, used)
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(v)},
            "metadata": {"signature_def": {"signature_def": defs}},
        }

    async def _predict(
        self, body: bytes, name: str, version: int | None, used: dict[str, Any]
    ) -> dict[str, Any]:
        request, key = _request(body)
        rows, columns = "instances" in request, "inputs" in request
        if rows == columns:
            raise BadRequestError(
                "the request must hold exactly one of 'instances' (rows) or 'inputs' (columns)"
            )
        model_name, v = self._resolve(name, version)

        def prepare(signature: Signature) -> dict[str, np.ndarray]:  # (with the model, in one call)
            names = [s.name for s in signature.inputs]
            return _rows(request["instances"], names) if rows else _columns(request["inputs"], names)

        outputs, _ = await self.models.infer(model_name, v, prepare, key, used)
        if columns:
            if len(outputs) == 1:
                ((out_name, value),) = outputs.items()
                return {"outputs": to_json(value, out_name)}
            return {"outputs": {n: to_json(value, n) for n, value in sorted(outputs.items())}}
        if len(outputs) == 1:
            ((out_name, value),) = outputs.items()
            return {"predictions": to_json(value, out_name)}
        sizes = {n: (int(np.shape(a)[0]) if np.ndim(a) else -1) for n, a in outputs.items()}
        if len(set(sizes.values())) != 1 or -1 in sizes.values():
            raise BadRequestError(
                "the outputs do not share a batch size, so they cannot be written as rows: ask with "
                f"'inputs' (columns) instead ({', '.join(f'{n}: {s}' for n, s in sorted(sizes.items()))})"
            )
        columns_json = {n: to_json(value, n) for n, value in outputs.items()}
        count = next(iter(sizes.values()))
        return {"predictions": [{n: columns_json[n][i] for n in sorted(columns_json)} for i in range(count)]}

    async def _examples(
        self, verb: str, body: bytes, name: str, version: int | None, used: dict[str, Any]
    ) -> dict[str, Any]:
        if self.models.platform != "tensorflow_savedmodel":
            raise BadRequestError(
                f"':{verb}' is served for TensorFlow APIs (a SavedModel that reads tf.Example protos); "
                "this API's handler is Python: use ':predict' or the API's own endpoint"
            )
        request, key = _request(body)
        items = serialize_examples(request)
        serialized = np.empty(len(items), dtype=object)  # (1-d, of bytes objects)
        serialized[:] = items
        model_name, v = self._resolve(name, version)

        def prepare(signature: Signature) -> dict[str, np.ndarray]:
            return {check_signature(signature, verb): serialized}

        outputs, _ = await self.models.infer(model_name, v, prepare, key, used)
        if verb == "classify":
            return {"results": classify_results(outputs, len(items))}
        return {"results": regress_results(outputs, len(items))}


def _request(body: bytes) -> tuple[dict[str, Any], str | None]:
    """A request body as a JSON object, and its ``signature_name``."""
    try:
        request = decode_json(body)  # (the endpoint's: deep nesting and huge numbers are 400s too)
    except BadRequestError as exc:
        raise BadRequestError(f"the request body is not JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise BadRequestError("the request body must be a JSON object")
    key = request.get("signature_name")
    if key is not None and not isinstance(key, str):
        raise BadRequestError("signature_name must be a string")
    return request, key


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _decoded(value: Any) -> Any:
    """A JSON value with every ``{"b64": "..."}`` replaced by its bytes."""
    if _is_b64(value):
        if not isinstance(value["b64"], str):
            raise BadRequestError("a b64 value must be a string")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequestError(f"a b64 value is not base64: {exc}") from exc
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def _array(value: Any, what: str) -> np.ndarray:
    value = _decoded(value)
    try:
        array = np.array(value)
    except ValueError as exc:
        raise BadRequestError(
            f"{what}: the values do not form a tensor (lists of different lengths?)"
        ) from exc
    if array.dtype.kind in "SU":
        array = array.astype(object)
    if array.dtype == object and any(isinstance(v, list | dict) for v in array.reshape(-1)):
        raise BadRequestError(f"{what}: the values do not form a tensor (lists of different lengths?)")
    return array


def _rows(instances: Any, inputs: list[str]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise BadRequestError("'instances' must be a non-empty list, one item per instance")
    named = all(isinstance(i, dict) and not _is_b64(i) for i in instances)
    if not named:
        if any(isinstance(i, dict) and not _is_b64(i) for i in instances):
            raise BadRequestError("'instances' mixes objects (named inputs) and plain values")
        if len(inputs) != 1:
            raise BadRequestError(
                f"the signature takes {len(inputs)} inputs ({', '.join(inputs)}): each instance must be an "
                "object naming them"
            )
        return {inputs[0]: _array(instances, f"input '{inputs[0]}'")}
    keys = set(instances[0])
    if any(set(i) != keys for i in instances):
        raise BadRequestError("every instance must name the same inputs")
    return {k: _array([i[k] for i in instances], f"input '{k}'") for k in sorted(keys)}


def _columns(inputs: Any, names: list[str]) -> dict[str, np.ndarray]:
    if isinstance(inputs, dict) and not _is_b64(inputs):
        return {k: _array(v, f"input '{k}'") for k, v in sorted(inputs.items())}
    if len(names) != 1:
        raise BadRequestError(
            f"the signature takes {len(names)} inputs ({', '.join(names)}): 'inputs' must be an object "
            "naming them"
        )
    return {names[0]: _array(inputs, f"input '{names[0]}'")}


def to_json(value: Any, name: str) -> Any:
    """An output as TF Serving writes it: nested lists; float32 as shortest decimals; strings as
    text, or as ``{"b64": ...}`` when the output's name ends in ``_bytes``."""
    array = np.asarray(value)
    if array.dtype.kind in "OS":
        flat = [_bytes_json(v, name.endswith("_bytes")) for v in array.reshape(-1)]
        holder = np.empty(len(flat), dtype=object)
        holder[:] = flat
        return holder.reshape(array.shape).tolist()
    if array.dtype in (np.float32, np.float16):
        return np.array(shortest_floats(array.reshape(-1)), dtype=np.float64).reshape(array.shape).tolist()
    return array.tolist()


def _bytes_json(value: Any, as_b64: bool) -> Any:
    raw = value if isinstance(value, bytes) else str(value).encode()
    if as_b64:
        return {"b64": base64.b64encode(raw).decode()}
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode()}
