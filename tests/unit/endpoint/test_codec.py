"""The payload codec: bodies to payloads, results to bodies (Cortex 0.35's rules)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cortex_ray.endpoint.codec import decode_payload, encode_result, parse_payload
from cortex_ray.errors import BadRequestError, CortexRayError


def test_json_in_any_unicode_encoding_and_empty_json_as_none() -> None:
    for encoding in ("utf-8", "utf-16", "utf-32"):
        assert parse_payload('{"é": [1]}'.encode(encoding), "application/json") == {"é": [1]}
    assert parse_payload(b"", "application/json") is None  # AsyncAPI workloads: an empty body is None
    with pytest.raises(BadRequestError, match="JSON body is empty"):  # a RealtimeAPI request: a 400
        asyncio.run(decode_payload(b"", "application/json"))


def test_text_by_its_charset_and_everything_else_as_bytes() -> None:
    assert parse_payload("ü".encode("latin-1"), 'text/plain; charset="latin-1"') == "ü"
    assert parse_payload(b"<a/>", "application/xml") == b"<a/>"
    assert parse_payload(b"x", None) == b"x"
    with pytest.raises(BadRequestError):
        parse_payload(b"\xff", "text/plain")


def test_results_json_cannot_hold_are_an_error_naming_the_type() -> None:
    class Thing:
        pass

    with pytest.raises(CortexRayError, match="returned a dict that cannot be serialized to JSON"):
        encode_result({"t": Thing()})
    out = encode_result([float("nan")])  # what Python's json writes (Cortex did the same)
    assert out.body == b"[NaN]"


@pytest.mark.parametrize(
    ("result", "media"), [({"a": 1}, b"application/json"), ("s", b"text/plain; charset=utf-8")]
)
def test_the_content_type_follows_the_result(result: Any, media: bytes) -> None:
    assert dict(encode_result(result).headers)[b"content-type"] == media
