"""The payload codec: request bodies to Python values and handler results to bodies, as Cortex
0.35 shaped them.

Payload by Content-Type: JSON to Python objects, ``text/*`` to ``str``, forms to Starlette
``FormData``, anything else to ``bytes``. Results: dict/list to JSON, ``str`` to text,
``bytes`` to octet-stream, a Starlette ``Response`` as it is. Errors become JSON bodies through
:func:`cortex_ray.endpoint.messages.error_outgoing` and nowhere else.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response, StreamingResponse

from cortex_ray.endpoint.messages import JSON, Outgoing
from cortex_ray.errors import BadRequestError, CortexRayError

__all__ = ["decode_payload", "encode_result", "parse_payload"]

_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")

_TEXT = b"text/plain; charset=utf-8"
_OCTETS = b"application/octet-stream"


def parse_payload(body: bytes, content_type: str | None) -> Any:
    """Decode a body by its content type (shared by RealtimeAPI and AsyncAPI)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        if not body:
            return None
        try:
            try:
                text = body.decode()  # UTF-8, nearly always: skips json's encoding detection
            except UnicodeDecodeError:
                return json.loads(body)  # UTF-16/32, as RFC 8259 allowed
            return json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequestError(f"malformed JSON body: {exc}") from exc
    if media.startswith("text/"):
        try:
            return body.decode(_charset(content_type) or "utf-8")
        except (UnicodeDecodeError, LookupError) as exc:
            raise BadRequestError(f"the text body cannot be decoded: {exc}") from exc
    return body


async def decode_payload(body: bytes, content_type: str | None) -> Any:
    """A RealtimeAPI request's payload, as Cortex gave it: an empty JSON body is a 400 too, and
    forms become Starlette ``FormData`` (close it when done)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _FORMS:
        return await _form(body, content_type or "")
    if (media == "application/json" or media.endswith("+json")) and not body.strip():
        raise BadRequestError("the request's JSON body is empty")
    return parse_payload(body, content_type)


async def _form(body: bytes, content_type: str) -> Any:
    from starlette.requests import Request

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-type", content_type.encode("latin-1"))],
    }
    try:
        return await Request(scope, receive).form()
    except Exception as exc:  # Starlette's form errors: a bad request, said plainly
        raise BadRequestError(f"the form body cannot be parsed: {exc}") from exc


def encode_result(result: Any) -> Outgoing:
    """What a handler returned, as the response to send."""
    if isinstance(result, dict | list):
        return Outgoing(200, [(b"content-type", JSON)], _dumps(result))
    if isinstance(result, str):
        return Outgoing(200, [(b"content-type", _TEXT)], result.encode())
    if isinstance(result, bytes | bytearray | memoryview):
        return Outgoing(200, [(b"content-type", _OCTETS)], bytes(result))
    if isinstance(result, StreamingResponse):
        return Outgoing(result.status_code, list(result.raw_headers), stream=_chunks(result))
    if isinstance(result, Response):
        return Outgoing(result.status_code, list(result.raw_headers), bytes(result.body))
    return Outgoing(200, [(b"content-type", JSON)], _dumps(result))  # None too: JSON null


def _dumps(result: Any) -> bytes:
    try:
        return _ENCODER.encode(result).encode()
    except (TypeError, ValueError) as exc:
        raise CortexRayError(
            f"the handler returned a {type(result).__name__} that cannot be serialized to JSON: {exc}"
        ) from exc


async def _chunks(response: StreamingResponse) -> Any:
    async for chunk in response.body_iterator:
        yield chunk if isinstance(chunk, bytes) else str(chunk).encode(response.charset)


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


_ENCODER = json.JSONEncoder(default=_default)
"""One encoder for every response (``json.dumps(default=...)`` builds one per call)."""
