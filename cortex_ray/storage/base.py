"""The one small storage interface every backend implements.

A :class:`Storage` is opened on a root URI (``s3://bucket/prefix/``,
``file:///abs/path``, ``mem://name/prefix``). Every key it takes or returns is
relative to that root and uses ``/`` as separator; a "prefix" is a key that
names a folder (with or without its trailing ``/``).
"""

from __future__ import annotations

import abc
import builtins
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cortex_ray.errors import StorageError

__all__ = ["ObjectInfo", "Storage", "join_key"]


@dataclass(frozen=True, order=True, slots=True)
class ObjectInfo:
    """One object (file) found by :meth:`Storage.list`."""

    key: str
    """Relative to the listed prefix, ``/``-separated, never starting with ``/``."""
    size: int
    etag: str
    """An ETag (S3) or a content checksum (local, memory): changes when the bytes do."""
    mtime: float
    """Modification time, seconds since the epoch (S3 gives whole seconds)."""

    def __reduce__(self) -> tuple[Any, tuple[str, int, str, float]]:
        # unpickled (a replica's tree) with its key interned: every version's "saved_model.pb"
        # is one string, not one per version
        return _object_info, (self.key, self.size, self.etag, self.mtime)


def _object_info(key: str, size: int, etag: str, mtime: float) -> ObjectInfo:
    return ObjectInfo(sys.intern(key), size, etag, mtime)


def join_key(*parts: str) -> str:
    """Join key parts with single ``/`` separators (empty parts are skipped)."""
    cleaned = [p.strip("/") for p in parts if p and p.strip("/")]
    return "/".join(cleaned)


class Storage(abc.ABC):
    """List, read, download, upload and delete objects below one root URI."""

    uri: str
    """The root URI this storage was opened on, always ending with ``/``."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object below ``prefix``, recursively, keys relative to ``prefix``.

        Folder placeholder objects (keys ending in ``/``) are skipped. A prefix
        that holds nothing gives an empty list, not an error.
        """

    @abc.abstractmethod
    def read(self, key: str) -> bytes:
        """The bytes of one object; :class:`StorageNotFoundError` when absent."""

    @abc.abstractmethod
    def upload(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Create or replace one object."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; deleting an absent object is not an error."""

    @abc.abstractmethod
    def create(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """Create one object only if it does not exist yet, atomically; ``False`` when it existed.

        Two writers racing to create the same key: exactly one gets ``True``.
        """

    @abc.abstractmethod
    def list_folders(self, prefix: str = "") -> builtins.list[str]:
        """The names of the folders directly below ``prefix`` (one level, sorted)."""

    @abc.abstractmethod
    def _download_object(self, key: str, dest: Path, expected: ObjectInfo) -> None:
        """Write one object to the local file ``dest`` (its folder exists).

        The bytes written must be those ``expected`` (an entry of a listing) describes:
        when the object no longer matches it (rewritten since it was listed), raise
        :class:`~cortex_ray.errors.StorageChangedError` instead of writing other bytes.
        """

    def check_root(self) -> None:  # noqa: B027  (a hook with a default: nothing to check)
        """Raise :class:`~cortex_ray.errors.StorageNotFoundError` when the root itself is
        absent (a local folder that does not exist or is not mounted). Backends without
        folders (S3, memory) have nothing to check: an absent prefix is an empty one."""

    def describe(self, key: str = "") -> str:
        """A human-readable location for messages, e.g. ``s3://bucket/models/iris``."""
        return self.uri + key.lstrip("/")

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object below ``prefix``."""
        for obj in self.list(prefix):
            self.delete(join_key(prefix, obj.key))

    def download(
        self,
        prefix: str,
        dest: str | os.PathLike[str],
        objects: Iterable[ObjectInfo] | None = None,
        max_workers: int = 8,
    ) -> Path:
        """Download everything below ``prefix`` into the folder ``dest``, atomically.

        Files land in a temporary sibling folder first and are renamed into
        place at the end, so ``dest`` is either absent/old or complete, never
        half-written. Files are fetched in parallel. ``objects`` (a listing of
        ``prefix`` taken earlier) pins exactly which files are fetched, and which bytes:
        a file rewritten since that listing raises
        :class:`~cortex_ray.errors.StorageChangedError` (S3: ``If-Match`` with the listed
        ETag; local folders: size and modification time checked around the copy), so a
        download never mixes files of two uploads.
        """
        from concurrent.futures import ThreadPoolExecutor

        final = Path(dest)
        final.parent.mkdir(parents=True, exist_ok=True)
        listing = list(objects) if objects is not None else self.list(prefix)
        unsafe = [obj.key for obj in listing if not _safe_key(obj.key)]
        if unsafe:
            raise StorageError(
                f"{self.describe(prefix)}: refusing keys that would leave the download folder: "
                + ", ".join(unsafe[:5])
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            for folder in sorted({obj.key.rpartition("/")[0] for obj in listing} - {""}):
                (tmp / folder).mkdir(parents=True, exist_ok=True)

            def fetch(obj: ObjectInfo) -> None:
                self._download_object(join_key(prefix, obj.key), tmp / obj.key, obj)

            if listing:
                workers = max(1, min(max_workers, len(listing)))
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    futures = [pool.submit(fetch, obj) for obj in listing]
                    try:
                        for future in futures:
                            future.result()
                    except BaseException:
                        # Fail fast: do not fetch the rest once one file failed
                        # (an unreachable endpoint would otherwise be retried
                        # for every remaining object).
                        for pending in futures:
                            pending.cancel()
                        raise
            if final.exists():
                trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(final, trash)
                os.replace(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final


def _safe_key(key: str) -> bool:
    """A relative key without empty, ``.`` or ``..`` segments (never leaves its folder)."""
    parts = key.split("/")
    return bool(key) and not key.startswith("/") and all(p not in ("", ".", "..") for p in parts)
