"""``--requirements installed``: run with the environment as it is, and check that it has what the
project asks for.

Nothing is installed: a local run uses this Python's packages, and a cluster the image's. Each
requirement of ``requirements.txt`` must be installed here (an error names the file and line
otherwise); a version that does not match the pin is a warning (the project of 2021 pinned
``scikit-learn==0.21.3``; today's 1.x may serve its models, or may not: the warning says which
is installed).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from cortex_ray.project.requirements import RequirementLine, requirement_lines

__all__ = ["InstalledCheck", "check_installed"]


@dataclass
class InstalledCheck:
    errors: list[str]
    """``file:line: ...``: requirements not installed here."""
    warnings: list[str]
    """Installed in another version than the pin, or lines that cannot be checked."""


def check_installed(file: Path, root: Path) -> InstalledCheck:
    """Each requirement of ``file`` (nested ``-r`` files included) against this environment."""
    found = InstalledCheck([], [])
    for entry in requirement_lines(file, root):
        if entry.is_option:
            continue
        name, requirement = _parse(entry)
        if requirement is not None and requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not for this Python or platform (``dataclasses; python_version < "3.7"``)
        if name is None:
            found.warnings.append(f"{entry.where}: {entry.text!r} cannot be checked (not a name pip knows)")
            continue
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found.errors.append(
                f"{entry.where}: {entry.text} is not installed in this environment, which "
                "--requirements installed runs with as it is: install it here (or in the cluster's "
                "image), or drop --requirements installed to have Ray install the requirements"
            )
            continue
        if (
            requirement is not None
            and requirement.specifier
            and not requirement.specifier.contains(version, prereleases=True)
        ):
            found.warnings.append(
                f"{entry.where}: {entry.text} is pinned, {name} {version} is installed (it is used as it is)"
            )
    return found


def _parse(entry: RequirementLine) -> tuple[str | None, Requirement | None]:
    """The distribution name a line asks for, and the requirement when it is one (a local wheel
    gives its name from the file name)."""
    text = entry.text
    if text.startswith(("-e ", "--editable ", "--editable=")):
        text = text.split(None, 1)[-1] if " " in text else text.split("=", 1)[1]
    path = entry.pip.split(None, 1)[-1]
    if path.endswith(".whl"):
        return canonicalize_name(Path(path).name.split("-", 1)[0]), None
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        return None, None
    return requirement.name, requirement
