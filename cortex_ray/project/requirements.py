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
from dataclasses import dataclass
from pathlib import Path

from cortex_ray.errors import SpecError

__all__ = ["WORKING_DIR_VAR", "RequirementLine", "conda_packages", "pip_packages", "requirement_lines"]

WORKING_DIR_VAR = "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"
_PATH_OPTIONS = ("-e", "--editable", "-f", "--find-links")
_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")
_ARCHIVES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")
_REQUIREMENT_OPTIONS = ("-e", "--editable")


@dataclass(frozen=True)
class RequirementLine:
    """One line of a requirements file, where it comes from and what pip gets.

    ``file``: the file it is written in (a nested ``-r`` file for its own lines); ``line``: its
    number there (1-based; the first of a ``\\``-continued line); ``text``: as written (without
    its comment); ``pip``: as pip will get it (local paths absolute, as :func:`pip_packages`
    makes them).
    """

    file: Path
    line: int
    text: str
    pip: str

    @property
    def is_option(self) -> bool:
        """An options line (``--no-index``, ``-f``, ``--extra-index-url``, ``-c``...): pip needs
        it, it is not a requirement. ``-e``/``--editable`` lines are requirements."""
        first = self.text.split(None, 1)[0].split("=", 1)[0]
        return first.startswith("-") and first not in _REQUIREMENT_OPTIONS

    @property
    def where(self) -> str:
        """``file:line``."""
        return f"{self.file}:{self.line}"


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
    return [entry.pip for entry in _read(file.resolve(), root.resolve(), shipped, shipped_file, seen)]


def requirement_lines(file: Path, root: Path) -> list[RequirementLine]:
    """The lines of ``file`` with their provenance, nested ``-r`` files in their place (with their
    own file and line numbers), local paths made absolute for this machine. Options lines are
    kept (:attr:`RequirementLine.is_option`). Raises :class:`SpecError` as :func:`pip_packages`
    does (an unreadable file, a missing nested file or local path)."""
    seen: set[Path] = set()
    return list(_read(file.resolve(), root.resolve(), False, lambda rel: True, seen))


def conda_packages(file: Path) -> list[str]:
    """The packages of ``conda-packages.txt`` (one per line, ``#`` comments)."""
    lines = _lines(file)
    return [line for _, line in lines]


def _lines(file: Path, continued: bool = False) -> list[tuple[int, str]]:
    """The non-comment lines of ``file`` with their numbers; ``continued``: a line ending in
    ``\\`` goes on on the next one, as pip reads requirements files (``--hash`` lines)."""
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the file: {exc}", file=str(file)) from exc
    out = []
    start, pending = 0, ""
    for number, raw in enumerate(text.splitlines(), start=1):
        if continued:
            stripped = raw.strip()
            if stripped.endswith("\\") and not stripped.startswith("#"):
                start = start or number
                pending += stripped[:-1].rstrip() + " "
                continue
            if pending:
                raw, number, start, pending = pending + stripped, start, 0, ""
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append((number, line))
    if pending:
        line = pending.split(" #", 1)[0].strip()
        if line:
            out.append((start, line))
    return out


def _read(
    file: Path, root: Path, shipped: bool, shipped_file: Callable[[str], bool], seen: set[Path]
) -> Iterator[RequirementLine]:
    if file in seen:
        return
    seen.add(file)
    for number, line in _lines(file, continued=True):
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
            placed = _place(file, rest, root, shipped, shipped_file, where)
            yield RequirementLine(file, number, line, f"{option} {placed}")
        elif _is_path(line):
            yield RequirementLine(file, number, line, _place(file, line, root, shipped, shipped_file, where))
        else:
            yield RequirementLine(file, number, line, line)


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
