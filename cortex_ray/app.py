"""The Ray Serve application builder: ``import_path: cortex_ray.app:build``.

``args`` name the spec file and the API::

    applications:
      - name: iris
        route_prefix: /iris
        import_path: cortex_ray.app:build
        args: {spec: /path/to/cortex.yaml, api: iris}

The spec is validated where the builder runs, before any replica starts. A project sent to a
cluster (``cortex-ray deploy``) is the application's ``runtime_env.working_dir``: then
``args.spec`` is relative to it and ``args.shipped`` is set.
"""

import os
from pathlib import Path
from typing import Any, Literal

import ray
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application
from ray.serve.config import DeploymentActorConfig

from cortex_ray.asyncapi.dispatcher import DISPATCHER_ACTOR, Dispatcher, worker_name
from cortex_ray.asyncapi.gateway import AsyncGateway
from cortex_ray.asyncapi.worker import AsyncWorker
from cortex_ray.project import Project, ProjectRef
from cortex_ray.project.runtime_env import RuntimeEnvs
from cortex_ray.reload.reloader import ModelReloader
from cortex_ray.reload.subscriber import RELOADER_ACTOR
from cortex_ray.serving.options import deployment_options, gateway_options
from cortex_ray.serving.replica import ApiReplica
from cortex_ray.spec import ApiSpec, load_spec
from cortex_ray.spec.sealed import Sealed

__all__ = ["BuildArgs", "build", "build_api"]


class BuildArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: str
    """Path of the spec file (cortex.yaml)."""
    api: str | None = None
    """The API to serve; may be left out when the spec holds one API."""
    info_details: bool = False
    """Whether ``GET <endpoint>/info`` shows the operator's view (states, reasons, storage
    errors, nodes, paths) to any HTTP client; Cortex's fields are always shown.
    ``build-config`` sets it for a loopback host."""
    ingress: Literal["fast", "proxy"] = "proxy"
    """``fast``: replicas serve HTTP themselves, behind cortex-ray's balancer (started on the
    node that builds the application, listening on ``host``:``port``, if it does not run
    yet); ``proxy``: Serve's own proxy."""
    host: str = "127.0.0.1"
    port: int = 8000
    shipped: bool = False
    """The project was sent with the application (``runtime_env.working_dir``): ``spec`` is
    relative to the working directory, and the replicas find the project there."""
    project_dir: str | None = None
    """Where local model folders and workload stores are (the folder the project was sent
    from): they are read in place, not sent."""
    refresh: int = 0
    """Bumped by ``cortex-ray refresh``: a changed application restarts its replicas."""


def build(args: BuildArgs) -> Application:
    if not isinstance(args, BuildArgs):
        args = BuildArgs.model_validate(args)
    if args.shipped:
        spec = load_spec(os.path.join(os.getcwd(), args.spec), data_dir=args.project_dir)
    else:
        spec = load_spec(args.spec)
    if args.api is None:
        if len(spec.apis) != 1:
            names = ", ".join(a.name for a in spec.apis)
            raise ValueError(f"{args.spec} holds several APIs ({names}): pass args.api to pick one")
        api = spec.apis[0]
    else:
        api = spec.api(args.api)
    if args.ingress == "fast":
        from cortex_ray.ingress.control import start_ingress

        start_ingress(args.host, args.port)
    # the Serve config carries the runtime_env (the application's and the replicas'): here,
    # only where the project is
    ref = ProjectRef(str(Path(spec.file).resolve().parent), shipped=args.shipped)
    return build_api(api, info_details=args.info_details, ingress=args.ingress, project=ref)


def reloader_actor(api: ApiSpec, runtime_env: dict[str, Any] | None = None) -> DeploymentActorConfig:
    """The API's reloader, a deployment-scoped actor: created before the replicas, restarted if it
    dies, deleted with the application."""
    return DeploymentActorConfig(
        name=RELOADER_ACTOR,
        actor_class=ray.remote(ModelReloader),
        init_args=(Sealed(api),),
        actor_options={"num_cpus": 0, "max_concurrency": 10000, **_env(runtime_env)},
    )


def _env(runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    return {"runtime_env": runtime_env} if runtime_env else {}


def build_api(
    api: ApiSpec,
    info_details: bool = False,
    ingress: str = "proxy",
    project: Project | ProjectRef | None = None,
    envs: RuntimeEnvs | None = None,
    **overrides: Any,
) -> Application:
    """The Serve application of one validated API.

    ``project``: the project the replicas enter (working directory, ``sys.path``,
    ``dependencies.sh``); ``envs``: runtime_envs for its processes, when the application has
    none of its own (deployed from Python rather than from a Serve config). ``overrides`` are
    extra deployment options; ``ray_actor_options`` in them is merged key by key into the
    spec's (e.g. a smaller ``num_cpus`` in tests).
    """
    ref = project.ref() if isinstance(project, Project) else project
    envs = envs or RuntimeEnvs()
    options = deployment_options(api, ingress)
    options.pop("rolling_update_percentage", None)  # a Serve config option only
    if api.handler.model_spec is not None:
        options["deployment_actors"] = [reloader_actor(api, envs.every)]
    actor = {
        **options["ray_actor_options"],
        **_env(envs.for_user_code()),
        **overrides.get("ray_actor_options", {}),
    }
    options = {**options, **overrides, "ray_actor_options": actor}
    if api.kind == "AsyncAPI":
        return _build_async(api, options, ingress, ref, envs)
    deployment: Any = serve.deployment(ApiReplica)
    return deployment.options(**options).bind(api, info_details, ingress, ref)


def _build_async(
    api: ApiSpec, worker_options: dict[str, Any], ingress: str, ref: ProjectRef | None, envs: RuntimeEnvs
) -> Application:
    """An AsyncAPI: the gateway (ingress, with the dispatcher) and the workers."""
    as_deployment: Any = serve.deployment
    worker = as_deployment(AsyncWorker).options(**{**worker_options, "name": worker_name(api.name)})
    gateway_opts = gateway_options(api, ingress)
    gateway_opts.pop("rolling_update_percentage", None)
    if envs.every:
        gateway_opts["ray_actor_options"] = {**gateway_opts["ray_actor_options"], **_env(envs.every)}
    gateway = as_deployment(AsyncGateway).options(
        **gateway_opts,
        deployment_actors=[
            DeploymentActorConfig(
                name=DISPATCHER_ACTOR,
                actor_class=ray.remote(Dispatcher),
                init_args=(Sealed(api), api.workloads.store if api.workloads else None),
                actor_options={"num_cpus": 0, "max_concurrency": 10000, **_env(envs.every)},
            )
        ],
    )
    return gateway.bind(api, worker.bind(api, ref), ingress)
