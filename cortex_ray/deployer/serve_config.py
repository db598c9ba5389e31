"""A Ray Serve config (``serve run`` / ``serve deploy`` / KubeRay) from a spec.

One application per API: ``name`` is the API name, ``route_prefix`` its
endpoint, ``import_path`` the cortex-ray builder with ``args`` naming the spec
and the API, the deployment options that the spec maps to, and the API's
``runtime_env``: ``.env`` and ``handler.env`` as ``env_vars`` of the application, the API's
``requirements.txt`` / ``conda-packages.txt`` on the deployment that runs the handler, and,
for a project sent to a cluster, its ``working_dir``.
"""

from __future__ import annotations

import os
from typing import Any

from cortex_ray.deployer.options import all_deployment_options
from cortex_ray.net import is_loopback
from cortex_ray.project import Project
from cortex_ray.project.runtime_env import INSTALL, runtime_envs
from cortex_ray.project.shipping import matcher
from cortex_ray.rpc import DEFAULT_GRPC_PORT
from cortex_ray.spec import Spec

__all__ = ["IMPORT_PATH", "serve_config"]

IMPORT_PATH = "cortex_ray.app:build"
"""Serve's import path of the application builder (:mod:`cortex_ray.app`, never imported here)."""


def serve_config(
    spec: Spec,
    spec_path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    ingress: str = "fast",
    working_dir: str | None = None,
    refresh: dict[str, int] | None = None,
    spec_data: list[dict[str, Any]] | dict[str, Any] | None = None,
    project_dir: str | None = None,
    requirements: str = INSTALL,
    grpc_port: int = DEFAULT_GRPC_PORT,
) -> dict[str, Any]:
    """The Serve config dict for every API of ``spec`` (a validated spec).

    ``ingress="fast"``: no Serve proxy (``proxy_location: Disabled``); the application
    builder starts cortex-ray's balancer on ``host:port`` if it does not run yet.
    ``working_dir``: the URI of the project as sent to the cluster (the applications find
    the spec and the handler there); ``None``: the project is where ``spec_path`` says, on every
    node. ``refresh``: per API, the restart counter ``cortex-ray refresh`` bumps.
    ``spec_data``: the spec was given as data, not a file (its paths relative to ``project_dir``):
    the applications carry it, and read the project in place. ``requirements``: ``install`` (Ray
    installs each API's requirements) or ``installed`` (the environment as it is).
    ``grpc_port``: when the spec has a gRPC API, gRPC is taken there: by cortex-ray's balancer on the
    fast ingress, by Serve's proxy (with cortex-ray's routing) on Serve's.
    """
    project = Project.of(spec, project_dir)
    shipped = working_dir is not None
    excluded = matcher(project.excludes(spec)) if shipped else None
    applications = []
    for api in spec.apis:
        shipped_file = (lambda rel: not excluded(rel)) if excluded else None
        envs = runtime_envs(api, project, shipped, shipped_file, requirements)
        app_env: dict[str, Any] = {**envs.every, **({"working_dir": working_dir} if shipped else {})}
        deployments = all_deployment_options(api, ingress)
        if envs.user_code:  # the deployment running the handler: the last one
            deployments[-1]["ray_actor_options"]["runtime_env"] = envs.user_code
        if spec_data is not None:
            spec_arg: dict[str, Any] = {"spec_data": spec_data, "project_dir": str(project.root)}
        elif shipped and project.spec_file is not None:
            spec_arg = {
                "spec": os.path.relpath(project.spec_file, project.root),
                "shipped": True,
                "project_dir": str(project.root),
            }
        else:
            spec_arg = {"spec": spec_path}
        application: dict[str, Any] = {
            "name": api.name,
            "route_prefix": api.endpoint,
            "import_path": IMPORT_PATH,
            **({"runtime_env": app_env} if app_env else {}),
            "args": {
                **spec_arg,
                "api": api.name,
                "info_details": is_loopback(host),
                **({"ingress": "fast", "host": host, "port": port} if ingress == "fast" else {}),
                **({"grpc_port": grpc_port} if ingress == "fast" and _has_grpc(spec) else {}),
                **({"refresh": refresh[api.name]} if refresh and refresh.get(api.name) else {}),
            },
            "deployments": deployments,
        }
        applications.append(application)
    return {
        **serve_options(host, port, ingress, grpc_port if _has_grpc(spec) else None),
        "logging_config": {"enable_access_log": False},
        "applications": applications,
    }


def serve_options(
    host: str,
    port: int,
    ingress: str,
    grpc_port: int | None = None,
    proxy_port: int | None = None,
    proxy_grpc_port: int | None = None,
) -> dict[str, Any]:
    """Serve's cluster-wide options: where its proxy runs and listens.

    ``ingress="proxy"``: Serve's proxy on ``host:port``, and gRPC on ``grpc_port`` if given (with
    cortex-ray's routing). ``ingress="fast"``: the balancer holds ``port`` and ``grpc_port``;
    Serve's proxy runs only when ``proxy_port`` is given (for APIs deployed on it), with gRPC on
    ``proxy_grpc_port`` if given."""
    from cortex_ray.rpc.proxy import SERVICER_FUNCTION  # (the import path Serve's proxy loads)

    serve_grpc = grpc_port if ingress != "fast" else proxy_grpc_port
    grpc = (
        {"grpc_options": {"port": serve_grpc, "grpc_servicer_functions": [SERVICER_FUNCTION]}}
        if serve_grpc is not None
        else {}
    )
    if ingress != "fast":
        return {"proxy_location": "EveryNode", "http_options": {"host": host, "port": port}, **grpc}
    if proxy_port is None:
        return {"proxy_location": "Disabled"}
    return {"proxy_location": "EveryNode", "http_options": {"host": host, "port": proxy_port}, **grpc}


def _has_grpc(spec: Spec) -> bool:
    return any(api.serves_grpc for api in spec.apis)
