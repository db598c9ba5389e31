"""The calls each replica makes every few seconds leave no task events in Ray's GCS (about 3.5 KB
each there: with two replicas, +30 MiB an hour until Ray's cap of 100,000 events)."""

from __future__ import annotations

import pytest

from cortex_ray.ingress.registry import Registry
from cortex_ray.reload.reloader import ModelReloader
from cortex_ray.task_events import without_task_events


def test_the_mark_is_the_one_ray_reads_and_leaves_the_method_as_it_is() -> None:
    async def ping(self: object) -> int:
        return 1

    marked = without_task_events(ping)
    assert marked is ping
    assert marked.__ray_enable_task_events__ is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "method",
    [Registry.register, ModelReloader.report, ModelReloader.snapshot],
    ids=["heartbeat to the ingress", "report to the reloader", "long poll of the reloader"],
)
def test_every_periodic_call_of_a_replica_is_marked(method: object) -> None:
    assert getattr(method, "__ray_enable_task_events__", True) is False


def test_calls_made_on_demand_keep_their_task_events() -> None:
    assert not hasattr(ModelReloader.status, "__ray_enable_task_events__")
