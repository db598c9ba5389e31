"""What every sub-command that reads a spec prints the same way: its problems and warnings."""

from __future__ import annotations

import sys

from cortex_ray.errors import SpecErrors
from cortex_ray.project.check import check_project
from cortex_ray.project.runtime_env import INSTALL
from cortex_ray.spec import Spec, load_spec

__all__ = ["load_checked", "print_errors"]


def load_checked(path: str, requirements: str = INSTALL) -> Spec:
    """The spec and its project, with every check ``validate`` runs (the requirements' preflight
    included, or with ``installed``, that they are installed); warnings are printed. Raises
    :class:`SpecErrors` (print them with :func:`print_errors`)."""
    spec = load_spec(path)
    for warning in [*spec.warnings, *check_project(spec, requirements=requirements)]:
        print(f"warning: {warning}", file=sys.stderr)
    return spec


def print_errors(exc: SpecErrors) -> int:
    """One line per problem on standard error; returns the exit status, 1."""
    for error in exc.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1
