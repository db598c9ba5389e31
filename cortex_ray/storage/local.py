"""A :class:`Storage` on a local folder (``file:///abs/path``).

Checksums: the ``etag`` of a local file is ``f"{size}-{mtime_ns}"``. Hashing
every file on every listing would be too slow for big model folders (tens of
thousands of files), and nanosecond modification times (Linux) catch an
in-place rewrite even within the same second. Limits: a rewrite that keeps the
size *and* lands in the same filesystem timestamp tick (a few milliseconds on
some kernels and filesystems), or a tool that restores the old mtime, is not
seen.

Nothing is skipped while listing: hidden files are listed like any other, and
folders themselves never appear (only the files in them). Symbolic links to
files and folders are followed (a link cycle is visited once).
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from cortex_ray.errors import (
    StorageAccessDeniedError,
    StorageChangedError,
    StorageError,
    StorageNotFoundError,
)
from cortex_ray.storage.base import ObjectInfo, Storage, join_key

__all__ = ["LocalStorage"]


class LocalStorage(Storage):
    """Objects are the files below ``root``; keys are ``/``-separated relative paths."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(os.path.normpath(os.fspath(root)))
        if not path.is_absolute():
            raise ValueError(f"LocalStorage needs an absolute folder, got {os.fspath(root)!r}")
        self.root = path
        self.uri = "file://" + str(path).rstrip("/") + "/"

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    # --- helpers ------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The local path of ``key``; refuses keys that would leave the root."""
        clean = join_key(key)
        if any(part == ".." for part in clean.split("/")):
            raise ValueError(f"{self.describe(key)}: a key may not contain '..'")
        return self.root / clean if clean else self.root

    @contextmanager
    def _boundary(self, key: str) -> Iterator[None]:
        """Translate ``OSError`` into the project's storage errors."""
        try:
            yield
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise StorageNotFoundError(f"{self.describe(key)}: no such file") from exc
        except PermissionError as exc:
            raise StorageAccessDeniedError(
                f"{self.describe(key)}: permission denied; check the file permissions"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise StorageNotFoundError(f"{self.describe(key)}: no such file") from exc
            raise StorageError(f"{self.describe(key)}: {exc.strerror or exc}") from exc

    # --- the interface ------------------------------------------------------

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = self._path(prefix)
        found: list[ObjectInfo] = []
        # (folder path, key prefix relative to ``prefix``, the folders above it) still to scan: a
        # folder linked into itself is not entered again (a loop), but one linked in two places
        # is listed in both, so a folder lists the same whether listed alone or from above
        stack: list[tuple[str, str, tuple[tuple[int, int], ...]]] = [(str(base), "", ())]
        with self._boundary(prefix):
            if not base.is_dir():
                return []
            while stack:
                folder, rel, above = stack.pop()
                try:
                    st = os.stat(folder)
                    here = (st.st_dev, st.st_ino)
                    if here in above:
                        continue
                    above = (*above, here)
                    entries = list(os.scandir(folder))
                except (FileNotFoundError, NotADirectoryError):
                    continue  # removed while we were listing
                for entry in entries:
                    try:
                        if entry.is_dir():
                            stack.append((entry.path, f"{rel}{entry.name}/", above))
                        elif entry.is_file():
                            st = entry.stat()
                            found.append(
                                ObjectInfo(
                                    key=f"{rel}{entry.name}",
                                    size=st.st_size,
                                    etag=f"{st.st_size}-{st.st_mtime_ns}",
                                    mtime=st.st_mtime,
                                )
                            )
                    except FileNotFoundError:
                        continue  # removed while we were listing, or a dangling link
        found.sort(key=_by_key)
        return found

    def read(self, key: str) -> bytes:
        with self._boundary(key):
            return self._path(key).read_bytes()

    def upload(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write ``data`` durably and atomically (temp file, fsync, rename, fsync of the folder);
        ``content_type`` is not kept."""
        path = self._object_path(key)
        with self._boundary(key):
            tmp = self._write_temp(path, data)
            try:
                os.replace(tmp, path)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            _fsync_folder(path.parent)

    def create(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """Create-only write: a hard link of a complete temp file, which fails if the key exists."""
        path = self._object_path(key)
        with self._boundary(key):
            tmp = self._write_temp(path, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)
            _fsync_folder(path.parent)
            return True

    def _object_path(self, key: str) -> Path:
        path = self._path(key)
        if path == self.root:
            raise ValueError(f"{self.describe(key)}: an object key may not be empty")
        return path

    def _write_temp(self, path: Path, data: bytes) -> str:
        """A complete, fsynced temp file beside ``path`` (whose folders are created durably)."""
        _make_folders(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    def list_folders(self, prefix: str = "") -> builtins.list[str]:
        base = self._path(prefix)
        with self._boundary(prefix):
            if not base.is_dir():
                return []
            return sorted(e.name for e in os.scandir(base) if e.is_dir())

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise StorageNotFoundError(
                f"{self.uri}: the folder does not exist (moved, deleted or not mounted); "
                "nothing is changed until it is back"
            )

    def delete(self, key: str) -> None:
        with self._boundary(key):
            self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every file below ``prefix`` (the folder itself goes too, unless it is the root)."""
        path = self._path(prefix)
        if path == self.root:
            super().delete_prefix(prefix)
            return
        with self._boundary(prefix):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)

    def _download_object(self, key: str, dest: Path, expected: ObjectInfo) -> None:
        """Copy one file, checking its size and modification time (its ``etag``) before and
        after, so a file rewritten since it was listed, or during the copy, is refused."""
        source = self._path(key)
        with self._boundary(key):
            self._check_unchanged(key, source, expected)
            shutil.copyfile(source, dest)
            self._check_unchanged(key, source, expected)

    def _check_unchanged(self, key: str, source: Path, expected: ObjectInfo) -> None:
        st = os.stat(source)
        if f"{st.st_size}-{st.st_mtime_ns}" != expected.etag:
            raise StorageChangedError(
                f"{self.describe(key)}: the file changed since it was listed "
                f"(size {expected.size} -> {st.st_size} or a newer modification time)"
            )


def _make_folders(folder: Path) -> None:
    """``mkdir -p`` that fsyncs the parent of every folder it creates (a power loss keeps them)."""
    missing: list[Path] = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders; the data itself was synced
        pass
    finally:
        os.close(fd)


def _by_key(obj: ObjectInfo) -> str:
    return obj.key
