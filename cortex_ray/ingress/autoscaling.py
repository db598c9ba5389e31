"""Autoscaling on the fast path: Serve's own rule, fed by the replicas' own counts.

Requests on the fast path never pass a Serve handle or Serve's replica request path, so
Serve's default policy would see no load at all. Each fast-path replica reports the
requests it had in flight on average since its last report (received and not yet
answered, waiting ones included) as the custom metric ``cortex_ray_ongoing``; this
policy adds them up (with whatever also came through Serve) and asks for
``ongoing / target_ongoing_requests`` replicas, like Serve's default policy. Serve then
applies the deployment's bounds and up/downscale delays as usual.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ONGOING_METRIC", "POLICY", "fast_path_policy"]

ONGOING_METRIC = "cortex_ray_ongoing"
POLICY = "cortex_ray.ingress.autoscaling:fast_path_policy"


def fast_path_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Desired replicas from the fast path's load (a Serve ``AutoscalingContext`` in)."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    reported = (ctx.aggregated_metrics or {}).get(ONGOING_METRIC) or {}
    ongoing = float(sum(reported.values())) + float(ctx.total_num_requests or 0)
    target = ctx.config.get_target_ongoing_requests()
    return ongoing / target, {}
