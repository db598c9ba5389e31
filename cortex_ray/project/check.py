"""The project's checks, the same for ``validate``, ``run``, ``build-config`` and ``deploy``:
``.env`` parses, the dependency files read, the local paths in ``requirements.txt`` exist, and
each API's requirements either resolve for this Python (pip's resolver, nothing installed: the
preflight, :mod:`cortex_ray.project.preflight`) or, with ``--requirements installed``, are
installed here already (:mod:`cortex_ray.project.installed`). ``CORTEX_RAY_PREFLIGHT=0`` skips the
preflight (a deployer that cannot reach the cluster's package index)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cortex_ray.errors import SpecError, SpecErrors
from cortex_ray.project.files import Project
from cortex_ray.project.installed import check_installed
from cortex_ray.project.preflight import preflight
from cortex_ray.project.runtime_env import INSTALL, INSTALLED, runtime_envs
from cortex_ray.spec import ApiSpec, Spec

__all__ = ["check_project"]


def check_project(
    spec: Spec, base_dir: str | os.PathLike[str] | None = None, requirements: str = INSTALL
) -> list[str]:
    """Raise :class:`SpecErrors` with every problem of the spec's project files; returns warnings.

    ``requirements``: ``install`` (each API's requirements must resolve for this Python: the
    preflight) or ``installed`` (each must be installed here already)."""
    project = Project.of(spec, base_dir)
    errors: list[SpecError] = []
    warnings: list[str] = []
    checked: dict[str, tuple[list[str], list[str]]] = {}  # one check per file, however many APIs share it
    for index, api in enumerate(spec.apis):
        try:
            envs = runtime_envs(api, project, requirements=requirements)
        except SpecError as exc:
            errors.append(exc)
            continue
        found_errors, found_warnings = check_requirements(project, api, index, requirements, checked)
        errors += found_errors
        warnings += found_warnings
        if "conda" in envs.user_code and shutil.which("conda") is None:
            warnings.append(
                f"api {api.name!r}: {api.handler.dependencies.conda} needs conda on every node that "
                "runs the API (Ray installs the packages with it), and this machine has none"
            )
    if errors:
        raise SpecErrors(errors)
    return warnings


def check_requirements(
    project: Project,
    api: ApiSpec,
    index: int,
    requirements: str,
    checked: dict[str, tuple[list[str], list[str]]] | None = None,
) -> tuple[list[SpecError], list[str]]:
    """One API's requirements, by the mode: the errors and the warnings. ``checked``: files
    already checked (by their path), reused."""
    pip_file = project.dependency(api, "pip")
    if pip_file is None:
        return [], []
    checked = {} if checked is None else checked
    key = str(pip_file.resolve())
    if key not in checked:
        checked[key] = _check_file(pip_file, project, requirements)
    problems, warnings = checked[key]
    errors = [
        SpecError(
            problem + (_way_forward(problem) if requirements == INSTALL else ""),
            api_name=api.name,
            api_index=index,
        )
        for problem in problems
    ]
    return errors, [f"api {api.name!r}: {w}" for w in warnings]


def _way_forward(problem: str) -> str:
    edit = "pin a version that installs (named above)" if "; try " in problem else "fix or drop that line"
    return (
        f". Ways forward: {edit}, or run with the environment as it is, installing nothing: "
        "--requirements installed (README: Moving a Cortex project of 2021)"
    )


def _check_file(pip_file: Path, project: Project, requirements: str) -> tuple[list[str], list[str]]:
    if requirements == INSTALLED:
        found = check_installed(pip_file, project.root)
        return found.errors, found.warnings
    if os.environ.get("CORTEX_RAY_PREFLIGHT", "1") in ("0", "false", "off"):
        return [], []
    report = preflight(pip_file, project.root)
    return [str(e) for e in report.errors], [str(w) for w in report.warnings]
