"""An API's Ray ``runtime_env``: what its processes start with.

- ``env_vars``: ``.env`` with ``handler.env`` over it, in every process of the API from its
  start (so variables read when a library is imported, ``OMP_NUM_THREADS``, apply);
- ``pip`` / ``conda``: the API's requirements, for the processes that run user code (replicas,
  AsyncAPI workers); Ray installs them on each node, and a bad requirement fails the deployment
  with pip's message;
- ``working_dir`` (a project shipped to a cluster): the project, unpacked as each process's
  working directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cortex_ray.project.files import Project
from cortex_ray.project.requirements import conda_packages, pip_packages
from cortex_ray.spec import ApiSpec

__all__ = ["INSTALL", "INSTALLED", "REQUIREMENTS_MODES", "RuntimeEnvs", "runtime_env_failure", "runtime_envs"]

INSTALL = "install"
"""Ray installs each API's ``requirements.txt`` / ``conda-packages.txt`` for its replicas (the default)."""
INSTALLED = "installed"
"""Nothing is installed: the replicas run with the environment as it is (a local run, or a
cluster image that already has what the project needs); the requirements are only checked."""
REQUIREMENTS_MODES = (INSTALL, INSTALLED)


@dataclass(frozen=True)
class RuntimeEnvs:
    """``every``: for all of the API's processes; ``user_code``: added for those that run the
    handler (Ray merges it over ``every``)."""

    every: dict[str, Any] = field(default_factory=dict)
    user_code: dict[str, Any] = field(default_factory=dict)

    def for_user_code(self) -> dict[str, Any]:
        """Both together, for a process given one runtime_env."""
        return {**self.every, **self.user_code}


def runtime_envs(
    api: ApiSpec,
    project: Project | None,
    shipped: bool = False,
    shipped_file: Any = None,
    requirements: str = INSTALL,
) -> RuntimeEnvs:
    """The API's runtime_env parts; ``shipped``: paths refer to the project as Ray unpacks it;
    ``requirements``: :data:`INSTALL` or :data:`INSTALLED` (nothing to install). Without a project
    (an API given on its own): ``handler.env`` only."""
    every: dict[str, Any] = {}
    env = project.env_vars(api) if project is not None else dict(api.handler.env)
    if env:
        every["env_vars"] = env
    user: dict[str, Any] = {}
    if project is None or requirements == INSTALLED:
        return RuntimeEnvs(every, user)
    pip_file = project.dependency(api, "pip")
    pip: list[str] = []
    if pip_file is not None:
        kwargs = {"shipped_file": shipped_file} if shipped_file is not None else {}
        pip = pip_packages(pip_file, project.root, shipped, **kwargs)
    conda = project.dependency(api, "conda")
    conda_list = conda_packages(conda) if conda is not None else []
    if conda_list:  # Ray takes pip inside conda, not beside it (Cortex: conda first, then pip)
        user["conda"] = {"dependencies": [*conda_list, *(["pip", {"pip": pip}] if pip else [])]}
    elif pip:
        user["pip"] = {"packages": pip, "pip_check": False}
    return RuntimeEnvs(every, user)


_SETUP_FAILED = ("Failed to set up runtime environment", "RuntimeEnvSetupError")


def runtime_env_failure(message: str) -> str | None:
    """When Serve's status ``message`` says a replica's runtime environment could not be built
    (``pip`` failed, most often), pip's own lines from it; else ``None``. Such an API never
    starts: whoever waits for it can stop at once instead of after Serve's retries."""
    if not any(marker in message for marker in _SETUP_FAILED):
        return None
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [
        line for line in lines if line.startswith(("ERROR:", "error:")) or "No matching distribution" in line
    ]
    picked = errors or lines[-15:]
    return "\n".join(dict.fromkeys(picked))[-3000:]
