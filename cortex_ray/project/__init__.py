"""The Cortex project folder: the folder of ``cortex.yaml`` with the handler, its sibling files,
``requirements.txt``, ``conda-packages.txt``, ``dependencies.sh``, ``.env`` and ``.cortexignore``.

The deployer side (:mod:`~cortex_ray.project.files`, :mod:`~cortex_ray.project.runtime_env`,
:mod:`~cortex_ray.project.shipping`) turns it into Ray ``runtime_env`` fields; the replica side
(:mod:`cortex_ray.replica.enter`) makes each process that runs user code start in it.
"""

from cortex_ray.project.files import Project, ProjectRef

__all__ = ["Project", "ProjectRef"]
