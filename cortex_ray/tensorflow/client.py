"""``tensorflow_client``: what a TensorFlow handler calls to run a SavedModel.

``predict(model_input, model_name=None, model_version="latest")`` returns what
Cortex returned (each output name mapped to a flat list of its values), so
existing handlers run unmodified; ``keep_shapes=True`` returns nested lists with
the output shapes kept. Names, versions, live reloading and the cache are those
of the Python handler's ``model_client`` (the same machinery underneath).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["ModelGetter", "TensorFlowClient"]


class ModelGetter(Protocol):
    """What the TensorFlow client needs of the replica's ``model_client``."""

    def get_model(self, model_name: str | None = None, model_version: str | int = "latest") -> Any: ...

    async def get_model_async(
        self, model_name: str | None = None, model_version: str | int = "latest"
    ) -> Any: ...

    @property
    def served_versions(self) -> dict[str, int]: ...

    @property
    def models(self) -> dict[str, list[int]]: ...


class TensorFlowClient:
    def __init__(self, models: ModelGetter) -> None:
        self._models = models

    def predict(
        self,
        model_input: Any,
        model_name: str | None = None,
        model_version: str | int = "latest",
        *,
        keep_shapes: bool = False,
    ) -> dict[str, Any]:
        """Run the model's serving signature on ``model_input`` (a dict keyed by input names)."""
        saved = self._models.get_model(model_name, model_version)
        return saved.predict(model_input, keep_shapes=keep_shapes)

    async def predict_async(
        self,
        model_input: Any,
        model_name: str | None = None,
        model_version: str | int = "latest",
        *,
        keep_shapes: bool = False,
    ) -> dict[str, Any]:
        """:meth:`predict` for ``async def`` handlers (inference runs in a thread)."""
        saved = await self._models.get_model_async(model_name, model_version)
        return await asyncio.to_thread(saved.predict, model_input, keep_shapes)

    @property
    def served_versions(self) -> dict[str, int]:
        return self._models.served_versions

    @property
    def models(self) -> dict[str, list[int]]:
        return self._models.models
