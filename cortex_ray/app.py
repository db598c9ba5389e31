"""The Ray Serve application builder: ``import_path: cortex_ray.app:build``.

``args`` name the spec file and the API::

    applications:
      - name: iris
        route_prefix: /iris
        import_path: cortex_ray.app:build
        args: {spec: /path/to/cortex.yaml, api: iris}

The spec is validated where the builder runs, before any replica starts.
"""

from typing import Any

import ray
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application
from ray.serve.config import DeploymentActorConfig

from cortex_ray.reload.reloader import ModelReloader
from cortex_ray.reload.subscriber import RELOADER_ACTOR
from cortex_ray.serving.options import check_servable, deployment_options
from cortex_ray.serving.replica import ApiReplica
from cortex_ray.spec import ApiSpec, load_spec

__all__ = ["BuildArgs", "build", "build_api"]


class BuildArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: str
    """Path of the spec file (cortex.yaml)."""
    api: str | None = None
    """The API to serve; may be left out when the spec holds one API."""


def build(args: BuildArgs) -> Application:
    if not isinstance(args, BuildArgs):
        args = BuildArgs.model_validate(args)
    spec = load_spec(args.spec)
    if args.api is None:
        if len(spec.apis) != 1:
            names = ", ".join(a.name for a in spec.apis)
            raise ValueError(f"{args.spec} holds several APIs ({names}): pass args.api to pick one")
        api = spec.apis[0]
    else:
        api = spec.api(args.api)
    check_servable(api, file=spec.file, index=spec.apis.index(api))
    return build_api(api)


def reloader_actor(api: ApiSpec) -> DeploymentActorConfig:
    """The API's reloader, a deployment-scoped actor: created before the replicas, restarted if it
    dies, deleted with the application."""
    return DeploymentActorConfig(
        name=RELOADER_ACTOR,
        actor_class=ray.remote(ModelReloader),
        init_args=(api,),
        actor_options={"num_cpus": 0, "max_concurrency": 10000},
    )


def build_api(api: ApiSpec, **overrides: Any) -> Application:
    """The Serve application of one validated API.

    ``overrides`` are extra deployment options; ``ray_actor_options`` in them is
    merged key by key into the spec's (e.g. a smaller ``num_cpus`` in tests).
    """
    options = deployment_options(api)
    if api.handler.model_spec is not None:
        options["deployment_actors"] = [reloader_actor(api)]
    actor = {**options["ray_actor_options"], **overrides.pop("ray_actor_options", {})}
    options = {**options, **overrides, "ray_actor_options": actor}
    deployment: Any = serve.deployment(ApiReplica)
    return deployment.options(**options).bind(api)
