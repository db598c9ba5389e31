"""What the checks of the cluster files share: the repo, pyproject.toml and the Ray version it pins."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="session")
def ray_pin(pyproject: dict[str, Any]) -> str:
    """The version of ``ray`` that pyproject.toml's dependencies pin with ``==``."""
    rays = [r for r in map(Requirement, pyproject["project"]["dependencies"]) if r.name == "ray"]
    assert len(rays) == 1, f"pyproject.toml: expected one ray dependency, got {rays}"
    pins = [s.version for s in rays[0].specifier if s.operator == "=="]
    assert len(pins) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", pins[0]), (
        f"pyproject.toml: ray must be pinned to one release (ray[serve]==X.Y.Z), got {rays[0]}"
    )
    return pins[0]


@pytest.fixture(scope="session")
def python_tags(pyproject: dict[str, Any]) -> set[str]:
    """The rayproject/ray Python tags (py310, py311, ...) that pyproject's requires-python allows."""
    from packaging.specifiers import SpecifierSet

    allowed = SpecifierSet(pyproject["project"]["requires-python"])
    return {f"py3{minor}" for minor in range(8, 20) if f"3.{minor}" in allowed}
