"""The project's checks, the same for ``validate``, ``run``, ``build-config`` and ``deploy``:
``.env`` parses, the dependency files read, the local paths in ``requirements.txt`` exist."""

from __future__ import annotations

import os
import shutil

from cortex_ray.errors import SpecError, SpecErrors
from cortex_ray.project.files import Project
from cortex_ray.project.runtime_env import runtime_envs
from cortex_ray.spec import Spec

__all__ = ["check_project"]


def check_project(spec: Spec, base_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Raise :class:`SpecErrors` with every problem of the spec's project files; returns warnings."""
    project = Project.of(spec, base_dir)
    errors: list[SpecError] = []
    warnings: list[str] = []
    for api in spec.apis:
        try:
            envs = runtime_envs(api, project)
        except SpecError as exc:
            errors.append(exc)
            continue
        if "conda" in envs.user_code and shutil.which("conda") is None:
            warnings.append(
                f"api {api.name!r}: {api.handler.dependencies.conda} needs conda on every node that "
                "runs the API (Ray installs the packages with it), and this machine has none"
            )
    if errors:
        raise SpecErrors(errors)
    return warnings
