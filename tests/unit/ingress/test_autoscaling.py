"""The fast path's autoscaling policy, on a stand-in for Serve's AutoscalingContext."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cortex_ray.ingress.autoscaling import ONGOING_METRIC, fast_path_policy


def context(reported: dict[str, float] | None, replicas: int = 2, via_serve: float = 0) -> Any:
    return SimpleNamespace(
        current_num_replicas=replicas,
        target_num_replicas=replicas,
        aggregated_metrics={ONGOING_METRIC: reported} if reported is not None else {},
        total_num_requests=via_serve,
        config=SimpleNamespace(get_target_ongoing_requests=lambda: 4),
    )


def test_desired_replicas_follow_what_the_replicas_report() -> None:
    assert fast_path_policy(context({"r1": 8, "r2": 8}))[0] == 4  # 16 in flight / 4 per replica
    assert fast_path_policy(context({"r1": 1, "r2": 1}))[0] == 0.5  # Serve then applies min_replicas
    assert fast_path_policy(context({"r1": 4}, via_serve=4))[0] == 2  # plus what came through Serve


def test_no_report_yet_means_no_load_and_no_replicas_means_start() -> None:
    assert fast_path_policy(context(None))[0] == 0
    assert fast_path_policy(context(None, replicas=0))[0] == 0
