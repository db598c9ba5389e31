"""A running Ray cluster as Cortex's cluster: deploy a project to it, refresh, delete, describe.

``cortex-ray deploy`` / ``delete`` / ``refresh`` and :func:`cortex_ray.cluster.deploy` from
Python share this code. The project folder is sent once (Ray's ``working_dir``) and every
API becomes a declarative Serve application, as ``serve deploy`` would make it: a re-deploy of
an unchanged project changes nothing; a changed one rolls (surge first, so no request fails).
"""

from cortex_ray.cluster.apply import delete, deploy, deploy_apis, deploy_in_place, describe, refresh
from cortex_ray.cluster.connect import connect

__all__ = ["connect", "delete", "deploy", "deploy_apis", "deploy_in_place", "describe", "refresh"]
