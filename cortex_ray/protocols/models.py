"""What the protocols need of an API's models, and nothing more (the replica provides it).

Names and versions are resolved by the API (its model tree, "latest", a single-model API's
name); inference runs where the API's handler code runs (its threads and limits), with the
model held for the request as ``get_model`` holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from cortex_ray.models.tree import ModelTree
from cortex_ray.protocols.tensors import TensorSpec

__all__ = ["Prepare", "ProtocolModels", "Signature"]


@dataclass(frozen=True)
class Signature:
    """A model version's inputs and outputs (a SavedModel signature, or what a handler says)."""

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    key: str = ""
    """The SavedModel signature's key (``""``: none)."""
    strict: bool = True
    """Whether a request's datatypes must be the inputs' (a SavedModel's are; a handler's
    declaration is a description)."""
    method: str = ""
    """The SavedModel signature's ``method_name`` (``tensorflow/serving/predict``, ``.../classify``,
    ``.../regress``; ``""``: not known)."""


Prepare = Callable[[Signature], dict[str, np.ndarray]]


class ProtocolModels(Protocol):
    @property
    def api_name(self) -> str: ...

    @property
    def platform(self) -> str:
        """``tensorflow_savedmodel`` or ``python``."""
        ...

    @property
    def ready(self) -> bool:
        """Whether the replica has its model tree (and serves)."""
        ...

    @property
    def tree(self) -> ModelTree:
        """The models and versions this replica serves from (as published)."""
        ...

    def model_name(self, name: str) -> str | None:
        """The tree's name for a name in a URL (a single-model API answers to its own name
        too); ``None``: no such model."""
        ...

    def version_state(self, name: str, version: int) -> dict[str, Any]:
        """``state`` (``available``, ``loading`` or ``failed``), ``reason``, ``in_memory``."""
        ...

    async def signature(
        self, name: str, version: int | None, key: str | None, used: dict[str, Any]
    ) -> tuple[Signature, int]:
        """A version's signature (``key``: which one, ``None``: the API's) and the version."""
        ...

    async def signature_defs(
        self, name: str, version: int | None, used: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        """A SavedModel's whole ``signature_def`` map, as TF Serving's metadata writes it."""
        ...

    async def infer(
        self,
        name: str,
        version: int | None,
        prepare: Prepare,
        key: str | None,
        used: dict[str, Any],
    ) -> tuple[dict[str, np.ndarray], int]:
        """Run a version (its signature ``key``, ``None``: the API's) on the named arrays that
        ``prepare(signature)`` makes (it checks the request against the signature, in the same
        call: no second trip); its outputs by name, in the signature's order, and the version."""
        ...
