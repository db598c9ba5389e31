"""Resolve ``(model_name, model_version)`` against a model tree, as Cortex did.

Errors carry honest HTTP statuses: an unknown model or version is a 404 that
lists what exists, a version that is neither an integer nor ``latest`` a 400,
a model or version that exists but cannot be served a 503 with the reason.
"""

from __future__ import annotations

from cortex_ray.errors import (
    BadRequestError,
    InvalidVersionError,
    ModelLoadError,
    ModelNotFoundError,
    VersionNotFoundError,
)
from cortex_ray.models.tree import ModelInfo, ModelTree, VersionInfo
from cortex_ray.spec.models import SINGLE_MODEL_NAME

__all__ = ["parse_version", "resolve_model", "resolve_version"]


def parse_version(version: str | int | None) -> int | None:
    """``None`` for latest, else the integer version; 400 for anything else."""
    if version is None or version == "latest":
        return None
    if isinstance(version, bool):
        raise InvalidVersionError(
            f"model_version must be either a parse-able numeric value or 'latest', got {version!r}"
        )
    if isinstance(version, int):
        return version
    text = str(version).strip()
    if text.isdigit():
        return int(text)
    raise InvalidVersionError(
        f"model_version must be either a parse-able numeric value or 'latest', got {version!r}"
    )


def resolve_model(tree: ModelTree, name: str | None) -> tuple[str, ModelInfo]:
    """The model a request names, if it has at least one version that can be served."""
    if set(tree.models) == {SINGLE_MODEL_NAME}:
        name = SINGLE_MODEL_NAME  # single `path` mode: the name is ignored, as in Cortex
    if name is not None and not isinstance(name, str):
        raise BadRequestError(f"model_name must be a string, got {type(name).__name__}")
    available = ", ".join(n for n in tree.names if n != SINGLE_MODEL_NAME) or "none"
    if name is None:
        raise BadRequestError(f"model_name was not specified, choose one of the following: {available}")
    model = tree.models.get(name)
    if model is None:
        raise ModelNotFoundError(
            f"'{name}' model wasn't found in the list of available models: {available}",
            model=name,
            available=[n for n in tree.names if n != SINGLE_MODEL_NAME],
        )
    if model.error:
        raise ModelLoadError(f"model '{name}' cannot be served: {model.error}", model=name)
    if model.latest is None:
        if model.versions:
            raise ModelLoadError(
                f"model '{name}' has no version that can be served: {'; '.join(model.problems)}",
                model=name,
            )
        raise ModelNotFoundError(
            f"'{name}' model's versions have been removed; add at least a version to the model",
            model=name,
        )
    return name, model


def resolve_version(
    tree: ModelTree, name: str | None, version: str | int | None = "latest"
) -> tuple[str, VersionInfo]:
    """The model name and the version that serve a request for ``name``/``version``."""
    wanted = parse_version(version)
    if name is not None and not isinstance(name, str):
        raise BadRequestError(f"model_name must be a string, got {type(name).__name__}")
    if wanted is None:
        name, model = resolve_model(tree, name)
        assert model.latest is not None
        return name, model.versions[model.latest]
    if set(tree.models) == {SINGLE_MODEL_NAME}:
        name = SINGLE_MODEL_NAME
    if name is None or name not in tree.models:
        resolve_model(tree, name)  # raises the right error
    assert name is not None
    model = tree.models[name]
    info = model.versions.get(wanted)
    if info is None:
        versions = ", ".join(str(v) for v in sorted(model.versions)) or "none"
        raise VersionNotFoundError(
            f"model '{name}' of version {wanted} wasn't found (versions: {versions})",
            model=name,
            version=wanted,
        )
    if info.error:
        raise ModelLoadError(
            f"model '{name}' version {wanted} cannot be served: {info.error}", model=name, version=wanted
        )
    return name, info
