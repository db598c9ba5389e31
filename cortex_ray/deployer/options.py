"""How an API's spec maps onto Ray Serve deployment options (one place).

| Cortex field | Serve option |
|---|---|
| compute.cpu / gpu / mem | ray_actor_options.num_cpus / num_gpus / memory |
| compute.inf (chips) | ray_actor_options.resources.neuron_cores (2 per chip: inf2) |
| autoscaling.min/max/init_replicas | autoscaling_config.min/max/initial_replicas |
| autoscaling.target_replica_concurrency | autoscaling_config.target_ongoing_requests |
| autoscaling.max_replica_concurrency | max_ongoing_requests (and max_queued_requests) |
| autoscaling.window | autoscaling_config.look_back_period_s |
| autoscaling.upscale/downscale_stabilization_period | autoscaling_config.upscale/downscale_delay_s |
| handler.threads_per_process | threads running sync handler methods in each replica |
| handler.log_level | logging_config.log_level |
| update_strategy.max_surge | max_surge_percent (of the initial replicas) |
| update_strategy.max_unavailable (max_surge 0) | rolling_update_percentage |

What cannot map is refused or warned about by the spec's rules (:mod:`cortex_ray.spec.rules`).
"""

from __future__ import annotations

from typing import Any

from cortex_ray.ingress.autoscaling import POLICY
from cortex_ray.spec import NEURON_CORES_PER_CHIP, ApiSpec
from cortex_ray.spec.names import worker_name

HEALTH_CHECK_PERIOD_S = 2.0
"""How often Serve's controller checks each replica (Serve's default: 10 s). A replica that died
(killed, its node lost) is replaced once a check finds it gone: its replacement was routed 9.0 s
after a kill with Serve's default, 2.1 s with this (``benchmarks/faults.py``'s ``replica-killed``).
The check itself is a flag read (``ApiReplica.check_health``). A check that hangs fails only after
``health_check_timeout_s`` (30 s), and Serve replaces a replica after 3 failed checks in a row."""
GATEWAY_CONCURRENCY = 1000
"""Requests an AsyncAPI gateway replica takes at once (it only stores and reads workloads)."""
ROUTER = "cortex_ray.ingress.router:ModelRouter"
PROXY_QUEUE_FLOOR = 256
"""Requests one Serve proxy holds for an API while they wait to be sent to a replica, at least.

Serve counts a request as queued from its arrival until a replica is chosen, which takes a probe
of the replicas' queues: a burst arrives queued all at once. A queue as small as the API's
``max_replica_concurrency`` drops such a burst with Serve's own text 503 before any replica could
refuse it with Cortex's JSON 503 (seen: 5 requests at once, a limit of 2, two dropped). The
replica refuses its excess within milliseconds, so the queue drains at that pace; it is bounded
so that a proxy's memory is."""
"""Serve's router that reads the model from where the spec says (:mod:`cortex_ray.ingress.router`)."""

__all__ = [
    "GATEWAY_CONCURRENCY",
    "all_deployment_options",
    "deployment_options",
    "gateway_options",
    "logging_config",
    "rollout_options",
]


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
        actor["resources"] = {"neuron_cores": c.inf * NEURON_CORES_PER_CHIP}
    target = a.target_replica_concurrency or h.processes_per_replica * h.threads_per_process
    asynchronous = api.kind == "AsyncAPI"
    proxy = ingress == "proxy"
    extra: dict[str, Any] = {}
    scaling_policy = {"policy": {"policy_function": POLICY}} if ingress == "fast" and not asynchronous else {}
    routing = api.networking.model_routing
    by_spec = routing is not None and routing.json_field is None
    if ingress == "proxy" and not asynchronous and (by_spec or h.model_spec is not None):
        # Serve's proxy: the model id from where the spec says, and from the protocols' routes
        kind, key = routing.as_pair() if routing is not None and by_spec else ("", "")
        extra["request_router_config"] = {
            "request_router_class": ROUTER,
            "request_router_kwargs": {"kind": kind, "key": key, "endpoint": api.endpoint},
        }
    if asynchronous and api.workloads is not None:
        # a worker being stopped (downscale, redeploy) finishes the workload it runs first
        extra["graceful_shutdown_timeout_s"] = api.workloads.timeout + 30
    return {
        **extra,
        "name": worker_name(api.name) if asynchronous else api.name,
        # an AsyncAPI worker runs one workload at a time, as Cortex's did, and is sent one only
        # when it is free (no workload waits behind a long one while another worker idles). On
        # Serve's proxy path a replica is sent up to twice its max_replica_concurrency, so that it
        # sees the excess and refuses it at once with Cortex's JSON 503 (it counts them itself:
        # :class:`~cortex_ray.replica.deployment.ApiReplica`); a burst waits in Serve's queue for
        # its turn to be refused (PROXY_QUEUE_FLOOR), and only beyond that gets Serve's own 503
        "max_ongoing_requests": 1 if asynchronous else a.max_replica_concurrency * (2 if proxy else 1),
        **({} if asynchronous else {"max_queued_requests": _queue(a.max_replica_concurrency, proxy)}),
        "ray_actor_options": actor,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
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


def _queue(max_replica_concurrency: int, proxy: bool) -> int:
    """Serve's ``max_queued_requests``: on the fast path Serve's router carries only calls made
    through handles; on the proxy path it carries every request (:data:`PROXY_QUEUE_FLOOR`)."""
    if proxy:
        return max(PROXY_QUEUE_FLOOR, 2 * max_replica_concurrency)
    return max_replica_concurrency


def logging_config(api: ApiSpec) -> dict[str, Any]:
    """Serve's logging for the API's replicas: the handler's level, no access log."""
    return {"log_level": api.handler.log_level.upper(), "enable_access_log": False}


def rollout_options(api: ApiSpec) -> dict[str, Any]:
    """How a changed API rolls: Cortex's ``max_surge`` as Serve's surge (replacements start, and
    are ready, before the replicas they replace stop: no request fails on a one-replica API);
    with no surge, ``max_unavailable`` as the share replaced at a time."""
    strategy = api.update_strategy
    replicas = api.autoscaling.init_replicas or api.autoscaling.min_replicas or 1
    surge = strategy.percent("max_surge", replicas)
    if surge > 0:
        return {"max_surge_percent": surge}
    return {"rolling_update_percentage": strategy.percent("max_unavailable", replicas) / 100}


def gateway_options(api: ApiSpec, ingress: str = "proxy") -> dict[str, Any]:
    """The AsyncAPI gateway (HTTP ingress): light, I/O bound, scales on requests."""
    scaling_policy = {"policy": {"policy_function": POLICY}} if ingress == "fast" else {}
    return {
        "name": api.name,
        "max_ongoing_requests": GATEWAY_CONCURRENCY,
        "ray_actor_options": {"num_cpus": 0.1},
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": max(1, api.autoscaling.max_replicas // 4),
            "target_ongoing_requests": 100,
            **scaling_policy,
        },
        **rollout_options(api),
        "logging_config": logging_config(api),
    }


def all_deployment_options(api: ApiSpec, ingress: str = "proxy") -> list[dict[str, Any]]:
    """Every deployment of the API's application (the config's ``deployments``)."""
    if api.kind == "AsyncAPI":
        return [gateway_options(api, ingress), deployment_options(api, ingress)]
    return [deployment_options(api, ingress)]
