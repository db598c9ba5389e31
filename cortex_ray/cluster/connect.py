"""Joining a running cluster, and what works across its nodes."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cortex_ray.cluster import local_run
from cortex_ray.errors import DeploymentError, SpecError, SpecErrors
from cortex_ray.net import is_loopback_address
from cortex_ray.spec import Spec
from cortex_ray.spec.paths import is_local_uri, local_path_of

__all__ = ["alive_nodes", "check_local_data", "connect"]


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (when ``None``: ``RAY_ADDRESS``, then the cluster ``ray
    start`` started on this machine, then the Ray of a ``cortex-ray run`` here); never starts one."""
    import ray

    if ray.is_initialized():
        return
    target = address
    if address is None and os.environ.get("RAY_ADDRESS") is None:
        target = local_run.ray_start_address()  # the cluster `ray start` started here
        address = "auto" if target else None  # (Ray finds it itself, and sends it its token)
        local = local_run.find() if target is None else None
        if local is not None:  # else the Ray of a `cortex-ray run` (or notebook) on this machine
            address = target = local[0]
            if local[1] and "RAY_AUTH_MODE" not in os.environ:
                _auth_mode(local[1])  # the mode that Ray started with (its token is ~/.ray/auth_token)
        elif address is None:  # nothing listens: say so now, not after Ray's retries
            raise DeploymentError(
                "no running Ray cluster found on this machine (no RAY_ADDRESS, no `ray start` cluster, "
                "no `cortex-ray run`): start one, or pass --address"
            )
    if target and is_loopback_address(target):
        local_run.use_loopback()  # a Ray on 127.0.0.1: Ray would otherwise dial the machine's address
    if address not in (None, "auto") and "RAY_AUTH_MODE" not in os.environ and token_available():
        # Ray sends its token only to a cluster it found itself; with an address, to none: send it
        # as Ray would (a cluster without token authentication ignores it)
        _auth_mode("token")
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address if address not in (None, "auto") else "this machine (RAY_ADDRESS, or `ray start`)"
        hint = ""
        if os.environ.get("RAY_AUTH_MODE") != "token" and not token_available():
            hint = (
                ". If the cluster uses token authentication (Ray's default), give its token: "
                "RAY_AUTH_TOKEN=<token>, or the token in ~/.ray/auth_token (`ray get-auth-token` "
                "on the head node prints it)"
            )
        raise DeploymentError(f"no running Ray cluster found at {where}: {exc}{hint}") from exc


def token_available() -> bool:
    """Whether this machine has a Ray token to send: ``RAY_AUTH_TOKEN``, the file
    ``RAY_AUTH_TOKEN_PATH`` names, or ``~/.ray/auth_token`` (where Ray looks)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    try:
        return bool(Path(path).read_text().strip())
    except OSError:
        return False


def _auth_mode(mode: str) -> None:
    """Use Ray's auth ``mode`` in this process (Ray reads it into its config: refresh that too,
    as Ray itself does when it turns token auth on)."""
    os.environ["RAY_AUTH_MODE"] = mode
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]

        Config.initialize("")
    except Exception as exc:  # an older or newer Ray: the environment variable alone then
        logging.getLogger("cortex_ray").debug("Ray's config not refreshed: %s", exc)


def alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_local_data(spec: Spec, nodes: int, shared_dirs: Sequence[str] = ()) -> None:
    """On a cluster of several nodes, refuse local model folders and workload stores that are
    not under a folder the operator says every node shares (``--shared-dir``)."""
    if nodes <= 1:
        return
    shared = [Path(d).resolve() for d in shared_dirs]
    errors = []
    for index, api in enumerate(spec.apis):
        for field, uri in _local_uris(api):
            path = local_path_of(uri).resolve()
            if any(path == s or s in path.parents for s in shared):
                continue
            errors.append(
                SpecError(
                    f"{path} is a folder of this machine, and the cluster has {nodes} nodes: the "
                    "replicas on the others would not find it. Use S3, or a folder every node "
                    "mounts at the same path, named with --shared-dir",
                    file=spec.file,
                    api_name=api.name,
                    api_index=index,
                    field=field,
                )
            )
    if errors:
        raise SpecErrors(errors)


def _local_uris(api: object) -> list[tuple[str, str]]:
    from cortex_ray.spec import ApiSpec

    assert isinstance(api, ApiSpec)
    found: list[tuple[str, str]] = []
    models = api.handler.model_spec
    key = "multi_model_reloading" if api.handler.type == "python" else "models"
    if models is not None:
        for attr in ("path", "dir"):
            value = getattr(models, attr)
            if value and is_local_uri(value):
                found.append((f"handler.{key}.{attr}", value))
        for i, entry in enumerate(models.paths or []):
            if is_local_uri(entry.path):
                found.append((f"handler.{key}.paths[{i}].path", entry.path))
    if api.workloads is not None and api.workloads.store and is_local_uri(api.workloads.store):
        found.append(("workloads.store", api.workloads.store))
    return found
