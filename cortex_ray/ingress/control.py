"""Starting, finding and stopping the fast path's ingress (from a driver or a replica)."""

from __future__ import annotations

import logging
from typing import Any

from cortex_ray.ingress.registry import INGRESS_ACTOR, INGRESS_NAMESPACE, Registry

__all__ = [
    "DEFAULT_INGRESS",
    "INGRESS_MODES",
    "get_ingress",
    "grpc_problem",
    "start_ingress",
    "stop_ingress",
    "wait_routed",
]

log = logging.getLogger("cortex_ray.ingress")
INGRESS_MODES = ("fast", "proxy")
DEFAULT_INGRESS = "fast"
HEAD_RESOURCE = "node:__internal_head__"


def start_ingress(host: str, port: int, threads: int = 1, grpc_port: int | None = None) -> Any:
    """The cluster's ingress actor, started on the head node if it does not run yet; with
    ``grpc_port``, it also takes gRPC calls there (a running one too, if it does not yet).

    It listens on ``host:port`` (HAProxy) of the head node (where ``ray start --head`` runs,
    and where KubeRay's head service points) and lives until :func:`stop_ingress`
    (detached: it outlives the driver or the build task that started it, as Serve's own
    controller does).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    found = get_ingress()
    if found is not None:
        if grpc_port is not None:
            ray.get(found.listen_grpc.remote(grpc_port))
        return found
    here = NodeAffinitySchedulingStrategy(_head_node_id(), soft=False)
    remote: Any = ray.remote(Registry)
    actor = remote.options(
        name=INGRESS_ACTOR,
        namespace=INGRESS_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        max_concurrency=1000,
        scheduling_strategy=here,
        enable_task_events=False,  # (its callers' heartbeats: see cortex_ray.task_events)
    ).remote(host, port, threads, grpc_port)
    ray.get(actor.status.remote())  # it listens once its constructor returned
    return actor


def _head_node_id() -> str:
    import ray

    for node in ray.nodes():
        if node.get("Alive") and HEAD_RESOURCE in node.get("Resources", {}):
            return str(node["NodeID"])
    return str(ray.get_runtime_context().get_node_id())


def get_ingress() -> Any:
    import ray

    try:
        return ray.get_actor(INGRESS_ACTOR, namespace=INGRESS_NAMESPACE)
    except ValueError:
        return None


def wait_routed(api: str, replicas: int = 1, timeout: float = 60.0) -> bool:
    """Whether the balancer routes ``api`` to at least ``replicas`` replicas (waits)."""
    import ray

    ingress = get_ingress()
    return ingress is not None and bool(ray.get(ingress.wait_ready.remote(api, replicas, timeout)))


def grpc_problem(api: str, ingress: str) -> str | None:
    """Why the gRPC API ``api`` could not be served on ``ingress`` here (``None``: it can): the
    balancer takes no gRPC, or Serve's proxy runs without cortex-ray's gRPC routing."""
    import ray

    if ingress == "fast":
        balancer = get_ingress()
        if balancer is not None and ray.get(balancer.status.remote()).get("grpc"):
            return None
        return (
            f"api {api!r} is a gRPC API (handler.protobuf_path), and the fast ingress takes no gRPC: "
            "start it with a gRPC port (cortex-ray run and deploy do it when the spec has a gRPC API; "
            "sdk.start(grpc_port=...))"
        )
    from ray import serve

    from cortex_ray.rpc.proxy import SERVICER_FUNCTION

    try:
        client: Any = serve.context._get_global_client()
        options: Any = ray.get(client._controller.get_grpc_config.remote())
        functions = list(options.grpc_servicer_functions)
    except Exception as exc:  # (Serve's private client: if it moved, deploy and let clients tell)
        log.debug("cannot read Serve's gRPC options: %s", exc)
        return None
    if SERVICER_FUNCTION in functions:
        return None
    return (
        f"api {api!r} is a gRPC API (handler.protobuf_path), and Serve runs without cortex-ray's gRPC "
        f"routing: Serve must be started with grpc_options.grpc_servicer_functions [{SERVICER_FUNCTION}] "
        "(cortex-ray run and deploy do it when the spec has a gRPC API and they start Serve; `serve "
        "shutdown` first if it runs)"
    )


def stop_ingress() -> None:
    import ray

    ingress = get_ingress()
    if ingress is None:
        return
    try:
        ray.get(ingress.stop.remote(), timeout=10)
    except Exception as exc:  # stopping anyway
        log.warning("ingress did not stop cleanly: %s", exc)
    ray.kill(ingress, no_restart=True)
