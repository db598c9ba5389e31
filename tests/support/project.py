"""Write handler files and model folders for tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

__all__ = ["write_files", "write_handler"]


def write_handler(project: Path, source: str, name: str = "handler.py") -> Path:
    path = project / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
