"""How an API's spec maps onto Ray Serve deployment options (one place).

| Cortex field | Serve option |
|---|---|
| compute.cpu / gpu / mem | ray_actor_options.num_cpus / num_gpus / memory |
| compute.inf | ray_actor_options.resources.neuron_cores |
| autoscaling.min/max/init_replicas | autoscaling_config.min/max/initial_replicas |
| autoscaling.target_replica_concurrency | autoscaling_config.target_ongoing_requests |
| autoscaling.max_replica_concurrency | max_ongoing_requests |
| autoscaling.window | autoscaling_config.look_back_period_s |
| autoscaling.upscale/downscale_stabilization_period | autoscaling_config.upscale/downscale_delay_s |
| handler.threads_per_process | threads running sync handler methods in each replica |

Cortex's per-step factors and tolerances have no Serve equivalent: a value
other than Cortex's default is reported as a warning. ``processes_per_replica``
above 1 cannot map (a Serve replica is one process): it is refused.
"""

from __future__ import annotations

from typing import Any

from cortex_ray.errors import SpecError, SpecErrors
from cortex_ray.ingress.autoscaling import POLICY
from cortex_ray.spec import ApiSpec

ROUTER = "cortex_ray.ingress.router:ModelRouter"
"""Serve's router that reads the model from where the spec says (:mod:`cortex_ray.ingress.router`)."""

__all__ = [
    "all_deployment_options",
    "check_servable",
    "deployment_options",
    "gateway_options",
    "option_warnings",
]

_UNMAPPED_DEFAULTS = {
    "max_downscale_factor": 0.75,
    "max_upscale_factor": 1.5,
    "downscale_tolerance": 0.05,
    "upscale_tolerance": 0.05,
}


def check_servable(api: ApiSpec, file: str | None = None, index: int | None = None) -> None:
    """Refuse, with a clear message, what cortex-ray cannot serve (yet)."""
    problems: list[tuple[str, str]] = []
    h = api.handler
    if h.processes_per_replica > 1:
        problems.append(
            (
                "handler.processes_per_replica",
                f"processes_per_replica ({h.processes_per_replica}) cannot map to Ray Serve, where a "
                "replica is one process: use autoscaling replicas (and threads_per_process) instead",
            )
        )
    if problems:
        raise SpecErrors(
            [SpecError(m, file=file, api_name=api.name, api_index=index, field=f) for f, m in problems]
        )


def deployment_options(api: ApiSpec, ingress: str = "proxy") -> dict[str, Any]:
    """Options for ``serve.deployment(...)`` / a Serve config's ``deployments[]`` entry.

    On the fast ingress the API's HTTP deployment scales on what its replicas report (Serve
    sees none of those requests): :mod:`cortex_ray.ingress.autoscaling`.
    """
    c, a, h = api.compute, api.autoscaling, api.handler
    actor: dict[str, Any] = {"num_cpus": c.cpu}
    if c.gpu:
        actor["num_gpus"] = c.gpu
    if c.mem is not None:
        actor["memory"] = c.mem
    if c.inf:
        actor["resources"] = {"neuron_cores": c.inf}
    target = a.target_replica_concurrency or h.processes_per_replica * h.threads_per_process
    asynchronous = api.kind == "AsyncAPI"
    extra: dict[str, Any] = {}
    scaling_policy = {"policy": {"policy_function": POLICY}} if ingress == "fast" and not asynchronous else {}
    routing = api.networking.model_routing
    if ingress == "proxy" and not asynchronous and routing is not None and routing.json_field is None:
        kind, key = routing.as_pair()  # Serve's proxy: the model id from where the spec says
        extra["request_router_config"] = {
            "request_router_class": ROUTER,
            "request_router_kwargs": {"kind": kind, "key": key, "endpoint": api.endpoint},
        }
    if asynchronous and api.workloads is not None:
        # a worker being stopped (downscale, redeploy) finishes the workload it runs first
        extra["graceful_shutdown_timeout_s"] = api.workloads.timeout + 30
    return {
        **extra,
        "name": f"{api.name}-worker" if asynchronous else api.name,
        # an AsyncAPI worker runs one workload at a time, as Cortex's did, and is sent one only
        # when it is free (no workload waits behind a long one while another worker idles)
        "max_ongoing_requests": 1 if asynchronous else a.max_replica_concurrency,
        # Serve's proxy path: beyond what the replicas take, at most as many again wait, then 503
        **({} if asynchronous else {"max_queued_requests": a.max_replica_concurrency}),
        "ray_actor_options": actor,
        "autoscaling_config": {
            "min_replicas": a.min_replicas,
            "max_replicas": a.max_replicas,
            "initial_replicas": a.init_replicas or a.min_replicas,
            "target_ongoing_requests": target,
            "look_back_period_s": a.window,
            "upscale_delay_s": a.upscale_stabilization_period,
            "downscale_delay_s": a.downscale_stabilization_period,
            **scaling_policy,
        },
    }


def gateway_options(api: ApiSpec, ingress: str = "proxy") -> dict[str, Any]:
    """The AsyncAPI gateway (HTTP ingress): light, I/O bound, scales on requests."""
    scaling_policy = {"policy": {"policy_function": POLICY}} if ingress == "fast" else {}
    return {
        "name": api.name,
        "max_ongoing_requests": 1000,
        "ray_actor_options": {"num_cpus": 0.1},
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": max(1, api.autoscaling.max_replicas // 4),
            "target_ongoing_requests": 100,
            **scaling_policy,
        },
    }


def all_deployment_options(api: ApiSpec, ingress: str = "proxy") -> list[dict[str, Any]]:
    """Every deployment of the API's application (the config's ``deployments``)."""
    if api.kind == "AsyncAPI":
        return [gateway_options(api, ingress), deployment_options(api, ingress)]
    return [deployment_options(api, ingress)]


def option_warnings(api: ApiSpec) -> list[str]:
    return [
        f"api {api.name!r}: autoscaling.{k} ({getattr(api.autoscaling, k):g}) has no Ray Serve "
        "equivalent and is ignored"
        for k, default in _UNMAPPED_DEFAULTS.items()
        if getattr(api.autoscaling, k) != default
    ]
