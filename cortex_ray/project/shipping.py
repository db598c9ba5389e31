"""Sending a project to a cluster: what goes (Ray's ``excludes`` matched as Ray matches them),
how big it is, and the upload into the cluster's storage as Ray's ``working_dir``.

A project over :data:`MAX_PROJECT_BYTES` (``CORTEX_RAY_MAX_PROJECT_MB``) is refused before
anything is sent, naming its biggest files: models belong in S3 or a model folder the spec
reads in place, and ``.cortexignore`` keeps the rest out.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cortex_ray.errors import DeploymentError, SpecError

__all__ = ["MAX_PROJECT_BYTES", "check_size", "matcher", "shipped_files", "upload"]

MAX_PROJECT_BYTES = int(float(os.environ.get("CORTEX_RAY_MAX_PROJECT_MB", "100")) * 1024 * 1024)


def matcher(excludes: list[str]) -> Callable[[str], bool]:
    """``excluded(rel)`` for paths relative to the project (folders end with ``/``)."""
    from ray._private.thirdparty.pathspec import PathSpec  # the matcher Ray's upload uses

    spec = PathSpec.from_lines("gitwildmatch", excludes)
    match: Callable[[str], bool] = spec.match_file
    return match


def shipped_files(root: Path, excludes: list[str]) -> Iterator[tuple[str, int]]:
    """``(relative path, size)`` of every file that would be sent."""
    excluded = matcher(excludes)
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        prefix = "" if rel_folder == "." else rel_folder.replace(os.sep, "/") + "/"
        dirs[:] = [d for d in dirs if not excluded(f"{prefix}{d}/")]
        for name in files:
            rel = prefix + name
            if excluded(rel):
                continue
            try:
                yield rel, os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue


def check_size(root: Path, excludes: list[str], limit: int = MAX_PROJECT_BYTES) -> int:
    """The bytes that would be sent; over ``limit``: an error naming the biggest files."""
    files = list(shipped_files(root, excludes))
    total = sum(size for _, size in files)
    if total > limit:
        biggest = sorted(files, key=lambda f: -f[1])[:5]
        listed = ", ".join(f"{rel} ({_mib(size)})" for rel, size in biggest)
        raise SpecError(
            f"the project folder holds {_mib(total)} to send, over the limit of {_mib(limit)} "
            f"(CORTEX_RAY_MAX_PROJECT_MB); biggest files: {listed}. Keep models in S3 or in a "
            "model folder the spec names (those stay where they are), and list the rest in "
            ".cortexignore",
            file=str(root),
        )
    return total


def upload(root: Path, excludes: list[str]) -> str:
    """Send the project into the connected cluster; returns its ``working_dir`` URI (the same
    URI for the same files: Ray sends a package once)."""
    try:
        from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

        # the package is zipped in a scratch folder of our own: by default Ray uses the current
        # directory, which, run from the project folder, is the folder being zipped (it zips its
        # own growing zip without end)
        with tempfile.TemporaryDirectory(prefix="cortex-ray-upload-") as scratch:
            env: dict[str, Any] = upload_working_dir_if_needed(
                {"working_dir": str(root), "excludes": excludes}, include_gitignore=False, scratch_dir=scratch
            )
    except (ImportError, TypeError) as exc:  # Ray moved its helper
        raise DeploymentError(f"this Ray cannot upload a working_dir the way cortex-ray does: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise DeploymentError(f"sending the project folder {root} failed: {exc}") from exc
    return str(env["working_dir"])


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"
