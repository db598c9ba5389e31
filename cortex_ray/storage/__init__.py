"""Object storage: one small interface, three backends, one way to open them.

Examples::

    open_storage("s3://bucket/models/")   # S3 or an S3-compatible server
    open_storage("file:///srv/models")    # a local folder (or just "/srv/models")
    open_storage("mem://tests/models")    # in memory, for unit tests

URIs are taken literally (no percent-decoding), so a storage's ``uri`` always
opens the same storage again.
"""

from __future__ import annotations

import os.path

from cortex_ray.storage.base import ObjectInfo, Storage, join_key
from cortex_ray.storage.local import LocalStorage
from cortex_ray.storage.memory import MemoryStorage, reset_memory_storage
from cortex_ray.storage.s3 import S3Storage

__all__ = [
    "LocalStorage",
    "MemoryStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "join_key",
    "open_storage",
    "reset_memory_storage",
    "split_uri",
]

_SUPPORTED = "s3://bucket/prefix, file:///absolute/path, an absolute path, or mem://name/prefix"


def split_uri(uri: str) -> tuple[str, str, str]:
    """Split a storage URI into ``(scheme, bucket_or_root, prefix)``.

    ``s3://b/p/q`` -> ``("s3", "b", "p/q")``; ``mem://n/p`` -> ``("mem", "n", "p")``;
    ``file:///a/b`` and ``/a/b`` -> ``("file", "/a/b", "")``. Raises ``ValueError``
    for a relative path, an unsupported scheme or a missing bucket.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"empty storage location {uri!r}; expected {_SUPPORTED}")
    text = uri.strip()
    if text.startswith("/"):
        return "file", _abs_path(text), ""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError(
            f"storage location {uri!r} is a relative path or has no scheme; expected "
            f"{_SUPPORTED} (relative paths must be resolved against the spec file first)"
        )
    scheme = scheme.lower()
    if scheme == "file":
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost") or not slash:
            raise ValueError(f"file URI {uri!r} must name an absolute local path, e.g. file:///srv/models")
        return "file", _abs_path(path), ""
    if scheme in ("s3", "mem"):
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            what = "bucket" if scheme == "s3" else "name"
            raise ValueError(f"storage URI {uri!r} has no {what}; expected {_SUPPORTED}")
        return scheme, bucket, join_key(*prefix.split("/"))
    raise ValueError(f"unsupported storage scheme '{scheme}://' in {uri!r}; expected {_SUPPORTED}")


def _abs_path(path: str) -> str:
    return os.path.normpath("/" + path.lstrip("/"))


def open_storage(uri: str) -> Storage:
    """The :class:`Storage` for ``uri`` (see :func:`split_uri` for the accepted forms)."""
    scheme, bucket, prefix = split_uri(uri)
    if scheme == "s3":
        return S3Storage(bucket, prefix)
    if scheme == "mem":
        return MemoryStorage(bucket, prefix)
    return LocalStorage(bucket)
