"""Where a spec's paths point: model URIs and the handler's files.

Model paths may be ``s3://bucket/prefix/``, ``file:///abs/dir``, an absolute
local path, or a path relative to the spec file; ``mem://`` is the in-memory
fake used by unit tests. Every model path resolves to a URI ending with ``/``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["is_local_uri", "local_path_of", "resolve_local_file", "resolve_model_uri"]

_REMOTE_SCHEMES = ("s3://", "mem://")


def resolve_model_uri(value: str, base_dir: Path | None) -> str:
    """The absolute URI (ending with ``/``) that a model path in the spec names."""
    text = value.strip()
    if not text:
        raise ValueError("model path must not be empty")
    if text.startswith(_REMOTE_SCHEMES):
        scheme, _, rest = text.partition("://")
        bucket = rest.split("/", 1)[0]
        if not bucket:
            raise ValueError(f"{value!r} names no bucket (expected {scheme}://bucket/prefix/)")
        return text.rstrip("/") + "/"
    if text.startswith("file://"):
        local = text[len("file://") :]
        if not local.startswith("/"):
            raise ValueError(f"{value!r}: a file:// URI must hold an absolute path (file:///abs/dir)")
        return "file://" + os.path.normpath(local).rstrip("/") + "/"
    if "://" in text:
        raise ValueError(f"{value!r}: path must be an S3 path (e.g. s3://bucket/my-dir/) or a local folder")
    path = _expand(text)
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return "file://" + os.path.normpath(path).rstrip("/") + "/"


def resolve_local_file(value: str, base_dir: Path | None) -> Path:
    """An absolute path for a handler file or folder named relative to the spec."""
    path = _expand(value)
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return Path(os.path.normpath(path))


def _expand(value: str) -> Path:
    try:
        return Path(value).expanduser()
    except RuntimeError as exc:  # ~unknownuser/...
        raise ValueError(f"{value!r}: {exc}") from exc


def is_local_uri(uri: str) -> bool:
    return uri.startswith("file://")


def local_path_of(uri: str) -> Path:
    """The folder a ``file://`` URI names."""
    return Path(uri[len("file://") :])
