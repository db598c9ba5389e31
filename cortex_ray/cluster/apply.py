"""Deploy, refresh and delete APIs on the connected cluster as declarative Serve applications.

Serve's ``apply_config`` replaces the whole declarative application set, so each change starts
from what the cluster runs (``deployed_app_config`` of every declarative application) and
changes only the APIs it names: other projects' APIs stay as they are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from cortex_ray.cluster.connect import alive_nodes, check_local_data, connect
from cortex_ray.deployer.serve_config import serve_config, serve_options
from cortex_ray.errors import DeploymentError
from cortex_ray.ingress.control import DEFAULT_INGRESS, get_ingress, grpc_problem, start_ingress, wait_routed
from cortex_ray.project import Project
from cortex_ray.project.check import check_project
from cortex_ray.project.runtime_env import INSTALL, runtime_env_failure
from cortex_ray.project.shipping import check_size, upload
from cortex_ray.rpc import DEFAULT_GRPC_PORT
from cortex_ray.rpc.routes import unpublish
from cortex_ray.spec import Spec, load_spec, parse_spec

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "delete",
    "deploy",
    "deploy_apis",
    "deploy_in_place",
    "describe",
    "refresh",
]

DEFAULT_TIMEOUT_S = 900.0
_FAILED = ("DEPLOY_FAILED", "UNHEALTHY")


def deploy(
    spec_path: str,
    address: str | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Deploy (or update) every API of the spec file onto the cluster at ``address`` (Ray's
    resolution when ``None``), sending the project folder; see :func:`deploy_apis`."""
    spec = load_spec(spec_path)
    connect(address)
    return deploy_apis(spec, **kwargs)


def deploy_apis(
    spec: Spec,
    host: str = "127.0.0.1",
    port: int = 8000,
    ingress: str = DEFAULT_INGRESS,
    shared_dirs: Sequence[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    wait: bool = True,
    requirements: str = INSTALL,
    grpc_port: int | None = None,
) -> list[dict[str, Any]]:
    """Send the project, apply its APIs, and (``wait``) return once every one is ready, or raise
    :class:`DeploymentError` naming each API that failed and why. Returns :func:`describe` of
    the APIs."""
    if spec.file is None or Project.of(spec).spec_file is None:
        raise DeploymentError("a spec sent to a cluster must be a file in its project folder")
    check_project(spec, requirements=requirements)
    check_local_data(spec, alive_nodes(), shared_dirs)
    project = Project.of(spec)
    excludes = project.excludes(spec)
    check_size(project.root, excludes)
    uri = upload(project.root, excludes)
    shipped = {"working_dir": uri, "requirements": requirements, "grpc_port": grpc_port}
    return _deploy(spec, host, port, ingress, timeout_s, wait, **shipped)


def deploy_in_place(
    spec_data: list[dict[str, Any]] | dict[str, Any],
    project_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    ingress: str = DEFAULT_INGRESS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    wait: bool = True,
    requirements: str = INSTALL,
) -> list[dict[str, Any]]:
    """Deploy APIs given as data (``cortex.client().deploy`` in a handler): their paths are
    relative to ``project_dir``, read in place as the cluster's nodes see them (nothing is
    sent). Declarative, as :func:`deploy_apis`: ``refresh`` works on them."""
    spec = parse_spec(spec_data, base_dir=project_dir, file="<spec_data>")
    check_project(spec, project_dir, requirements=requirements)
    config = {"spec_data": spec_data, "project_dir": project_dir, "requirements": requirements}
    return _deploy(spec, host, port, ingress, timeout_s, wait, **config)


def _deploy(
    spec: Spec, host: str, port: int, ingress: str, timeout_s: float, wait: bool, **config: Any
) -> list[dict[str, Any]]:
    grpc_port = config.pop("grpc_port", None) or DEFAULT_GRPC_PORT
    has_grpc = any(a.serves_grpc for a in spec.apis)
    client = _serve_client(host, port, ingress, grpc_port if has_grpc else None)
    current = _declarative(client)
    failed = _failed(client)  # an unchanged config would not be tried again: restart those
    refreshes = {a.name: _refresh_of(current.get(a.name)) + (a.name in failed) for a in spec.apis}
    serve = serve_config(
        spec,
        spec.file,
        host=host,
        port=port,
        ingress=ingress,
        refresh=refreshes,
        grpc_port=grpc_port,
        **config,
    )
    if ingress == "fast":
        start_ingress(host, port, grpc_port=grpc_port if has_grpc else None)
    problems = [grpc_problem(a.name, ingress) for a in spec.apis if a.serves_grpc]
    if any(problems):
        raise DeploymentError("\n".join(p for p in problems if p))
    _apply(client, serve, current)
    names = [a.name for a in spec.apis]
    if wait:
        _wait(names, timeout_s, ingress)
    return describe(names)


def refresh(name: str, timeout_s: float = DEFAULT_TIMEOUT_S, wait: bool = True) -> None:
    """Restart the API's replicas (new ones first: no request fails), as ``cortex refresh``."""
    client = _serve_client()
    current = _declarative(client)
    app = current.get(name)
    if app is None:
        raise DeploymentError(_not_declarative(client, name))
    app = {**app, "args": {**app.get("args", {}), "refresh": _refresh_of(app) + 1}}
    _apply(client, {"applications": [app]}, current)
    if wait:
        _wait([name], timeout_s, app["args"].get("ingress", "proxy"))


def delete(names: Sequence[str]) -> None:
    """Delete APIs (and their routes on the fast ingress)."""
    import ray

    client = _serve_client()
    known = set(client.get_serve_details().get("applications", {}))
    missing = [n for n in names if n not in known]
    if missing:
        raise DeploymentError(f"no api named {', '.join(map(repr, missing))} is deployed")
    ingress = get_ingress()
    for name in names:  # first: their replicas then leave the balancer at once
        if ingress is not None:
            ray.get(ingress.remove_api.remote(name))
    client.delete_apps(list(names), blocking=True)
    for name in names:  # (a gRPC API's route on Serve's proxy)
        unpublish(name)


def describe(names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Each API's name, status, endpoint, message, replicas per state and deployments."""
    from ray import serve

    status = serve.status()
    out = []
    for name, app in status.applications.items():
        if names is not None and name not in names:
            continue
        replicas: dict[str, int] = {}
        for deployment in app.deployments.values():
            for state, n in deployment.replica_states.items():
                key = str(getattr(state, "value", state))
                replicas[key] = replicas.get(key, 0) + n
        messages = [app.message, *(d.message for d in app.deployments.values() if d.message)]
        out.append(
            {
                "name": name,
                "status": str(getattr(app.status, "value", app.status)),
                "endpoint": _route_of(name),
                "message": "\n".join(m for m in messages if m),
                "replicas": replicas,
                "deployments": list(app.deployments),
            }
        )
    return out


# --- Serve -----------------------------------------------------------------


def _serve_client(
    host: str = "127.0.0.1", port: int = 8000, ingress: str | None = None, grpc_port: int | None = None
) -> Any:
    """The cluster's Serve controller; started (without a proxy on the fast ingress, unless
    ``grpc_port`` asks for gRPC) if none runs and ``ingress`` says how."""
    from ray import serve
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is not None:
        return client
    if ingress is None:
        raise DeploymentError("Ray Serve does not run on this cluster: no API is deployed")
    serve.start(**serve_options(host, port, ingress, grpc_port), logging_config={"enable_access_log": False})
    return _get_global_client()


def _declarative(client: Any) -> dict[str, dict[str, Any]]:
    """The config of each declarative application the cluster runs."""
    details = client.get_serve_details()
    out = {}
    for name, app in details.get("applications", {}).items():
        config = app.get("deployed_app_config")
        if config and str(app.get("source", "")).lower().endswith("declarative"):
            out[name] = _plain(config)
    return out


def _failed(client: Any) -> set[str]:
    apps = client.get_serve_details().get("applications", {})
    return {name for name, app in apps.items() if str(_plain(app.get("status"))) in _FAILED}


def _apply(client: Any, config: dict[str, Any], current: dict[str, dict[str, Any]]) -> None:
    """Apply ``config``'s applications over the declarative ones running now."""
    from ray.serve.schema import ServeDeploySchema

    new = {a["name"]: a for a in config["applications"]}
    merged = [*[a for n, a in current.items() if n not in new], *new.values()]
    details = client.get_serve_details()
    top: dict[str, Any] = {}
    for key in ("proxy_location", "http_options"):
        if details.get(key) is not None:
            top[key] = _plain(details[key])
    top.setdefault("proxy_location", config.get("proxy_location", "Disabled"))
    try:
        schema = ServeDeploySchema.parse_obj(
            {**top, "logging_config": {"enable_access_log": False}, "applications": merged}
        )
        client.deploy_apps(schema)
    except Exception as exc:  # Serve's own validation and controller errors, as they are
        raise DeploymentError(f"Ray Serve refused the deployment: {exc}") from exc


def _wait(names: Sequence[str], timeout_s: float, ingress: str) -> None:
    """Until every API runs (and, on the fast ingress, its replicas take requests)."""
    deadline = time.monotonic() + timeout_s
    time.sleep(0.5)  # the controller takes the new target on its next loop
    pending = list(names)
    failed: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for item in describe(pending):
            pip = runtime_env_failure(item["message"])
            if item["status"] == "RUNNING":
                pending.remove(item["name"])
                if ingress == "fast":
                    _wait_routed(item)
            elif pip is not None:  # it never starts: say so now, not after Serve's 20 tries
                pending.remove(item["name"])
                failed[item["name"]] = f"its requirements could not be installed (pip said):\n{pip}"
            elif item["status"] in _FAILED:
                pending.remove(item["name"])
                failed[item["name"]] = item["message"] or item["status"]
        time.sleep(0.5)
    for name in pending:
        failed[name] = f"not ready after {timeout_s:g} s"
    if failed:
        lines = [f"api {name!r}: {why}" for name, why in failed.items()]
        raise DeploymentError("deployment failed:\n" + "\n".join(lines))


def _wait_routed(item: dict[str, Any]) -> None:
    running = item["replicas"].get("RUNNING", 1)
    if not wait_routed(item["name"], max(1, running)):
        raise DeploymentError(f"api {item['name']!r}: its replicas did not register with the fast ingress")


def _refresh_of(app: dict[str, Any] | None) -> int:
    return int((app or {}).get("args", {}).get("refresh", 0) or 0)


def _route_of(name: str) -> str | None:
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    app = client.get_serve_details().get("applications", {}).get(name, {})
    return app.get("route_prefix")


def _not_declarative(client: Any, name: str) -> str:
    if name in client.get_serve_details().get("applications", {}):
        return (
            f"api {name!r} was not deployed with `cortex-ray deploy` (it runs from "
            "`cortex-ray run` or Python): restart it there"
        )
    return f"no api named {name!r} is deployed"


def _plain(value: Any) -> Any:
    """Pydantic models and enums in Serve's details as plain JSON-able values."""
    if hasattr(value, "dict"):
        value = value.dict(exclude_unset=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return getattr(value, "value", value)
