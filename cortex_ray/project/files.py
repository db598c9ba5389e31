"""What a Cortex project folder holds, read on the deployer's side.

The project is the folder of the spec file. Per API: ``requirements.txt``,
``conda-packages.txt`` and ``dependencies.sh`` (or the files ``handler.dependencies`` names),
and ``.env`` (for every API) with ``handler.env`` over it. What is sent to a cluster follows
Cortex: everything but Python bytecode, dot files and folders, what ``.cortexignore`` lists
(gitignore syntax), and local model folders (the models are read where they are).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cortex_ray.errors import SpecError
from cortex_ray.project.dotenv import read_dotenv
from cortex_ray.spec import ApiSpec, Spec
from cortex_ray.spec.paths import is_local_uri, local_path_of

__all__ = ["DEFAULT_EXCLUDES", "Project", "ProjectRef"]

DEFAULT_EXCLUDES = ["*.pyc", "*.pyo", "*.pyd", ".?*", "__pycache__/"]
"""Never sent to a cluster (Cortex's rule: bytecode, and files or folders starting with ``.``;
``.?*`` rather than ``.*``, which Ray would match against the project folder itself, ``.``)."""


@dataclass(frozen=True)
class ProjectRef:
    """The project as a replica sees it: ``root`` is the folder the spec was read from; when
    ``shipped``, Ray unpacked a copy of it as this process's working directory, so files of the
    project are found below the working directory instead."""

    root: str
    shipped: bool = False

    def here(self) -> str:
        """The project folder in this process."""
        return os.getcwd() if self.shipped else self.root

    def localize(self, path: str) -> str:
        """``path`` (a file of the project as the spec named it) in this process."""
        if not self.shipped:
            return path
        rel = os.path.relpath(path, self.root)
        return path if rel.startswith("..") else os.path.join(os.getcwd(), rel)


@dataclass
class Project:
    """A spec's project folder and the files in it that shape its replicas."""

    root: Path
    spec_file: Path | None = None
    _dotenv: dict[str, str] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, spec: Spec, base_dir: str | os.PathLike[str] | None = None) -> Project:
        """The project of a loaded spec (a spec given as data: ``base_dir``, or the cwd)."""
        if spec.file and os.path.isfile(spec.file):
            file = Path(spec.file).resolve()
            return cls(file.parent, file)
        return cls(Path(base_dir or os.getcwd()).resolve())

    def ref(self, shipped: bool = False) -> ProjectRef:
        return ProjectRef(str(self.root), shipped)

    def dotenv(self) -> dict[str, str]:
        if self._dotenv is None:
            self._dotenv = read_dotenv(self.root / ".env")
        return self._dotenv

    def env_vars(self, api: ApiSpec) -> dict[str, str]:
        """What every process of the API gets in its environment from its start."""
        return {**self.dotenv(), **api.handler.env}

    def dependency(self, api: ApiSpec, key: str) -> Path | None:
        """The API's ``pip``/``conda``/``shell`` file, when it exists."""
        path = Path(getattr(api.handler.dependencies, key))
        return path if path.is_file() else None

    def cortexignore(self) -> list[str]:
        file = self.root / ".cortexignore"
        try:
            lines = file.read_text().splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read the file: {exc}", file=str(file)) from exc
        return [line.rstrip() for line in lines if line.strip() and not line.lstrip().startswith("#")]

    def local_data(self, spec: Spec) -> list[Path]:
        """Local model folders and workload stores of the spec's APIs."""
        uris: list[str] = []
        for api in spec.apis:
            models = api.handler.model_spec
            if models is not None:
                uris += [u for u in (models.path, models.dir) if u]
                uris += [p.path for p in models.paths or []]
            if api.workloads is not None and api.workloads.store:
                uris.append(api.workloads.store)
        return [local_path_of(u) for u in uris if is_local_uri(u)]

    def excludes(self, spec: Spec) -> list[str]:
        """Ray ``excludes`` (gitignore patterns relative to the project folder)."""
        inside = []
        for path in self.local_data(spec):
            try:
                rel = path.resolve().relative_to(self.root)
            except ValueError:
                continue
            if str(rel) != ".":
                inside.append(f"/{rel.as_posix()}/")
        return [*DEFAULT_EXCLUDES, *self.cortexignore(), *inside]
