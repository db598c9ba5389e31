"""A fake of :class:`~cortex_ray.protocols.ProtocolModels`: numpy models, no Ray, no TF."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from cortex_ray.endpoint import Incoming, Outgoing
from cortex_ray.errors import BadRequestError
from cortex_ray.models import ModelTree, build_model
from cortex_ray.protocols import ProtocolRoutes, Signature, TensorSpec
from cortex_ray.storage import ObjectInfo

Model = tuple[Signature, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]


def half_plus_two(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": np.asarray(arrays["x"], dtype=np.float32) * np.float32(0.5) + np.float32(2)}


def text(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    items = [v if isinstance(v, bytes) else str(v).encode() for v in arrays["text"].reshape(-1)]
    upper = np.empty(len(items), dtype=object)
    upper[:] = [v.upper() for v in items]
    return {"length": np.array([len(v) for v in items], dtype=np.int32), "upper": upper, "raw_bytes": upper}


MODELS: dict[str, Model] = {
    "half_plus_two": (
        Signature((TensorSpec("x", "FP32", (-1,)),), (TensorSpec("y", "FP32", (-1,)),), "serving_default"),
        half_plus_two,
    ),
    "text": (
        Signature(
            (TensorSpec("text", "BYTES", (-1,)),),
            (
                TensorSpec("length", "INT32", (-1,)),
                TensorSpec("raw_bytes", "BYTES", (-1,)),
                TensorSpec("upper", "BYTES", (-1,)),
            ),
            "serving_default",
        ),
        text,
    ),
}


class FakeModels:
    api_name = "api"
    platform = "tensorflow_savedmodel"

    def __init__(self, versions: dict[str, list[int]] | None = None) -> None:
        versions = versions or {"half_plus_two": [123], "text": [1, 2]}
        self.tree = ModelTree(
            {
                name: build_model(
                    name, f"mem://m/{name}/", [ObjectInfo(f"{v}/m", 1, "e", 1.0) for v in vs], "python"
                )
                for name, vs in versions.items()
            }
        )
        self.ready = True
        self.states: dict[tuple[str, int], dict[str, Any]] = {}
        self.calls: list[tuple[str, int | None]] = []

    def model_name(self, name: str) -> str | None:
        return name if name in self.tree.models else None

    def version_state(self, name: str, version: int) -> dict[str, Any]:
        return self.states.get((name, version), {"state": "available", "in_memory": True})

    def _resolve(self, name: str, version: int | None) -> int:
        return version if version is not None else max(self.tree.models[name].valid_versions)

    async def signature(
        self, name: str, version: int | None, key: str | None, used: dict[str, Any]
    ) -> tuple[Signature, int]:
        if key not in (None, "", "serving_default"):
            raise BadRequestError(f"no signature '{key}'")
        return MODELS[name][0], self._resolve(name, version)

    async def signature_defs(
        self, name: str, version: int | None, used: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        return {"serving_default": {"method_name": "tensorflow/serving/predict"}}, self._resolve(
            name, version
        )

    async def infer(
        self, name: str, version: int | None, prepare: Any, key: str | None, used: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], int]:
        signature, v = await self.signature(name, version, key, used)
        inputs = prepare(signature)
        self.calls.append((name, version))
        used[name] = v
        outputs = MODELS[name][1](inputs)
        return {o.name: outputs[o.name] for o in signature.outputs}, v


def call(
    routes: ProtocolRoutes,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Outgoing:
    incoming = Incoming(method, path, b"", headers or [], body)
    return asyncio.run(routes(incoming, {}))
