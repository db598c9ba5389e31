"""The payload codec: request bodies to Python values and handler results to bodies, as Cortex
0.35 shaped them.

Payload by Content-Type: JSON to Python objects, ``text/*`` to ``str``, forms to Starlette
``FormData``, anything else to ``bytes``. Results: dict/list to JSON, ``str`` to text,
``bytes`` to octet-stream, a Starlette ``Response`` as it is. Errors become JSON bodies through
:func:`cortex_ray.endpoint.messages.error_outgoing` and nowhere else.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.responses import Response, StreamingResponse

from cortex_ray.endpoint.messages import JSON, Outgoing
from cortex_ray.errors import BadRequestError, CortexRayError, UserHandlerError

__all__ = ["decode_json", "decode_payload", "encode_result", "parse_payload"]

_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")

_TEXT = b"text/plain; charset=utf-8"
_OCTETS = b"application/octet-stream"


def parse_payload(body: bytes, content_type: str | None) -> Any:
    """Decode a body by its content type (shared by RealtimeAPI and AsyncAPI)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        if not body:
            return None
        return decode_json(body)
    if media.startswith("text/"):
        charset = _charset(content_type) or "utf-8"
        try:
            return body.decode(charset)
        except LookupError as exc:
            raise BadRequestError(f"the text body's charset {charset[:40]!r} is unknown") from exc
        except UnicodeDecodeError as exc:
            raise BadRequestError(f"the text body is not valid {charset[:40]}") from exc
    return body


def decode_json(body: bytes) -> Any:
    """A JSON body's value; anything that is not JSON a server can hold is a 400: bad syntax,
    nesting deeper than Python's recursion allows (about 1,000 levels), or an integer of more
    digits than Python converts (4,300)."""
    try:
        try:
            text = body.decode()  # UTF-8, nearly always: skips json's encoding detection
        except UnicodeDecodeError:
            return json.loads(body)  # UTF-16/32, as RFC 8259 allowed
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            f"malformed JSON body: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise BadRequestError("malformed JSON body: it is not UTF-8, UTF-16 or UTF-32 text") from exc
    except RecursionError as exc:
        raise BadRequestError("the JSON body nests too deeply") from exc
    except ValueError as exc:  # an integer beyond sys.get_int_max_str_digits()
        raise BadRequestError("the JSON body holds a number with too many digits") from exc


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
    except Exception as exc:  # Starlette's and python-multipart's errors: a bad request, said plainly
        raise BadRequestError(
            "the form body cannot be parsed (multipart/form-data needs its boundary, and well-formed parts)"
        ) from exc


def encode_result(result: Any) -> Outgoing:
    """What a handler returned, as the response to send."""
    if isinstance(result, dict | list):
        return Outgoing(200, [(b"content-type", JSON)], _dumps(result))
    if isinstance(result, str):
        return Outgoing(200, [(b"content-type", _TEXT)], result.encode())
    if isinstance(result, bytes | bytearray | memoryview):
        return Outgoing(200, [(b"content-type", _OCTETS)], bytes(result))
    if isinstance(result, StreamingResponse):
        return Outgoing(result.status_code, _checked_headers(result), stream=_chunks(result))
    if isinstance(result, Response):
        return Outgoing(result.status_code, _checked_headers(result), bytes(result.body))
    return Outgoing(200, [(b"content-type", JSON)], _dumps(result))  # None too: JSON null


def _dumps(result: Any) -> bytes:
    try:
        return _ENCODER.encode(result).encode()
    except (TypeError, ValueError) as exc:
        raise CortexRayError(
            f"the handler returned a {type(result).__name__} that cannot be serialized to JSON: {exc}"
        ) from exc


_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _checked_headers(response: Response) -> list[tuple[bytes, bytes]]:
    """A handler's own response headers, refused when one could split the answer (CR, LF, NUL in
    a value; a name that is not an HTTP token)."""
    headers = list(response.raw_headers)
    for name, value in headers:
        if not _TOKEN.match(name) or b"\r" in value or b"\n" in value or b"\0" in value:
            raise UserHandlerError(
                f"the handler's response has an invalid header {name[:40]!r}: header names are tokens, "
                "and values may not hold CR, LF or NUL"
            )
    return headers


async def _chunks(response: StreamingResponse) -> Any:
    iterator = response.body_iterator
    try:
        async for chunk in iterator:
            yield chunk if isinstance(chunk, bytes) else str(chunk).encode(response.charset)
    finally:  # stopped early (the client went away): the handler's generator stops too
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


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
