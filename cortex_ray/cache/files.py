"""Where the disk tier's files come from and how they go: the cache's only I/O, injectable.

:class:`StorageFiles` (the default) downloads a version's files from its storage (S3, a
local folder, the in-memory fake) into a folder, atomically, and deletes folders. A version of
a published tree carries no file list: its folder is listed first and the listing must still be
the one published (its fingerprint), or the download fails as changed. A test (or a
fault scenario) gives the cache its own :class:`ModelFiles`: a disk that fills, a slow network.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from cortex_ray.models.tree import VersionInfo, listed_files
from cortex_ray.storage import open_storage

__all__ = ["ModelFiles", "StorageFiles"]


class ModelFiles(Protocol):
    def fetch(self, info: VersionInfo, dest: Path) -> None:
        """Download the version's files into ``dest`` (absent before; complete after, or absent on
        an error). Runs in a thread."""
        ...

    def remove(self, folder: Path) -> None:
        """Delete a downloaded folder (gone or not, no error). Runs in a thread."""
        ...


class StorageFiles:
    def fetch(self, info: VersionInfo, dest: Path) -> None:
        storage = open_storage(info.uri)
        files = listed_files(info, storage.list("") if info.files is None else ())
        storage.download("", dest, files)

    def remove(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
