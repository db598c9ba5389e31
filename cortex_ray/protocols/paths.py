"""What a protocol route's path says, read the same way by both protocols: the version it names,
and the method it takes."""

from __future__ import annotations

from cortex_ray.cache.resolve import MAX_VERSION_DIGITS
from cortex_ray.errors import BadRequestError, MethodNotAllowedError

__all__ = ["allow", "path_version"]


def allow(method: str, allowed: str) -> None:
    """Refuse (405, naming the one allowed) a route called with another method."""
    if method != allowed:
        raise MethodNotAllowedError(f"this route takes {allowed} requests, not {method}", allowed=[allowed])


def path_version(text: str) -> int:
    """A version named in a route's path: a positive decimal integer of ASCII digits ("007" is 7,
    as TF Serving reads version folders); anything else is a 400 that quotes it (shortened)."""
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_VERSION_DIGITS or int(text) < 1:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise BadRequestError(f"a version is a positive integer, got '{shown}'")
    return int(text)
