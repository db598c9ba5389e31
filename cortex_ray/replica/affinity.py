"""Route requests for a model to the replicas that already hold it.

A client that names the model in the ``serve_multiplexed_model_id`` header (or
``serve-multiplexed-model-id``) is routed by Ray Serve to a replica that has
served that model before, when one exists, instead of a random one: repeated
requests for a model hit a warm cache, and a cold model goes to the replica
holding the fewest models. The replica records each model it serves through
Serve's multiplexing registry (bounded like the memory tier), which is what
Serve's router reads.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

__all__ = ["Affinity"]


class Affinity:
    def __init__(self, capacity: int | None) -> None:
        from ray import serve

        async def record(model_id: str) -> str:
            return model_id

        self._record: Any = serve.multiplexed(max_num_models_per_replica=capacity or -1)(record)

    async def note(self, known: Collection[str]) -> None:
        """Record the model this request names as held here (only names of models that exist)."""
        from ray import serve

        model_id = serve.get_multiplexed_model_id()
        if model_id and model_id.partition("@")[0] in known:  # name, or name@version
            await self._record(model_id)
