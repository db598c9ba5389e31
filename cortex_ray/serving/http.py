"""Request payloads and responses, as Cortex 0.35 shaped them.

Payload by Content-Type: JSON to Python objects, ``text/*`` to ``str``,
anything else to ``bytes``. Responses: dict/list to JSON, ``str`` to text,
``bytes`` to octet-stream, a Starlette ``Response`` as it is. Errors become JSON
bodies through :func:`cortex_ray.errors.to_response_body` and nowhere else.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from cortex_ray.errors import BadRequestError, CortexRayError, to_response_body

__all__ = ["decode_payload", "encode_response", "error_response", "parse_payload"]

log = logging.getLogger("cortex_ray.http")


def parse_payload(body: bytes, content_type: str | None) -> Any:
    """Decode a body by its content type (shared by RealtimeAPI and AsyncAPI)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        if not body:
            return None
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequestError(f"malformed JSON body: {exc}") from exc
    if media.startswith("text/"):
        try:
            return body.decode(_charset(content_type) or "utf-8")
        except (UnicodeDecodeError, LookupError) as exc:
            raise BadRequestError(f"the text body cannot be decoded: {exc}") from exc
    return body


async def decode_payload(request: Request) -> Any:
    return parse_payload(await request.body(), request.headers.get("content-type"))


def encode_response(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(bytes(result), media_type="application/octet-stream")
    if isinstance(result, str):
        return PlainTextResponse(result)
    if result is None:
        return Response(status_code=200)
    try:
        return Response(json.dumps(result, default=_default), media_type="application/json")
    except (TypeError, ValueError) as exc:
        raise CortexRayError(
            f"the handler returned a {type(result).__name__} that cannot be serialized to JSON: {exc}"
        ) from exc


def error_response(exc: BaseException, headers: dict[str, str] | None = None) -> JSONResponse:
    status, body = to_response_body(exc)
    if status >= 500:
        log.error("request failed: %s", exc, exc_info=exc)
    return JSONResponse(body, status_code=status, headers=headers)


def _charset(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset":
            return value.strip().strip('"')
    return None


def _default(value: Any) -> Any:
    """JSON for numpy scalars and arrays, which handlers return all the time."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
