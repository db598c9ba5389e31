"""An in-memory :class:`Storage` for unit tests (``mem://<name>/<prefix>``).

Objects live in a process-global dict of named buckets, so two
``MemoryStorage`` objects opened on the same name see the same objects. The
state is *not* shared between processes (a copy pickled to a Ray actor sees
that process's own, usually empty, buckets): use it for tests without Ray.
Buckets spring into existence on first use; :func:`reset_memory_storage`
clears them all.
"""

from __future__ import annotations

import builtins
import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cortex_ray.errors import StorageChangedError, StorageNotFoundError
from cortex_ray.storage.base import ObjectInfo, Storage, join_key

__all__ = ["MemoryObject", "MemoryStorage", "reset_memory_storage"]


@dataclass(frozen=True)
class MemoryObject:
    """One stored object: its bytes, checksum and time of upload (a content type is not kept)."""

    data: bytes
    etag: str
    mtime: float


_BUCKETS: dict[str, dict[str, MemoryObject]] = {}
_LOCK = threading.RLock()


def reset_memory_storage() -> None:
    """Forget every bucket and object of every :class:`MemoryStorage`."""
    with _LOCK:
        _BUCKETS.clear()


class MemoryStorage(Storage):
    """Objects kept in memory under full keys (``prefix/key``) in a named bucket."""

    def __init__(self, name: str, prefix: str = "") -> None:
        if not name or "/" in name:
            raise ValueError(f"a memory bucket name must be non-empty without '/', got {name!r}")
        self.name = name
        self.prefix = join_key(prefix)
        self.uri = f"mem://{name}/" + (f"{self.prefix}/" if self.prefix else "")

    def __repr__(self) -> str:
        return f"MemoryStorage({self.name!r}, {self.prefix!r})"

    @classmethod
    def bucket(cls, name: str) -> dict[str, MemoryObject]:
        """The live dict of one bucket (full key -> object), created when absent."""
        with _LOCK:
            return _BUCKETS.setdefault(name, {})

    def _full(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _get(self, key: str) -> MemoryObject:
        with _LOCK:
            obj = self.bucket(self.name).get(self._full(key))
        if obj is None:
            raise StorageNotFoundError(f"{self.describe(key)}: no such object")
        return obj

    # --- the interface ------------------------------------------------------

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = self._full(prefix)
        start = f"{base}/" if base else ""
        with _LOCK:
            items = list(self.bucket(self.name).items())
        found = [
            ObjectInfo(key=key[len(start) :], size=len(obj.data), etag=obj.etag, mtime=obj.mtime)
            for key, obj in items
            if key.startswith(start) and not key.endswith("/")
        ]
        found.sort(key=_by_key)
        return found

    def read(self, key: str) -> bytes:
        return self._get(key).data

    def upload(
        self,
        key: str,
        data: bytes,
        content_type: str | None = None,
        *,
        mtime: float | None = None,
    ) -> None:
        """Store ``data``; ``mtime`` (tests only) overrides the time of upload."""
        full, obj = self._new(key, data, mtime)
        with _LOCK:
            self.bucket(self.name)[full] = obj

    def create(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        full, obj = self._new(key, data, None)
        with _LOCK:
            bucket = self.bucket(self.name)
            if full in bucket:
                return False
            bucket[full] = obj
            return True

    def list_folders(self, prefix: str = "") -> builtins.list[str]:
        base = self._full(prefix)
        start = f"{base}/" if base else ""
        with _LOCK:
            keys = list(self.bucket(self.name))
        below = [k[len(start) :] for k in keys if k.startswith(start)]
        return sorted({rest.split("/", 1)[0] for rest in below if "/" in rest})

    def _new(self, key: str, data: bytes, mtime: float | None) -> tuple[str, MemoryObject]:
        full = self._full(key)
        if not full:
            raise ValueError(f"{self.describe(key)}: an object key may not be empty")
        obj = MemoryObject(
            data=bytes(data),
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            mtime=time.time() if mtime is None else mtime,
        )
        return full, obj

    def delete(self, key: str) -> None:
        with _LOCK:
            self.bucket(self.name).pop(self._full(key), None)

    def _download_object(self, key: str, dest: Path, expected: ObjectInfo) -> None:
        obj = self._get(key)
        if obj.etag != expected.etag:
            raise StorageChangedError(f"{self.describe(key)}: the object changed since it was listed")
        dest.write_bytes(obj.data)


def _by_key(obj: ObjectInfo) -> str:
    return obj.key
