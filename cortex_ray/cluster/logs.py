"""An API's log files on this node: the stdout/stderr of the API's processes (replicas,
workers, reloader, dispatcher), as Ray writes them under its session's ``logs/``."""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["api_log_files", "follow", "logs_dir"]


def logs_dir() -> Path:
    """The logs folder of the Ray session this process is connected to."""
    import ray

    node = ray._private.worker.global_worker.node
    return Path(node.get_logs_dir_path())


def api_log_files(api: str, pids: set[int], root: Path | None = None) -> list[Path]:
    """The API's log files on this node, oldest change first: the stdout and stderr Ray keeps of
    its replicas (named ``ServeReplica:<api>:...`` in the file's header; Serve's own replica
    log lines are in them too) and of ``pids`` (its reloader and dispatcher)."""
    root = root or logs_dir()
    found = []
    for name in glob.glob(str(root / "worker-*")):
        if not name.endswith((".out", ".err")) or os.path.getsize(name) == 0:
            continue
        pid = name.rsplit("-", 1)[-1].split(".")[0]
        mine = (pid.isdigit() and int(pid) in pids) or _actor_of(name).startswith(f"ServeReplica:{api}:")
        if mine and not _header_only(name):
            found.append(Path(name))
    return sorted(found, key=lambda f: f.stat().st_mtime)


def _header_only(path: str) -> bool:
    """Whether the file holds nothing but the lines Ray writes at its top."""
    if os.path.getsize(path) > 4096:
        return False
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines()
    return all(not line.strip() or line.startswith(":") for line in lines)


def _actor_of(path: str) -> str:
    """The actor named in the header Ray writes at the top of a worker's log file."""
    with open(path, "rb") as f:
        for line in f.read(4096).decode("utf-8", "replace").splitlines()[:5]:
            if line.startswith(":actor_name:"):
                return line[len(":actor_name:") :]
    return ""


def tail(path: Path, lines: int) -> list[str]:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        text = f.read().decode("utf-8", "replace")
    return text.splitlines()[-lines:] if lines else []


def follow(files: list[Path], poll: float = 0.5) -> Iterator[tuple[Path, str]]:
    """New lines appended to ``files`` from now on (their ends are taken at the call), forever."""
    return _follow(files, {f: f.stat().st_size for f in files}, poll)


def _follow(files: list[Path], offsets: dict[Path, int], poll: float) -> Iterator[tuple[Path, str]]:
    partial: dict[Path, str] = {}
    while True:
        for f in files:
            try:
                size = f.stat().st_size
            except OSError:
                continue
            if size < offsets[f]:
                offsets[f] = 0  # rotated
            if size == offsets[f]:
                continue
            with open(f, "rb") as handle:
                handle.seek(offsets[f])
                data = handle.read()
            offsets[f] += len(data)
            text = partial.pop(f, "") + data.decode("utf-8", "replace")
            *complete, rest = text.split("\n")
            if rest:
                partial[f] = rest
            for line in complete:
                yield f, line
        time.sleep(poll)
