"""A Ray Serve config (``serve run`` / ``serve deploy`` / KubeRay) from a spec.

One application per API: ``name`` is the API name, ``route_prefix`` its
endpoint, ``import_path`` the cortex-ray builder with ``args`` naming the spec
and the API, and the deployment options that the spec maps to.
"""

from __future__ import annotations

from typing import Any

from cortex_ray.serving.options import all_deployment_options, check_servable, option_warnings
from cortex_ray.spec import Spec


def is_loopback(host: str) -> bool:
    """Only this machine can reach a server bound to ``host``."""
    return host in ("localhost", "::1") or host.startswith("127.")


__all__ = ["IMPORT_PATH", "is_loopback", "serve_config"]

IMPORT_PATH = "cortex_ray.app:build"


def serve_config(
    spec: Spec,
    spec_path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    warnings: list[str] | None = None,
    ingress: str = "fast",
) -> dict[str, Any]:
    """The Serve config dict for every API of ``spec`` (validated first).

    ``ingress="fast"``: no Serve proxy (``proxy_location: Disabled``); the application
    builder starts cortex-ray's balancer on ``host:port`` if it does not run yet.
    """
    applications = []
    for index, api in enumerate(spec.apis):
        check_servable(api, file=spec.file, index=index)
        if warnings is not None:
            warnings.extend(option_warnings(api))
        applications.append(
            {
                "name": api.name,
                "route_prefix": api.endpoint,
                "import_path": IMPORT_PATH,
                "args": {
                    "spec": spec_path,
                    "api": api.name,
                    "info_details": is_loopback(host),
                    **({"ingress": "fast", "host": host, "port": port} if ingress == "fast" else {}),
                },
                "deployments": all_deployment_options(api, ingress),
            }
        )
    if ingress == "fast":
        proxy: dict[str, Any] = {"proxy_location": "Disabled"}
    else:
        proxy = {"proxy_location": "EveryNode", "http_options": {"host": host, "port": port}}
    return {**proxy, "logging_config": {"enable_access_log": False}, "applications": applications}
