"""``requirements.txt`` (and ``conda-packages.txt``) as Ray ``runtime_env`` entries.

Ray installs the ``pip`` list in a virtualenv of its own for the replica's processes, on every
node. Lines stay as pip reads them, except that paths become absolute: ``-r``/``-c`` files are
read in place, and local paths (a wheel in the project, ``-e ./pkg``, ``-f ./wheels``) point at
the project folder: on this machine directly, or, when the project is shipped to a cluster, in
the copy Ray unpacks on each node (``${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from cortex_ray.errors import SpecError

__all__ = ["WORKING_DIR_VAR", "conda_packages", "pip_packages"]

WORKING_DIR_VAR = "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"
_PATH_OPTIONS = ("-e", "--editable", "-f", "--find-links")
_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")
_ARCHIVES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")


def pip_packages(
    file: Path,
    root: Path,
    shipped: bool,
    shipped_file: Callable[[str], bool] = lambda rel: True,
) -> list[str]:
    """The pip lines of ``file`` (nested ``-r`` files inlined).

    ``shipped_file(rel)``: whether a file of the project (relative path) is shipped; a local path
    that is not is an error when ``shipped``, as is one outside the project folder.
    """
    seen: set[Path] = set()
    return list(_read(file.resolve(), root.resolve(), shipped, shipped_file, seen))


def conda_packages(file: Path) -> list[str]:
    """The packages of ``conda-packages.txt`` (one per line, ``#`` comments)."""
    lines = _lines(file)
    return [line for _, line in lines]


def _lines(file: Path) -> list[tuple[int, str]]:
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the file: {exc}", file=str(file)) from exc
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append((number, line))
    return out


def _read(
    file: Path, root: Path, shipped: bool, shipped_file: Callable[[str], bool], seen: set[Path]
) -> Iterator[str]:
    if file in seen:
        return
    seen.add(file)
    for number, line in _lines(file):
        option, _, rest = line.partition(" ")
        if "=" in option and option.split("=", 1)[0] in _FILE_OPTIONS + _PATH_OPTIONS:
            option, rest = option.split("=", 1)
        rest = rest.strip()
        where = f"line {number}"
        if option in ("-r", "--requirement"):
            nested = _local(file, rest, where)
            if not nested.is_file():
                raise SpecError(f"{where}: file {rest!r} does not exist", file=str(file))
            yield from _read(nested, root, shipped, shipped_file, seen)
        elif option in ("-c", "--constraint") or (option in _PATH_OPTIONS and _is_path(rest)):
            yield f"{option} {_place(file, rest, root, shipped, shipped_file, where)}"
        elif _is_path(line):
            yield _place(file, line, root, shipped, shipped_file, where)
        else:
            yield line


def _is_path(text: str) -> bool:
    if "://" in text and not text.startswith("file://"):
        return False
    if text.startswith(("./", "../", "/", "~", "file://")):
        return True
    return text.lower().endswith(_ARCHIVES) and "@" not in text


def _local(file: Path, text: str, where: str) -> Path:
    text = text[len("file://") :] if text.startswith("file://") else text
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else (file.parent / path)


def _place(
    file: Path, text: str, root: Path, shipped: bool, shipped_file: Callable[[str], bool], where: str
) -> str:
    path = Path(os.path.normpath(_local(file, text, where)))
    if not path.exists():
        raise SpecError(f"{where}: {text!r} does not exist ({path})", file=str(file))
    if not shipped:
        return str(path)
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        raise SpecError(
            f"{where}: {text!r} is outside the project folder {root}, which is all that is sent "
            "to the cluster: move it into the project",
            file=str(file),
        ) from None
    if not shipped_file(rel):
        raise SpecError(
            f"{where}: {text!r} is excluded from what is sent to the cluster "
            "(.cortexignore, or a dot file): it would be missing there",
            file=str(file),
        )
    return f"{WORKING_DIR_VAR}/{rel}"
