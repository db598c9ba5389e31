"""Use cortex-ray from Python and notebooks: deploy a spec, call an API, delete it.

import cortex_ray
apis = cortex_ray.deploy("deployments/cortex.yaml")     # local Ray on 127.0.0.1
apis["iris"].post({"sepal_length": 5.1, ...})            # no HTTP
cortex_ray.delete("iris")

What a process started and deployed is kept in a :class:`Session` (as httpx keeps its state in
a ``Client``); the module's functions act on the process's default session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cortex_ray import cluster
from cortex_ray.api_handle import ApiHandle
from cortex_ray.cluster import local_run
from cortex_ray.deployer.serve_config import serve_options
from cortex_ray.errors import DeploymentError
from cortex_ray.ingress.control import (
    DEFAULT_INGRESS,
    INGRESS_MODES,
    get_ingress,
    grpc_problem,
    start_ingress,
    stop_ingress,
    wait_routed,
)
from cortex_ray.net import base_url, is_loopback
from cortex_ray.project import Project
from cortex_ray.project.check import check_project
from cortex_ray.project.runtime_env import INSTALL, RuntimeEnvs, runtime_env_failure, runtime_envs
from cortex_ray.rpc import DEFAULT_GRPC_PORT
from cortex_ray.rpc.routes import unpublish
from cortex_ray.spec import ApiSpec, Spec, load_spec, parse_spec

__all__ = [
    "ApiHandle",
    "Session",
    "delete",
    "deploy",
    "get_api",
    "run_api",
    "session",
    "shutdown",
    "start",
    "started_local_ray",
]

SpecSource = str | os.PathLike[str] | Mapping[str, Any] | list[Any]

RELOADER_CHECK_ENV = "RAY_SERVE_DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S"
RELOADER_CHECK_S = "2"
"""How often a local Ray's Serve controller checks each API's reloader (its deployment actor)."""


class Session:
    """This process's use of Ray and Serve: whether it started a local Ray, the HTTP host and
    ingress it started Serve with, and the APIs it deployed (see the module's functions)."""

    def __init__(self) -> None:
        self.http_host: str | None = None
        """The HTTP host :meth:`start` gave Serve (``None``: not started here)."""
        self.ingress: str = DEFAULT_INGRESS
        """The ingress :meth:`start` chose."""
        self.local_ray = False
        """Whether :meth:`start` started (or is starting) a new local Ray."""
        self.deployed: set[str] = set()
        """The applications deployed through :meth:`run_api`."""
        self.grpc_port: int | None = None
        """The port :meth:`start` gave Serve's gRPC proxy (``None``: no gRPC)."""

    def start(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        ingress: str = DEFAULT_INGRESS,
        proxy_port: int | None = None,
        grpc_port: int | None = None,
        proxy_grpc_port: int | None = None,
        **ray_init: Any,
    ) -> str:
        """See :func:`start`."""
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
                # a requirement that cannot be installed fails once, not three times (Ray's default)
                os.environ.setdefault("RUNTIME_ENV_RETRY_TIMES", "1")
                # a reloader that died is replaced within ~2 s, not Serve's default ~10 s (Serve's
                # controller health-checks deployment actors at this period)
                os.environ.setdefault(RELOADER_CHECK_ENV, RELOADER_CHECK_S)
                if host in ("127.0.0.1", "localhost"):
                    ray_init.setdefault("_node_ip_address", "127.0.0.1")
                    # Ray takes 127.0.0.1 as the node's address only when told before it starts
                    local_run.use_loopback()
            ray_init.setdefault("include_dashboard", False)
            self.local_ray = ray_init.get("address") == "local"  # before: a stop while it starts knows
            try:
                ray.init(**ray_init)
            except BaseException:
                self.local_ray = False
                raise
            if self.local_ray:  # other terminals' `cortex-ray get`/`logs` find it
                _record_local_ray()
        options = serve_options(host, port, ingress, grpc_port, proxy_port, proxy_grpc_port)
        serve.start(**options, logging_config={"enable_access_log": False})
        if ingress == "fast":
            start_ingress(host, port, grpc_port=grpc_port)
        self.http_host, self.ingress, self.grpc_port = host, ingress, grpc_port
        return base_url(host, port)

    def deploy(
        self,
        spec: SpecSource,
        api: str | None = None,
        *,
        base_dir: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        ingress: str = DEFAULT_INGRESS,
        address: str | None = None,
        requirements: str = INSTALL,
        grpc_port: int | None = None,
        **overrides: Any,
    ) -> dict[str, ApiHandle]:
        """See :func:`deploy`."""
        if address is not None:
            return _deploy_to_cluster(spec, api, address, host, port, ingress, requirements, grpc_port)
        loaded = _load(spec, base_dir)
        apis = [loaded.api(api)] if api else loaded.apis
        project = Project.of(loaded, base_dir)
        check_project(loaded, base_dir, requirements)  # before anything starts
        envs = {a.name: runtime_envs(a, project, requirements=requirements) for a in apis}
        if grpc_port is None and any(a.serves_grpc for a in apis):
            grpc_port = DEFAULT_GRPC_PORT
        base = self.start(host=host, port=port, ingress=ingress, grpc_port=grpc_port)
        handles = {}
        for a in apis:
            self.run_api(a, project=project, envs=envs[a.name], **overrides)
            handles[a.name] = ApiHandle(a.name, a.endpoint, base + a.endpoint)
        return handles

    def run_api(
        self,
        api: ApiSpec,
        info_details: bool | None = None,
        ingress: str | None = None,
        project: Project | None = None,
        envs: RuntimeEnvs | None = None,
        **overrides: Any,
    ) -> None:
        """See :func:`run_api`."""
        from ray import serve

        from cortex_ray.application import build_api  # (Ray Serve's classes: imported when used)

        if info_details is None:
            info_details = self.http_host is not None and is_loopback(self.http_host)
        ingress = ingress or self.ingress
        if api.serves_grpc:
            problem = grpc_problem(api.name, ingress)
            if problem is not None:
                raise DeploymentError(problem)
        try:
            envs = envs or runtime_envs(api, project)
            application = build_api(api, info_details, ingress, project, envs, **overrides)
            self.deployed.add(api.name)
            new = api.name not in serve.status().applications
            serve._run(application, _blocking=False, name=api.name, route_prefix=api.endpoint)
            _wait_running(api.name, delete_if_broken=new)
            if ingress == "fast":
                _wait_routed(api)
        except RuntimeError as exc:
            detail = ""
            with contextlib.suppress(Exception):  # status is best effort; the original error stands
                app = serve.status().applications[api.name]
                detail = "\n".join([app.message, *(d.message for d in app.deployments.values() if d.message)])
            raise DeploymentError(f"api {api.name!r} failed to deploy: {exc}\n{detail}".rstrip()) from exc

    def delete(self, name: str) -> None:
        """See :func:`delete`."""
        _delete_app(name)
        self.deployed.discard(name)

    def shutdown(self) -> None:
        """See :func:`shutdown`."""
        import ray
        from ray import serve

        if ray.is_initialized():
            if self.local_ray:
                stop_ingress()
                serve.shutdown()
            else:
                for name in list(self.deployed):
                    with contextlib.suppress(Exception):  # already gone
                        self.delete(name)
            ray.shutdown()
        self.deployed.clear()
        local_run.forget()
        self.local_ray = False


_SESSION = Session()


def session() -> Session:
    """This process's default session (what the module's functions act on)."""
    return _SESSION


def start(
    host: str = "127.0.0.1",
    port: int = 8000,
    ingress: str = DEFAULT_INGRESS,
    proxy_port: int | None = None,
    grpc_port: int | None = None,
    proxy_grpc_port: int | None = None,
    **ray_init: Any,
) -> str:
    """Start a local Ray (or join the one ``RAY_ADDRESS`` or ``address=`` names) and Serve;
    returns the HTTP base URL.

    A local Ray binds 127.0.0.1 only unless ``host`` says otherwise. ``ingress``: ``fast``
    (replicas serve HTTP themselves behind cortex-ray's balancer on ``host:port``; Serve's
    proxy is not started) or ``proxy`` (Serve's proxy on ``host:port``). With ``fast``,
    ``proxy_port`` also starts Serve's proxy there, for APIs deployed with ``ingress="proxy"``.
    ``grpc_port``: gRPC APIs are served there: by the balancer on ``host`` (``fast``), or by
    Serve's gRPC proxy (``proxy``; on every interface: Serve binds it so), routed by cortex-ray
    (:mod:`cortex_ray.rpc.proxy`). ``proxy_grpc_port``: with ``fast`` and ``proxy_port``, Serve's
    proxy also serves gRPC there, for gRPC APIs deployed with ``ingress="proxy"``.
    """
    return _SESSION.start(host, port, ingress, proxy_port, grpc_port, proxy_grpc_port, **ray_init)


def started_local_ray() -> bool:
    """Whether this process started (or is starting) the local Ray it uses, rather than joining a
    running one: then Ray's node processes (GCS, raylet, and under it its agents and workers) are
    this process's descendants, and stopping them stops nothing that was running before."""
    return _SESSION.local_ray


def deploy(
    spec: SpecSource,
    api: str | None = None,
    *,
    base_dir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    ingress: str = DEFAULT_INGRESS,
    address: str | None = None,
    requirements: str = INSTALL,
    grpc_port: int | None = None,
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

    ``requirements``: ``"install"`` (each API's ``requirements.txt`` is checked first, then
    installed by Ray for its replicas) or ``"installed"`` (nothing installed: the replicas run with
    the environment as it is, and each requirement is only checked to be there).

    ``grpc_port``: where the spec's gRPC APIs (``handler.protobuf_path``) are served (the ingress's
    gRPC port: see :func:`start`); by default :data:`~cortex_ray.rpc.DEFAULT_GRPC_PORT` when the spec
    has one. An ingress already running keeps the gRPC port it has.
    """
    return _SESSION.deploy(
        spec,
        api,
        base_dir=base_dir,
        host=host,
        port=port,
        ingress=ingress,
        address=address,
        requirements=requirements,
        grpc_port=grpc_port,
        **overrides,
    )


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
    _SESSION.run_api(api, info_details, ingress, project, envs, **overrides)


def get_api(name: str) -> ApiHandle:
    return ApiHandle(name)


def delete(name: str) -> None:
    """Delete a deployed API (its routes on the fast ingress first)."""
    _SESSION.delete(name)


def shutdown() -> None:
    """Stop Serve and the local Ray started by :func:`start`. On a Ray this process joined
    (``RAY_ADDRESS``, ``address=``), only the APIs it deployed are deleted: Serve, its other
    applications and the cluster go on."""
    _SESSION.shutdown()


# --- helpers -----------------------------------------------------------------


def _record_local_ray() -> None:
    import ray

    try:
        local_run.record(ray.get_runtime_context().gcs_address)
    except Exception as exc:  # best effort: other terminals then need RAY_ADDRESS
        logging.getLogger("cortex_ray").debug("not recording the local Ray: %s", exc)


def _load(spec: SpecSource, base_dir: str | None) -> Spec:
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec)
    return parse_spec(spec, base_dir=base_dir or Path.cwd(), file="<dict>")


def _deploy_to_cluster(
    spec: SpecSource,
    api: str | None,
    address: str,
    host: str,
    port: int,
    ingress: str,
    requirements: str,
    grpc_port: int | None = None,
) -> dict[str, ApiHandle]:
    if not isinstance(spec, (str, os.PathLike)):
        raise DeploymentError("deploying to a cluster takes a spec file (its folder is the project sent)")
    loaded = load_spec(spec)
    if api is not None:
        loaded = Spec(file=loaded.file, apis=[loaded.api(api)], warnings=loaded.warnings)
    cluster.connect(address)
    cluster.deploy_apis(
        loaded, host=host, port=port, ingress=ingress, requirements=requirements, grpc_port=grpc_port
    )
    base = base_url(host, port)
    return {a.name: ApiHandle(a.name, a.endpoint, base + a.endpoint) for a in loaded.apis}


def _wait_running(name: str, delete_if_broken: bool = True, poll: float = 0.25) -> None:
    """Until the application runs; ``RuntimeError`` when Serve gives up on it, and at once when its
    runtime environment cannot be built: a replica that cannot install its requirements never will,
    and Serve would try 20 times. A new application is then deleted (``delete_if_broken``); an
    update is left to Serve, whose replicas of the version before go on serving."""
    from ray import serve

    while True:
        app = serve.status().applications.get(name)
        status = str(getattr(app.status, "value", app.status)) if app is not None else "NOT_STARTED"
        if status == "RUNNING":
            return
        if app is not None:
            messages = "\n".join([app.message, *(d.message for d in app.deployments.values() if d.message)])
            failure = runtime_env_failure(messages)
            if failure is not None:
                if delete_if_broken:
                    with contextlib.suppress(Exception):
                        _delete_app(name, blocking=False)
                raise DeploymentError(
                    f"api {name!r} failed to deploy: its requirements could not be installed (pip said):\n"
                    f"{failure}\nFix the pin in requirements.txt, or run against the environment as it is "
                    "(--requirements installed)"
                )
            if status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise RuntimeError(f"Deploying application {name} failed: {messages.strip()}")
        time.sleep(poll)


def _delete_app(name: str, blocking: bool = True) -> None:
    """An application deleted, its routes on the fast ingress first (its replicas then leave the
    balancer at once, and its endpoint answers 404, not 503)."""
    import ray
    from ray import serve

    ingress = get_ingress()
    if ingress is not None:
        ray.get(ingress.remove_api.remote(name))
    serve.delete(name, _blocking=blocking)
    unpublish(name)  # (a gRPC API's route on Serve's proxy)


def _wait_routed(api: ApiSpec) -> None:
    from ray import serve

    ingress_deployment = serve.status().applications[api.name].deployments.get(api.name)
    states = ingress_deployment.replica_states if ingress_deployment is not None else {}
    running = sum(n for state, n in states.items() if str(state).endswith("RUNNING"))
    replicas = max(1, running)
    if not wait_routed(api.name, replicas):
        raise RuntimeError(f"api {api.name!r}: its replicas did not register with the fast ingress in time")
