"""Resolve ``(model_name, model_version)`` against a model tree, as Cortex did.

Errors carry honest HTTP statuses: an unknown model or version is a 404 that
lists what exists, a version that is neither a decimal integer nor ``latest`` a
400, a model or version that exists but cannot be served a 503 with the reason.
A successful lookup costs the same with 10 models or 10,000: the sorted names
and versions are computed once per tree, and the lists in error messages only
when there is an error.
"""

from __future__ import annotations

import re

from cortex_ray.errors import (
    BadRequestError,
    InvalidVersionError,
    ModelLoadError,
    ModelNotFoundError,
    VersionNotFoundError,
)
from cortex_ray.models.tree import ModelInfo, ModelTree, VersionInfo
from cortex_ray.spec.names import SINGLE_MODEL_NAME

__all__ = ["MAX_VERSION_DIGITS", "parse_version", "resolve_model", "resolve_version"]

MAX_VERSION_DIGITS = 18
"""A version is at most 18 decimal digits (under 10**18, what any storage folder name holds)."""
_DECIMAL = re.compile(rf"[0-9]{{1,{MAX_VERSION_DIGITS}}}")


def parse_version(version: str | int | None) -> int | None:
    """``None`` for latest, else the integer version; 400 for anything else."""
    if version is None or version == "latest":
        return None
    if isinstance(version, int) and not isinstance(version, bool):
        if 0 <= version < 10**MAX_VERSION_DIGITS:
            return version
    elif isinstance(version, str):
        text = version.strip()
        if _DECIMAL.fullmatch(text):  # ASCII digits only (str.isdigit also takes superscripts)
            return int(text)
    shown = repr(version) if len(repr(version)) <= 40 else repr(version)[:37] + "..."
    raise InvalidVersionError(
        "model_version must be either a parse-able numeric value or 'latest' (a decimal integer "
        f"of at most {MAX_VERSION_DIGITS} digits), got {shown}"
    )


def _available(tree: ModelTree) -> list[str]:
    return [n for n in tree.names if n != SINGLE_MODEL_NAME]


def _is_single(tree: ModelTree) -> bool:
    return len(tree.models) == 1 and SINGLE_MODEL_NAME in tree.models


def resolve_model(tree: ModelTree, name: str | None) -> tuple[str, ModelInfo]:
    """The model a request names, if it has at least one version that can be served."""
    if _is_single(tree):
        name = SINGLE_MODEL_NAME  # single `path` mode: the name is ignored, as in Cortex
    if name is not None and not isinstance(name, str):
        raise BadRequestError(f"model_name must be a string, got {type(name).__name__}")
    model = tree.models.get(name) if name is not None else None
    if model is None:
        available = _available(tree)
        listed = ", ".join(available) or "none"
        if name is None:
            raise BadRequestError(f"model_name was not specified, choose one of the following: {listed}")
        raise ModelNotFoundError(
            f"'{name}' model wasn't found in the list of available models: {listed}",
            model=name,
            available=available,
        )
    assert name is not None
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
    if _is_single(tree):
        name = SINGLE_MODEL_NAME
    found = tree.models.get(name) if name is not None else None
    if found is None:
        resolve_model(tree, name)  # raises the right error
    assert found is not None and name is not None
    model = found
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
