"""Routing by model on Serve's proxy path, without the client's help.

Serve routes a request to a replica that holds its model when the request carries the
``serve_multiplexed_model_id`` header. :class:`ModelRouter` is Serve's own power-of-two
router that also finds the model where the API's ``networking.model_routing`` says (a
query parameter, a header or a path segment) and uses it as the request's multiplexed
model id, so Cortex clients, which name the model in the query string, get the same
routing. A JSON body field cannot be read there (Serve's proxy streams the body to the
replica after routing): on this path such requests are spread as if unnamed; the fast
path reads it.

It relies on the request router API of Ray Serve 2.60 (``request_router_config``), and on
one of its internals (the moment a request is queued for routing), which the tests cover.
"""

from __future__ import annotations

import pickle
from typing import Any
from urllib.parse import parse_qs

from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter

__all__ = ["ModelRouter", "model_named"]


def model_named(scope: dict[str, Any], kind: str, key: str, endpoint: str) -> str | None:
    """The model an ASGI request ``scope`` names: in a protocol route's path
    (``v1/models/{m}...``, ``v2/models/{m}/...``), else as ``kind``/``key`` say; or ``None``."""
    below = scope.get("path", "")[len(endpoint.rstrip("/")) :].strip("/").split("/")
    if len(below) >= 3 and below[0] in ("v1", "v2") and below[1] == "models":
        return below[2].split(":", 1)[0] or None
    if kind == "query":
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(key)
        return values[0] if values else None
    if kind == "header":
        wanted = key.lower().encode()
        for name, value in scope.get("headers", []):
            if name.lower() == wanted:
                return str(value.decode("latin-1"))
        return None
    if kind == "path":
        index = int(key)
        return below[index] if index < len(below) and below[index] else None
    return None


class ModelRouter(PowerOfTwoChoicesRequestRouter):
    def initialize_state(self, kind: str = "", key: str = "", endpoint: str = "/", **kwargs: Any) -> None:
        super().initialize_state(**kwargs)
        self._routing = (kind, key, endpoint)

    async def _choose_replica_for_request(self, pending_request: Any, *, is_retry: bool = False) -> Any:
        # before the request is queued: Serve indexes queued requests by their model id
        metadata = pending_request.metadata
        if not metadata.multiplexed_model_id:
            model = self._model_of(pending_request)
            if model:
                metadata.multiplexed_model_id = model
        return await super()._choose_replica_for_request(pending_request, is_retry=is_retry)

    def _model_of(self, pending_request: Any) -> str | None:
        arg = pending_request.args[0] if pending_request.args else None
        if not isinstance(arg, bytes):
            return None
        try:
            scope = pickle.loads(arg).asgi_scope  # the proxy's StreamingHTTPRequest
        except Exception:
            return None
        kind, key, endpoint = getattr(self, "_routing", ("", "", "/"))
        return model_named(scope, kind, key, endpoint)
