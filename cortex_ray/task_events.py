"""cortex-ray's own actor calls, kept out of Ray's task events."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["without_task_events"]

F = TypeVar("F", bound=Callable[..., object])


def without_task_events(method: F) -> F:
    """Mark an actor method whose calls Ray records no task events for (what
    ``@ray.method(enable_task_events=False)`` does, without importing Ray).

    For the calls every replica makes every few seconds (its heartbeat to the ingress, its report
    and long poll to the reloader): recorded, they are thousands an hour per replica in the GCS's
    task-event store (which grows to 100,000 events, tens of MiB, before it drops any) and in the
    dashboard's task list, where they push out the user's own tasks. Serve leaves its own
    control calls out the same way.
    """
    method.__ray_enable_task_events__ = False  # type: ignore[attr-defined]
    return method
