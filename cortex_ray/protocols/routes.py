"""The protocol routes of one API: ``v1/...`` (TF Serving's REST API) and ``v2/...`` (the Open
Inference Protocol) below its endpoint, beside the handler's own requests."""

from __future__ import annotations

from typing import Any

from cortex_ray.endpoint.messages import Incoming, Outgoing
from cortex_ray.protocols.errors import protocol_error
from cortex_ray.protocols.models import ProtocolModels
from cortex_ray.protocols.v1 import V1
from cortex_ray.protocols.v2 import V2

__all__ = ["PROTOCOLS", "ProtocolRoutes", "protocol_of"]

PROTOCOLS = ("v1", "v2")


def protocol_of(path: str) -> str | None:
    """``v1`` or ``v2`` when a path below an endpoint is one of the protocols' routes."""
    if not path.startswith(("/v1", "/v2")):  # (every request asks: the cheap test first)
        return None
    head = path[1:].split("/", 1)[0]
    return head if head in PROTOCOLS else None


class ProtocolRoutes:
    """Answers the protocols' routes (the ones switched on) for an API's models."""

    def __init__(self, models: ProtocolModels, protocols: tuple[str, ...]) -> None:
        self.protocols = protocols
        self._v1 = V1(models) if "v1" in protocols else None
        self._v2 = V2(models) if "v2" in protocols else None

    def serves(self, path: str) -> bool:
        return protocol_of(path) in self.protocols

    async def __call__(self, incoming: Incoming, used: dict[str, Any]) -> Outgoing:
        parts = [p for p in incoming.path.split("/") if p]
        try:
            if parts[0] == "v1" and self._v1 is not None:
                return await self._v1(incoming, parts, used)
            assert self._v2 is not None
            return await self._v2(incoming, parts, used)
        except Exception as exc:
            return protocol_error(exc)
