"""The replica's side of the protocol routes (:mod:`cortex_ray.protocols`): an API's models as
:class:`~cortex_ray.protocols.ProtocolModels`.

Every model call goes where the handler's calls go (:meth:`ApiCore.call_handler`: its threads,
its limits, ``get_model``'s holds and the versions a request used), as one of three methods
made once. A TensorFlow API runs the SavedModel's signatures itself; a Python API calls its
handler's ``handle_infer(inputs, model_name, model_version)`` (named numpy arrays in, named
array-likes out) and, for metadata, ``infer_signature(model_name, model_version)`` if it has one
(``{"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}``).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from cortex_ray.cache import ModelCache
from cortex_ray.endpoint import Method
from cortex_ray.errors import BadRequestError, UserHandlerError
from cortex_ray.models.tree import ModelTree
from cortex_ray.protocols import Signature, TensorSpec
from cortex_ray.protocols.models import Prepare
from cortex_ray.protocols.tensors import datatype_of, numpy_dtype
from cortex_ray.replica.model_client import ModelClient
from cortex_ray.spec.names import SINGLE_MODEL_NAME

__all__ = ["ReplicaModels", "protocols_of"]

CallHandler = Callable[[Method, dict[str, Any], dict[str, Any]], Awaitable[Any]]
_UNDECLARED = Signature(strict=False)


def protocols_of(configured: Sequence[str] | None, tensorflow: bool, handler: Any) -> tuple[str, ...]:
    """The protocols an API serves: as configured (``handler.protocols``), else both for a
    TensorFlow API and v2 for a Python API whose handler has ``handle_infer``."""
    has_infer = callable(getattr(handler, "handle_infer", None))
    if configured is None:
        return ("v1", "v2") if tensorflow else (("v2",) if has_infer else ())
    if "v2" in configured and not tensorflow and not has_infer:
        raise UserHandlerError(
            "handler.protocols names v2, and the handler has no handle_infer(inputs, model_name, "
            "model_version) for its infer route"
        )
    return tuple(p for p in ("v1", "v2") if p in configured)


class ReplicaModels:
    def __init__(
        self,
        api_name: str,
        tensorflow: bool,
        cache: ModelCache,
        model_client: ModelClient,
        call_handler: CallHandler,
        handler: Any,
    ) -> None:
        self.api_name = api_name
        self.platform = "tensorflow_savedmodel" if tensorflow else "python"
        self._tensorflow = tensorflow
        self._cache = cache
        self._client = model_client
        self._call = call_handler
        self._handler = handler
        self._signatures: weakref.WeakKeyDictionary[Any, dict[str | None, Signature]] = (
            weakref.WeakKeyDictionary()
        )
        # made once: the handler's pace is measured per method
        self._run = Method(self._run_in_handler, ("request",), False, ("request",))
        self._infer = (
            None
            if tensorflow
            else Method.of(handler.handle_infer, ("inputs", "model_name", "model_version"), "handle_infer")
        )

    @property
    def ready(self) -> bool:
        return True

    @property
    def tree(self) -> ModelTree:
        return self._cache.tree

    def model_name(self, name: str) -> str | None:
        models = self._cache.tree.models
        if name in models:
            return name
        if name == self.api_name and SINGLE_MODEL_NAME in models:  # (a `path` API's one model)
            return SINGLE_MODEL_NAME
        return None

    def version_state(self, name: str, version: int) -> dict[str, Any]:
        return self._cache.state(name, version)

    # --- through the handler's calls ------------------------------------------------

    def _run_in_handler(self, request: tuple[Callable[..., Any], tuple[Any, ...]]) -> Any:
        func, args = request
        return func(*args)

    async def _in_handler(self, used: dict[str, Any], func: Callable[..., Any], *args: Any) -> Any:
        return await self._call(self._run, {"request": (func, args)}, used)

    def _named(self, name: str, version: int | None) -> int:
        """The version a request means: the one it names, else the model's latest (0: none)."""
        if version is not None:
            return version
        model = self._cache.tree.models.get(name)
        return max(model.valid_versions, default=0) if model is not None else 0

    def _model(self, name: str, version: int | None) -> tuple[Any, int]:
        return self._client.get_model_and_version(name, "latest" if version is None else version)

    async def signature(
        self, name: str, version: int | None, key: str | None, used: dict[str, Any]
    ) -> tuple[Signature, int]:
        if self._tensorflow:
            return await self._in_handler(used, self._tf_signature, name, version, key)
        declare = getattr(self._handler, "infer_signature", None)
        if not callable(declare):
            return Signature(strict=False), self._named(name, version)
        declared = await self._in_handler(used, declare, name, "latest" if version is None else version)
        return _declared(declared), self._named(name, version)

    def _tf_signature(self, name: str, version: int | None, key: str | None) -> tuple[Signature, int]:
        model, v = self._model(name, version)
        return self._tf_signature_of(model, key), v

    def _tf_signature_of(self, model: Any, key: str | None) -> Signature:
        """A loaded SavedModel's signature as the protocols describe it (made once per model
        object and key, kept as long as the object lives)."""
        made = self._signatures.get(model)
        if made is None:
            made = self._signatures[model] = {}
        signature = made.get(key)
        if signature is None:
            resolved, inputs, outputs = model.signature(key)
            signature = made[key] = Signature(
                inputs=tuple(_tf_spec(n, s) for n, s in inputs.items()),
                outputs=tuple(_tf_spec(n, s) for n, s in sorted(outputs.items())),
                key=resolved,
                method=model.method_name(resolved),
            )
        return signature

    async def signature_defs(
        self, name: str, version: int | None, used: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        if not self._tensorflow:
            raise BadRequestError("TF Serving's metadata is served for TensorFlow APIs only")
        return await self._in_handler(used, self._tf_defs, name, version)

    def _tf_defs(self, name: str, version: int | None) -> tuple[dict[str, Any], int]:
        model, v = self._model(name, version)
        return model.signature_defs(), v

    async def infer(
        self,
        name: str,
        version: int | None,
        prepare: Prepare,
        key: str | None,
        used: dict[str, Any],
    ) -> tuple[dict[str, np.ndarray], int]:
        if self._tensorflow:
            return await self._in_handler(used, self._tf_infer, name, version, prepare, key)
        assert self._infer is not None
        inputs = prepare(_UNDECLARED)  # (a handler's declaration describes; it is not checked)
        available = {
            "inputs": inputs,
            "model_name": name,
            "model_version": "latest" if version is None else version,
        }
        result = await self._call(self._infer, self._infer.kwargs(available), used)
        if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
            raise UserHandlerError(
                "handle_infer must return a dict of output names to arrays, it returned a "
                f"{type(result).__name__}"
            )
        ran = used.get(name)  # (the version its get_model gave; else the one asked for, or the latest)
        return {k: np.asarray(v) for k, v in result.items()}, ran if isinstance(ran, int) else self._named(
            name, version
        )

    def _tf_infer(
        self, name: str, version: int | None, prepare: Prepare, key: str | None
    ) -> tuple[dict[str, np.ndarray], int]:
        model, v = self._model(name, version)
        signature = self._tf_signature_of(model, key)
        outputs = model.run(prepare(signature), signature.key)
        return {o.name: outputs[o.name] for o in signature.outputs if o.name in outputs}, v


def _tf_spec(name: str, spec: Any) -> TensorSpec:
    shape = spec.shape
    dims = (-1,) if shape.rank is None else tuple(-1 if d is None else int(d) for d in shape.as_list())
    if spec.dtype.name == "string":
        return TensorSpec(name, "BYTES", dims)
    return TensorSpec(name, datatype_of(np.empty(0, dtype=spec.dtype.as_numpy_dtype)), dims)


def _declared(declared: Any) -> Signature:
    def specs(key: str) -> tuple[TensorSpec, ...]:
        items = declared.get(key, []) if isinstance(declared, dict) else None
        if not isinstance(items, list):
            raise UserHandlerError(
                f"infer_signature must return {{'inputs': [...], 'outputs': [...]}}, got {declared!r:.100}"
            )
        out = []
        for item in items:
            try:
                numpy_dtype(item["datatype"], f"infer_signature's {key}")
                out.append(
                    TensorSpec(str(item["name"]), item["datatype"], tuple(int(d) for d in item["shape"]))
                )
            except (KeyError, TypeError, ValueError, BadRequestError) as exc:
                raise UserHandlerError(
                    f"infer_signature: each of {key} needs a name, a datatype and a shape, got "
                    f"{item!r:.100} ({exc})"
                ) from exc
        return tuple(out)

    return Signature(inputs=specs("inputs"), outputs=specs("outputs"), strict=False)
