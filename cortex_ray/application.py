"""An API as a Ray Serve application: the one place that puts the parts together.

:func:`build_api` turns one validated API into its application (the replica deployment, the
reloader actor when it has models; for an AsyncAPI the gateway with its dispatcher, and the
workers). :func:`build_application` does it from a Serve config's ``args``
(:class:`BuildArgs`), which is what ``cortex_ray.app:build``, Serve's import path, calls;
:mod:`cortex_ray.sdk` calls :func:`build_api` to deploy from Python.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import ray
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application
from ray.serve.config import DeploymentActorConfig

from cortex_ray.asyncapi.dispatcher import Dispatcher
from cortex_ray.asyncapi.gateway import AsyncGateway
from cortex_ray.asyncapi.worker import AsyncWorker
from cortex_ray.deployer.options import deployment_options, gateway_options
from cortex_ray.ingress.control import HEAD_RESOURCE, start_ingress
from cortex_ray.project import Project, ProjectRef
from cortex_ray.project.runtime_env import RuntimeEnvs
from cortex_ray.reload.reloader import ModelReloader
from cortex_ray.replica.deployment import ApiReplica
from cortex_ray.spec import ApiSpec, Spec, load_spec, parse_spec
from cortex_ray.spec.names import DISPATCHER_ACTOR, RELOADER_ACTOR, worker_name
from cortex_ray.spec.sealed import Sealed

__all__ = ["BuildArgs", "build_api", "build_application"]


class BuildArgs(BaseModel):
    """A Serve config's ``args`` for ``cortex_ray.app:build``."""

    model_config = ConfigDict(extra="forbid")

    spec: str | None = None
    """Path of the spec file (cortex.yaml)."""
    spec_data: list[dict[str, Any]] | dict[str, Any] | None = None
    """The spec itself, instead of a file (an API deployed from a dict, ``cortex.client().deploy``):
    its paths are relative to ``project_dir``."""
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
    grpc_port: int | None = None
    """``fast``: the balancer also takes gRPC calls there (the spec has a gRPC API)."""
    shipped: bool = False
    """The project was sent with the application (``runtime_env.working_dir``): ``spec`` is
    relative to the working directory, and the replicas find the project there."""
    project_dir: str | None = None
    """Where local model folders and workload stores are (the folder the project was sent
    from): they are read in place, not sent. With ``spec_data``: the project folder."""
    refresh: int = 0
    """Bumped by ``cortex-ray refresh``: a changed application restarts its replicas."""


def build_application(args: BuildArgs | dict[str, Any]) -> Application:
    """The application a Serve config's ``args`` name (validated where the builder runs, before
    any replica starts)."""
    if not isinstance(args, BuildArgs):
        args = BuildArgs.model_validate(args)
    spec, root = _spec_of(args)
    if args.api is None:
        if len(spec.apis) != 1:
            names = ", ".join(a.name for a in spec.apis)
            raise ValueError(f"{spec.file} holds several APIs ({names}): pass args.api to pick one")
        api = spec.apis[0]
    else:
        api = spec.api(args.api)
    if args.ingress == "fast":
        start_ingress(args.host, args.port, grpc_port=args.grpc_port)
    # the Serve config carries the runtime_env (the application's and the replicas'): here,
    # only where the project is
    ref = ProjectRef(root, shipped=args.shipped)
    return build_api(api, info_details=args.info_details, ingress=args.ingress, project=ref)


def _spec_of(args: BuildArgs) -> tuple[Spec, str]:
    """The spec ``args`` name, and its project folder."""
    if args.spec_data is not None:
        base = args.project_dir or os.getcwd()
        return parse_spec(args.spec_data, base_dir=base, file="<spec_data>"), str(Path(base).resolve())
    if args.spec is None:
        raise ValueError("args must name a spec file (spec) or hold the spec (spec_data)")
    if args.shipped:
        spec = load_spec(os.path.join(os.getcwd(), args.spec), data_dir=args.project_dir)
    else:
        spec = load_spec(args.spec)
    return spec, str(Path(spec.file).resolve().parent)


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
        options["deployment_actors"] = [
            _actor(RELOADER_ACTOR, ModelReloader, (Sealed(api), True), envs.every)
        ]
    actor = {
        **options["ray_actor_options"],
        **_env(envs.for_user_code()),
        **overrides.get("ray_actor_options", {}),
    }
    options = {**options, **overrides, "ray_actor_options": actor}
    as_deployment: Any = serve.deployment
    if api.kind == "AsyncAPI":
        return _build_async(api, options, ingress, ref, envs)
    return as_deployment(ApiReplica).options(**options).bind(api, info_details, ingress, ref)


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
    store = api.workloads.store if api.workloads else None
    dispatcher = _actor(DISPATCHER_ACTOR, Dispatcher, (Sealed(api), store), envs.every)
    gateway = as_deployment(AsyncGateway).options(**gateway_opts, deployment_actors=[dispatcher])
    return gateway.bind(api, worker.bind(api, ref), ingress)


CONTROL_ON_HEAD = 0.001
"""Of the head node's own resource (1 on the head, absent elsewhere): what each control actor
asks, so that it is placed there (a thousand fit)."""


def _actor(
    name: str, cls: type, init_args: tuple[Any, ...], runtime_env: dict[str, Any]
) -> DeploymentActorConfig:
    """A deployment-scoped actor: created before the replicas, restarted if it dies, deleted with
    the application. It runs on the head node, with Serve's controller and the ingress (the
    cluster's control plane): losing a worker node (a spot instance taken back) loses replicas,
    never an API's reloader or dispatcher, which Ray would replace only once it declared the node
    dead (13 s or more with Ray's default node checks, while no change reaches the replicas). Its calls
    leave no task events in Ray's GCS (:mod:`cortex_ray.task_events`), Serve's checks of it
    included."""
    return DeploymentActorConfig(
        name=name,
        actor_class=ray.remote(cls),
        init_args=init_args,
        actor_options={
            "num_cpus": 0,
            "max_concurrency": 10000,
            "resources": {HEAD_RESOURCE: CONTROL_ON_HEAD},
            "enable_task_events": False,
            **_env(runtime_env),
        },
    )


def _env(runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    return {"runtime_env": runtime_env} if runtime_env else {}
