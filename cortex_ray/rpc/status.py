"""An error's HTTP status as a gRPC status code (the one mapping, for every gRPC answer)."""

from __future__ import annotations

import grpc

__all__ = ["grpc_code", "http_status"]

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status a gRPC code reads as (for request metrics): OK 200, else the first status
    that maps to it, else 500."""
    if code == grpc.StatusCode.OK:
        return 200
    return next((status for status, mapped in _CODES.items() if mapped == code), 500)


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC code of an HTTP status (gRPC's own HTTP mapping, read the other way; any other
    4xx is INVALID_ARGUMENT, any other status INTERNAL)."""
    if status in _CODES:
        return _CODES[status]
    return grpc.StatusCode.INVALID_ARGUMENT if 400 <= status < 500 else grpc.StatusCode.INTERNAL
