"""The calls each replica makes every few seconds leave no task events in Ray's GCS (about 3.5 KB
each there: with two replicas, +30 MiB an hour until Ray's cap of 100,000 events). The control
actors are also created without task events (``tests/unit/test_application.py`` for the reloader
and the dispatcher); the marks below cover handles whose actor-wide default is not known."""

from __future__ import annotations

import pytest

from cortex_ray.asyncapi.dispatcher import Dispatcher
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
    [Registry.register, ModelReloader.report, ModelReloader.snapshot, Dispatcher.ensure_running],
    ids=[
        "heartbeat to the ingress",
        "report to the reloader",
        "long poll of the reloader",
        "gateway's ping of the dispatcher",
    ],
)
def test_every_periodic_call_to_a_control_actor_is_marked(method: object) -> None:
    assert getattr(method, "__ray_enable_task_events__", True) is False
