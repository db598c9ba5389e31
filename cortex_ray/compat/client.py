"""``import cortex; cortex.client()`` inside a handler: Cortex's Python client over cortex-ray.

``deploy``, ``deploy_from_file``, ``get_api``, ``list_apis``, ``refresh`` and ``delete`` act on
the cluster the replica runs in, through :mod:`cortex_ray.cluster` (declarative Serve
applications, as ``cortex-ray deploy`` makes them); the rest of Cortex's client raises
:class:`NotImplementedError` naming the method.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

from cortex_ray import cluster
from cortex_ray.spec import load_spec

__all__ = ["Client", "NotFound", "client"]


def client(env_name: str | None = None) -> Client:
    """Cortex's ``cortex.client(env_name)``; the environment name is ignored (one cluster)."""
    return Client(env_name)


class Client:
    def __init__(self, env_name: str | None = None) -> None:
        self.env_name = env_name

    def deploy(
        self,
        api_spec: dict[str, Any],
        project_dir: str | None = None,
        force: bool = True,
        wait: bool = False,
    ) -> dict[str, Any]:
        """Deploy one API spec (a dict) on the cluster this process runs in; its paths are relative
        to ``project_dir`` (default: the working directory, which in a replica is the project),
        read as the cluster's nodes see them (nothing is sent: a spec file goes through
        :meth:`deploy_from_file`)."""
        found = cluster.deploy_in_place(api_spec, project_dir or os.getcwd(), wait=wait)
        return {"api": found[0] if found else None}

    def deploy_from_file(self, config_file: str, force: bool = False, wait: bool = False) -> dict[str, Any]:
        """Deploy a spec file, sending its project folder (``cortex-ray deploy``)."""
        return {"apis": cluster.deploy_apis(load_spec(config_file), wait=wait)}

    def get_api(self, api_name: str) -> dict[str, Any]:
        found = cluster.describe([api_name])
        if not found:
            raise NotFound(f"api {api_name!r} is not deployed")
        return found[0]

    def list_apis(self) -> list[dict[str, Any]]:
        return cluster.describe()

    def refresh(self, api_name: str, force: bool = False) -> None:
        cluster.refresh(api_name)

    def delete(self, api_name: str, keep_cache: bool = False) -> None:
        cluster.delete([api_name])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def not_implemented(*args: Any, **kwargs: Any) -> NoReturn:
            raise NotImplementedError(
                f"cortex.client().{name}() is not implemented by cortex-ray (implemented: deploy, "
                "deploy_from_file, get_api, list_apis, refresh, delete)"
            )

        return not_implemented


class NotFound(LookupError):
    """An API that is not deployed."""
