"""Errors as both protocols write them: ``{"error": "<message>"}`` with the error's status."""

from __future__ import annotations

from cortex_ray.endpoint.messages import Outgoing, error_headers, error_outgoing, json_outgoing
from cortex_ray.errors import CortexRayError, to_response_body

__all__ = ["protocol_error"]


def protocol_error(exc: BaseException) -> Outgoing:
    if not isinstance(exc, CortexRayError):
        out = error_outgoing(exc)  # (logged there, the reason kept out of the answer)
        return json_outgoing({"error": "the replica failed to answer (its log says why)"}, out.status)
    status, body = to_response_body(exc)
    if status >= 500:
        error_outgoing(exc)  # (logged, at most once a minute for the same error)
    return json_outgoing({"error": body["message"]}, status, error_headers(exc))
