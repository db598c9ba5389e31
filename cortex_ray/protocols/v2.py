"""The Open Inference Protocol (KServe v2, as Triton and MLServer speak it) over HTTP/JSON.

Routes, below the API's endpoint::

    GET  v2                                       server metadata
    GET  v2/health/live | v2/health/ready         200, or 400 when not ready
    POST v2/repository/index                      every model version: state and reason
    GET  v2/models/{m}[/versions/{v}]             metadata: versions, platform, inputs, outputs
    GET  v2/models/{m}[/versions/{v}]/ready       200, or 400 when not ready
    POST v2/models/{m}[/versions/{v}]/infer       JSON tensors in and out, or the binary tensor
                                                  extension (Inference-Header-Content-Length)
    GET  v2/models/{m}[/versions/{v}]/config      Triton's model configuration (from the signature)
    GET  v2/models[/{m}[/versions/{v}]]/stats     Triton's statistics: this replica's v2 requests
                                                  (:mod:`cortex_ray.protocols.stats`)

Versions are the API's integer versions (``007`` is 7); none named: the latest. A version
"ready" is one the replica serves (listed, valid, not failed to load): it may still need to be
loaded, which the first request does. Errors are ``{"error": "..."}`` with 400 (bad request),
404 (no such model or version), 405, or 503 (a version that cannot be loaded now).
"""

from __future__ import annotations

import json
import time
from importlib import metadata
from typing import Any

import numpy as np

from cortex_ray.endpoint.codec import decode_json
from cortex_ray.endpoint.messages import JSON, Incoming, Outgoing, json_outgoing
from cortex_ray.errors import (
    BadRequestError,
    CortexRayError,
    ModelNotFoundError,
    VersionNotFoundError,
)
from cortex_ray.protocols.models import ProtocolModels, Signature
from cortex_ray.protocols.paths import allow, path_version
from cortex_ray.protocols.stats import InferenceStats
from cortex_ray.protocols.tensors import TensorSpec, decode_tensor, encode_tensor

__all__ = ["HEADER_LENGTH", "V2"]

HEADER_LENGTH = b"inference-header-content-length"
"""The binary tensor extension's header: the length of the JSON part of a body."""
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]
_BACKENDS = {"tensorflow_savedmodel": "tensorflow"}


def _server_version() -> str:
    try:
        return metadata.version("cortex-ray")
    except metadata.PackageNotFoundError:
        return "unknown"


class V2:
    def __init__(self, models: ProtocolModels) -> None:
        self.models = models
        self.server = {"name": "cortex-ray", "version": _server_version(), "extensions": EXTENSIONS}
        self.stats = InferenceStats(self._served)

    async def __call__(self, incoming: Incoming, parts: list[str], used: dict[str, Any]) -> Outgoing:
        """``parts``: the path's segments below the endpoint, ``v2`` first."""
        method = "GET" if incoming.method == "HEAD" else incoming.method
        rest = parts[1:]
        if not rest:
            allow(method, "GET")
            return json_outgoing(self.server)
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            allow(method, "GET")
            if rest[1] == "ready" and not self.models.ready:
                return json_outgoing({"error": "the replica has no model tree yet"}, 400)
            return Outgoing(200)
        if rest == ["repository", "index"]:
            allow(method, "POST")
            return json_outgoing(self._index(incoming.body))
        if rest[0] != "models" or len(rest) < 2:
            raise ModelNotFoundError(f"no such route: {'/'.join(parts)}")
        if rest == ["models", "stats"]:  # (as Triton reads it: a model named "stats" is not asked for)
            allow(method, "GET")
            return json_outgoing(self._stats(None, None))
        name, tail = rest[1], rest[2:]
        version: int | None = None
        if len(tail) >= 2 and tail[0] == "versions":
            version = path_version(tail[1])
            tail = tail[2:]
        if not tail:
            allow(method, "GET")
            return json_outgoing(await self._metadata(name, version, used))
        if tail == ["ready"]:
            allow(method, "GET")
            ready, why = self._version_ready(name, version)
            return Outgoing(200) if ready else json_outgoing({"error": why}, 400)
        if tail == ["infer"]:
            allow(method, "POST")
            return await self._infer(incoming, name, version, used)
        if tail == ["config"]:
            allow(method, "GET")
            return json_outgoing(await self._config(name, version, used))
        if tail == ["stats"]:
            allow(method, "GET")
            return json_outgoing(self._stats(name, version))
        raise ModelNotFoundError(f"no such route: {'/'.join(parts)}")

    def _served(self, name: str, version: int) -> bool:
        model = self.models.tree.models.get(name)
        return model is not None and version in model.versions

    # --- health, metadata, repository ------------------------------------------

    def _resolve(self, name: str, version: int | None) -> tuple[str, int]:
        model_name = self.models.model_name(name)
        model = self.models.tree.models.get(model_name) if model_name else None
        if model_name is None or model is None or not model.valid_versions:
            raise ModelNotFoundError(f"model '{name}' is not served by API '{self.models.api_name}'")
        if version is None:
            return model_name, max(model.valid_versions)
        if version not in model.valid_versions:
            raise VersionNotFoundError(
                f"model '{name}' has no version {version} (it has "
                f"{', '.join(str(v) for v in sorted(model.valid_versions))})"
            )
        return model_name, version

    def _version_ready(self, name: str, version: int | None) -> tuple[bool, str]:
        try:
            model_name, v = self._resolve(name, version)
        except CortexRayError as exc:
            return False, exc.message
        state = self.models.version_state(model_name, v)
        if state.get("state") == "failed":
            return False, f"version {v} of model '{name}' failed to load: {state.get('reason', '')}"
        return True, ""

    async def _metadata(self, name: str, version: int | None, used: dict[str, Any]) -> dict[str, Any]:
        model_name, v = self._resolve(name, version)
        signature, v = await self.models.signature(model_name, v, None, used)
        versions = (
            [str(v)]
            if version is not None
            else [str(x) for x in sorted(self.models.tree.models[model_name].valid_versions)]
        )
        return {
            "name": name,
            "versions": versions,
            "platform": self.models.platform,
            "inputs": [s.as_json() for s in signature.inputs],
            "outputs": [s.as_json() for s in signature.outputs],
        }

    async def _config(self, name: str, version: int | None, used: dict[str, Any]) -> dict[str, Any]:
        """Triton's model configuration, as far as cortex-ray's model has one: its inputs and
        outputs with full shapes (``max_batch_size`` 0: the batch dimension is in ``dims``),
        every valid version served."""
        model_name, v = self._resolve(name, version)
        signature, v = await self.models.signature(model_name, v, None, used)
        platform = self.models.platform
        return {
            "name": name,
            "platform": platform,
            "backend": _BACKENDS.get(platform, platform),
            "version_policy": {"all": {}},
            "max_batch_size": 0,
            "input": [
                {
                    "name": s.name,
                    "data_type": _triton_type(s),
                    "format": "FORMAT_NONE",
                    "dims": list(s.shape),
                    "is_shape_tensor": False,
                    "allow_ragged_batch": False,
                    "optional": False,
                }
                for s in signature.inputs
            ],
            "output": [
                {
                    "name": s.name,
                    "data_type": _triton_type(s),
                    "dims": list(s.shape),
                    "label_filename": "",
                    "is_shape_tensor": False,
                }
                for s in signature.outputs
            ],
        }

    def _stats(self, name: str | None, version: int | None) -> dict[str, Any]:
        models = self.models.tree.models
        if name is None:
            versions = [(m, v) for m, model in sorted(models.items()) for v in sorted(model.valid_versions)]
            self.stats.keep(set(versions))
        elif version is None:
            model_name, _ = self._resolve(name, None)
            versions = [(model_name, v) for v in sorted(models[model_name].valid_versions)]
        else:
            versions = [self._resolve(name, version)]
        return self.stats.as_json(versions)

    def _index(self, body: bytes) -> list[dict[str, Any]]:
        only_ready = False
        if body.strip():
            try:
                request = decode_json(body)
            except BadRequestError as exc:
                raise BadRequestError(f"the body is not JSON: {exc}") from exc
            only_ready = isinstance(request, dict) and request.get("ready") is True
        index = []
        for model_name, model in sorted(self.models.tree.models.items()):
            for v in sorted(model.versions):
                info = model.versions[v]
                entry = {"name": model_name, "version": str(v)}
                if info.error:
                    entry.update(state="UNAVAILABLE", reason=info.error)
                else:
                    state = self.models.version_state(model_name, v)
                    if state.get("state") == "failed":
                        entry.update(state="UNAVAILABLE", reason=str(state.get("reason", "")))
                    elif state.get("state") == "loading":
                        entry.update(state="LOADING", reason="")
                    else:
                        why = "" if state.get("in_memory") else "not in memory: loaded by its first request"
                        entry.update(state="READY", reason=why)
                if not only_ready or entry["state"] == "READY":
                    index.append(entry)
        return index

    # --- inference ---------------------------------------------------------------

    async def _infer(
        self, incoming: Incoming, name: str, version: int | None, used: dict[str, Any]
    ) -> Outgoing:
        started = time.perf_counter_ns()
        model_name, v = self._resolve(name, version)
        phases: dict[str, int] = {}
        try:
            out, v = await self._run(incoming, name, model_name, v, used, phases)
        except BaseException:
            self.stats.record(model_name, v, False, time.perf_counter_ns() - started)
            raise
        self.stats.record(model_name, v, True, time.perf_counter_ns() - started, phases)
        return out

    async def _run(
        self,
        incoming: Incoming,
        name: str,
        model_name: str,
        v: int,
        used: dict[str, Any],
        phases: dict[str, int],
    ) -> tuple[Outgoing, int]:
        """The request run: the answer and the version that ran; each phase's nanoseconds in
        ``phases``."""
        started = time.perf_counter_ns()
        request, binary = _split(incoming)
        if not isinstance(request, dict):
            raise BadRequestError("the inference request must be a JSON object")
        inputs = request.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise BadRequestError("the inference request has no inputs (a list of tensors)")
        arrays: dict[str, np.ndarray] = {}
        declared: dict[str, str] = {}
        at = 0
        for tensor in inputs:
            raw = None
            size = _binary_size(tensor)
            if size is not None:
                if binary is None or at + size > len(binary):
                    raise BadRequestError(
                        "an input's binary_data_size goes past the body (Inference-Header-Content-Length "
                        "must give the JSON part's length)"
                    )
                raw, at = binary[at : at + size], at + size
            key, array = decode_tensor(tensor, raw)
            if key in arrays:
                raise BadRequestError(f"input '{key}' is given twice")
            arrays[key], declared[key] = array, tensor["datatype"]
        wanted, binary_out = _wanted_outputs(request)

        def prepare(signature: Signature) -> dict[str, np.ndarray]:  # (with the model, in one call)
            _check_inputs(signature, declared, name)
            return arrays

        decoded = time.perf_counter_ns()
        results, v = await self.models.infer(model_name, v, prepare, None, used)
        ran = time.perf_counter_ns()
        names = list(results)
        if wanted is not None:
            unknown = [n for n in wanted if n not in results]
            if unknown:
                raise BadRequestError(
                    f"model '{name}' has no output(s) {', '.join(unknown)} "
                    f"(outputs: {', '.join(sorted(results))})"
                )
            names = list(wanted)
        outputs, chunks = [], []
        for out_name in names:
            as_binary = binary_out if wanted is None else wanted[out_name]
            tensor, raw = encode_tensor(out_name, np.asarray(results[out_name]), as_binary)
            outputs.append(tensor)
            if raw is not None:
                chunks.append(raw)
        response: dict[str, Any] = {"model_name": name, "model_version": str(v), "outputs": outputs}
        if isinstance(request.get("id"), str):
            response["id"] = request["id"]
        head = json.dumps(response).encode()
        if not chunks:
            out = Outgoing(200, [(b"content-type", JSON)], head)
        else:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (HEADER_LENGTH, str(len(head)).encode()),
            ]
            out = Outgoing(200, headers, head + b"".join(chunks))
        phases["compute_input"] = decoded - started
        phases["compute_infer"] = ran - decoded
        phases["compute_output"] = time.perf_counter_ns() - ran
        return out, v


def _triton_type(spec: TensorSpec) -> str:
    return "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"


def _split(incoming: Incoming) -> tuple[Any, bytes | None]:
    body, binary = incoming.body, None
    length = incoming.header(HEADER_LENGTH)
    if length is not None:
        if not length.strip().isdigit() or int(length) > len(body):
            raise BadRequestError(
                f"Inference-Header-Content-Length {length!r} does not fit a body of {len(body)} bytes"
            )
        body, binary = body[: int(length)], body[int(length) :]
    try:
        return decode_json(body), binary  # (the endpoint's: deep nesting and huge numbers are 400s)
    except BadRequestError as exc:
        raise BadRequestError(f"the inference request is not JSON: {exc}") from exc


def _binary_size(tensor: Any) -> int | None:
    parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequestError(f"binary_data_size must be a non-negative integer, got {size!r}")
    return size


def _wanted_outputs(request: dict[str, Any]) -> tuple[dict[str, bool] | None, bool]:
    parameters = request.get("parameters")
    binary_all = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    outputs = request.get("outputs")
    if outputs is None:
        return None, binary_all
    if not isinstance(outputs, list):
        raise BadRequestError("outputs must be a list of objects naming the outputs wanted")
    wanted: dict[str, bool] = {}
    for item in outputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequestError(f"each requested output must be an object with a name, got {item!r:.80}")
        params = item.get("parameters")
        binary = params.get("binary_data") if isinstance(params, dict) else None
        wanted[item["name"]] = binary_all if binary is None else binary is True
    return wanted, binary_all


def _check_inputs(signature: Signature, declared: dict[str, str], name: str) -> None:
    if not signature.strict:
        return
    for spec in signature.inputs:
        given = declared.get(spec.name)
        if given is not None and given != spec.datatype:
            raise BadRequestError(
                f"model '{name}': input '{spec.name}' is {spec.datatype}, the request says {given}"
            )
