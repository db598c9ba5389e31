"""Use cortex-ray from Python and notebooks: deploy a spec, call an API, delete it.

import cortex_ray
apis = cortex_ray.deploy("deployments/cortex.yaml")     # local Ray on 127.0.0.1
apis["iris"].post({"sepal_length": 5.1, ...})            # no HTTP
cortex_ray.delete("iris")
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cortex_ray.api_handle import ApiHandle
from cortex_ray.errors import DeploymentError
from cortex_ray.ingress.control import DEFAULT_INGRESS, INGRESS_MODES
from cortex_ray.project import Project
from cortex_ray.project.check import check_project
from cortex_ray.project.runtime_env import RuntimeEnvs, runtime_envs
from cortex_ray.serving.config import is_loopback
from cortex_ray.spec import ApiSpec, Spec, load_spec, parse_spec

__all__ = ["ApiHandle", "delete", "deploy", "get_api", "run_api", "shutdown", "start"]


def start(
    host: str = "127.0.0.1",
    port: int = 8000,
    ingress: str = DEFAULT_INGRESS,
    proxy_port: int | None = None,
    **ray_init: Any,
) -> str:
    """Start a local Ray (or join the one ``RAY_ADDRESS`` or ``address=`` names) and Serve;
    returns the HTTP base URL.

    A local Ray binds 127.0.0.1 only unless ``host`` says otherwise. ``ingress``: ``fast``
    (replicas serve HTTP themselves behind cortex-ray's balancer on ``host:port``; Serve's
    proxy is not started) or ``proxy`` (Serve's proxy on ``host:port``). With ``fast``,
    ``proxy_port`` also starts Serve's proxy there, for APIs deployed with ``ingress="proxy"``.
    """
    import ray
    from ray import serve

    if ingress not in INGRESS_MODES:
        raise ValueError(f"ingress must be one of {', '.join(INGRESS_MODES)}, got {ingress!r}")
    if not ray.is_initialized():
        if "address" not in ray_init and not os.environ.get("RAY_ADDRESS"):
            # a new local Ray: not whatever /tmp/ray/ray_current_cluster names (the last `ray
            # start`, which may have been stopped without `ray stop`; this run's shutdown must not
            # stop a cluster it joined). RAY_ADDRESS or address= join a running one.
            ray_init["address"] = "local"
            if host in ("127.0.0.1", "localhost"):
                ray_init.setdefault("_node_ip_address", "127.0.0.1")
                _loopback_node()
        ray_init.setdefault("include_dashboard", False)
        global _local_ray
        _local_ray = ray_init.get("address") == "local"  # before: a stop while it starts knows
        try:
            ray.init(**ray_init)
        except BaseException:
            _local_ray = False
            raise
        if _local_ray:  # other terminals' `cortex-ray get`/`logs` find it
            _record_local_ray()
    logging_config = {"enable_access_log": False}
    if ingress == "fast":
        if proxy_port is None:
            serve.start(proxy_location="Disabled", logging_config=logging_config)
        else:
            serve.start(http_options={"host": host, "port": proxy_port}, logging_config=logging_config)
        from cortex_ray.ingress.control import start_ingress

        start_ingress(host, port)
    else:
        serve.start(http_options={"host": host, "port": port}, logging_config=logging_config)
    global _http_host, _ingress
    _http_host, _ingress = host, ingress
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def _record_local_ray() -> None:
    import ray

    from cortex_ray.cluster import local_run

    try:
        local_run.record(ray.get_runtime_context().gcs_address)
    except Exception as exc:  # best effort: other terminals then need RAY_ADDRESS
        logging.getLogger("cortex_ray").debug("not recording the local Ray: %s", exc)


def _loopback_node() -> None:
    """Make the local Ray node's address 127.0.0.1, so that what Ray and the replicas listen on
    is reachable from this machine only. Ray takes ``_node_ip_address="127.0.0.1"`` only when
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which it reads when it is imported: set it for
    Ray's own processes (they inherit the environment), and for this one, where Ray may have
    been imported already (a notebook), on the constant it was read into."""
    from cortex_ray.cluster.local_run import use_loopback

    use_loopback()


_http_host: str | None = None
"""The HTTP host :func:`start` gave Serve in this process (``None``: not started here)."""
_ingress: str = DEFAULT_INGRESS
"""The ingress :func:`start` chose in this process."""
_local_ray = False
"""Whether :func:`start` started (or is starting) a new local Ray in this process."""
_deployed: set[str] = set()
"""The applications this process deployed (:func:`run_api`)."""


def started_local_ray() -> bool:
    """Whether this process started (or is starting) the local Ray it uses, rather than joining a
    running one: then Ray's node processes (GCS, raylet, and under it its agents and workers) are
    this process's descendants, and stopping them stops nothing that was running before."""
    return _local_ray


def _load(spec: str | os.PathLike[str] | Mapping[str, Any] | list[Any], base_dir: str | None) -> Spec:
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec)
    return parse_spec(spec, base_dir=base_dir or Path.cwd(), file="<dict>")


def deploy(
    spec: str | os.PathLike[str] | Mapping[str, Any] | list[Any],
    api: str | None = None,
    *,
    base_dir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    ingress: str = DEFAULT_INGRESS,
    address: str | None = None,
    **overrides: Any,
) -> dict[str, ApiHandle]:
    """Deploy every API of a spec (a file, or a dict/list), or just ``api``, on this machine's Ray.

    Each API becomes its own Serve application at its endpoint, served on the ``fast``
    ingress (default) or Serve's ``proxy``. Its replicas run in the project folder (the
    folder of the spec file; for a dict, ``base_dir``) with its ``.env``, ``requirements.txt``
    and ``dependencies.sh``. ``overrides`` are extra deployment options (e.g.
    ``ray_actor_options``).

    ``address``: a running cluster instead (``"auto"``: Ray's resolution), as ``cortex-ray
    deploy`` does it: the spec must be a file; its project folder is sent; returns once every API
    is ready (:func:`cortex_ray.cluster.deploy_apis`).
    """
    if address is not None:
        return _deploy_to_cluster(spec, api, address, host, port, ingress)
    loaded = _load(spec, base_dir)
    apis = [loaded.api(api)] if api else loaded.apis
    project = Project.of(loaded, base_dir)
    check_project(loaded, base_dir)  # before anything starts
    envs = {a.name: runtime_envs(a, project) for a in apis}
    base = start(host=host, port=port, ingress=ingress)
    handles = {}
    for a in apis:
        run_api(a, project=project, envs=envs[a.name], **overrides)
        handles[a.name] = ApiHandle(a.name, a.endpoint, base + a.endpoint)
    return handles


def _deploy_to_cluster(
    spec: str | os.PathLike[str] | Mapping[str, Any] | list[Any],
    api: str | None,
    address: str,
    host: str,
    port: int,
    ingress: str,
) -> dict[str, ApiHandle]:
    from cortex_ray import cluster

    if not isinstance(spec, (str, os.PathLike)):
        raise DeploymentError("deploying to a cluster takes a spec file (its folder is the project sent)")
    loaded = load_spec(spec)
    if api is not None:
        loaded = Spec(file=loaded.file, apis=[loaded.api(api)], warnings=loaded.warnings)
    cluster.connect(address)
    cluster.deploy_apis(loaded, host=host, port=port, ingress=ingress)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    return {a.name: ApiHandle(a.name, a.endpoint, base + a.endpoint) for a in loaded.apis}


def run_api(
    api: ApiSpec,
    info_details: bool | None = None,
    ingress: str | None = None,
    project: Project | None = None,
    envs: RuntimeEnvs | None = None,
    **overrides: Any,
) -> None:
    """Serve one validated API as its own application (Serve must be running).

    ``info_details``: whether HTTP ``/info`` shows the operator's view; by default only
    when this process started Serve on a loopback host. ``ingress``: by default the one
    :func:`start` chose. ``project`` / ``envs``: the API's project and runtime_envs (by
    default: none, and ``handler.env``). Returns once the API answers HTTP (on the fast path: once the
    balancer routes to its replicas).

    When a replica cannot start (an error importing ``handler.py`` or in
    ``Handler.__init__``), raises :class:`DeploymentError` carrying the
    user's traceback as Serve reported it.
    """
    from ray import serve

    from cortex_ray.app import build_api

    if info_details is None:
        info_details = _http_host is not None and is_loopback(_http_host)
    ingress = ingress or _ingress
    try:
        envs = envs or runtime_envs(api, project)
        application = build_api(api, info_details, ingress, project, envs, **overrides)
        _deployed.add(api.name)
        serve.run(application, name=api.name, route_prefix=api.endpoint)
        if ingress == "fast":
            _wait_routed(api)
    except RuntimeError as exc:
        detail = ""
        with contextlib.suppress(Exception):  # status is best effort; the original error stands
            app = serve.status().applications[api.name]
            detail = "\n".join([app.message, *(d.message for d in app.deployments.values() if d.message)])
        raise DeploymentError(f"api {api.name!r} failed to deploy: {exc}\n{detail}".rstrip()) from exc


def _wait_routed(api: ApiSpec) -> None:
    from ray import serve

    from cortex_ray.ingress.control import wait_routed

    ingress_deployment = serve.status().applications[api.name].deployments.get(api.name)
    states = ingress_deployment.replica_states if ingress_deployment is not None else {}
    running = sum(n for state, n in states.items() if str(state).endswith("RUNNING"))
    replicas = max(1, running)
    if not wait_routed(api.name, replicas):
        raise RuntimeError(f"api {api.name!r}: its replicas did not register with the fast ingress in time")


def get_api(name: str) -> ApiHandle:
    return ApiHandle(name)


def delete(name: str) -> None:
    import ray
    from ray import serve

    from cortex_ray.ingress.control import get_ingress

    ingress = get_ingress()
    if ingress is not None:  # first: its replicas then leave the balancer at once
        ray.get(ingress.remove_api.remote(name))
    serve.delete(name)
    _deployed.discard(name)


def shutdown() -> None:
    """Stop Serve and the local Ray started by :func:`start`. On a Ray this process joined
    (``RAY_ADDRESS``, ``address=``), only the APIs it deployed are deleted: Serve, its other
    applications and the cluster go on."""
    global _local_ray
    import ray
    from ray import serve

    if ray.is_initialized():
        from cortex_ray.ingress.control import stop_ingress

        if _local_ray:
            stop_ingress()
            serve.shutdown()
        else:
            for name in list(_deployed):
                with contextlib.suppress(Exception):  # already gone
                    delete(name)
        ray.shutdown()
    _deployed.clear()
    from cortex_ray.cluster import local_run

    local_run.forget()
    _local_ray = False
