"""Cortex's (Kubernetes') quantities and Go-style durations.

``cpu: 200m`` is 0.2 cores, ``mem: 2Gi`` is 2 * 1024**3 bytes, ``window: 1m30s``
is 90 seconds. Plain numbers are taken as they are (cores, bytes, seconds).
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

__all__ = ["Budget", "format_bytes", "parse_budget", "parse_cpu", "parse_duration", "parse_memory"]

_SUFFIXES = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 1024.0,
    "Mi": 1024.0**2,
    "Gi": 1024.0**3,
    "Ti": 1024.0**4,
    "Pi": 1024.0**5,
    "Ei": 1024.0**6,
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([a-zA-Z]{0,2})\s*$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


def _parse_quantity(value: object, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a quantity, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{what} must not be negative, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a quantity, got {value!r}")
    match = _QUANTITY.match(value)
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"{what} must be a quantity such as 500m, 2, 1.5, 512Mi or 2Gi, got {value!r}")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


def parse_cpu(value: object) -> float:
    """CPU cores from ``200m``, ``1``, ``1.5``."""
    return _parse_quantity(value, "cpu")


def parse_memory(value: object) -> int:
    """Bytes from ``512Mi``, ``2Gi``, ``1G``, or a plain number of bytes."""
    return round(_parse_quantity(value, "memory"))


class Budget(NamedTuple):
    """A cache tier's limit: ``amount`` model versions, or ``amount`` bytes."""

    amount: int
    unit: Literal["versions", "bytes"]

    def __str__(self) -> str:
        return f"{self.amount} model version(s)" if self.unit == "versions" else format_bytes(self.amount)


def parse_budget(value: object) -> Budget:
    """``cache_size`` / ``disk_cache_size``: an integer counts model versions (Cortex's meaning);
    a quantity with a unit (``6Gi``, ``500M``) is bytes.

    A size with a unit Kubernetes does not spell that way (``6GB``, ``6gb``, ``6gi``, ``512mi``,
    ``1.5GiB``, ``500m``) is refused with a suggestion: ``; did you mean '6Gi'?``. The suggestion
    is always the binary suffix (``Ki``, ``Mi``, ``Gi``, ``Ti``...), ``6Gi`` for ``6GB`` too rather
    than the decimal ``6G``: memory and disk sizes are usually meant in powers of 1024."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number of model versions or a size such as 6Gi (got {value!r})")
    count: int | None = None
    if isinstance(value, float) and value.is_integer():
        count = int(value)  # (YAML's 3.0)
    elif isinstance(value, int):
        count = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        count = int(value)
    if count is not None:
        if count <= 0:
            raise ValueError(f"must be greater than 0 (got {value!r})")
        return Budget(count, "versions")
    match = _QUANTITY.match(value) if isinstance(value, str) else None
    if match is not None and match.group(2) in _SUFFIXES and match.group(2) not in ("", "m"):
        amount = parse_memory(value)
        if amount <= 0:
            raise ValueError(f"must be greater than 0 (got {value!r})")
        return Budget(amount, "bytes")
    meant = _meant_size(value) if isinstance(value, str) else None
    hint = f"; did you mean {meant!r}?" if meant is not None else ""
    raise ValueError(
        f"must be a number of model versions (3) or a size with its unit (512Mi, 6Gi) (got {value!r}){hint}"
    )


_MISSPELLED_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([kmgtpe])(i?)(b?)\s*$", re.IGNORECASE)


def _meant_size(value: str) -> str | None:
    """The Kubernetes quantity a size with a misspelled unit most likely meant (``6GB`` ->
    ``6Gi``), or ``None`` when it does not look like one."""
    match = _MISSPELLED_SIZE.match(value)
    if match is None or float(match.group(1)) == 0:
        return None
    number, letter = match.group(1), match.group(2).upper()
    return f"{number}{letter}i"


def format_bytes(amount: float) -> str:
    """``6442450944`` as ``6.0Gi`` (for messages)."""
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(amount) < 1024 or unit == "Ti":
            return f"{amount:.0f}B" if unit == "" else f"{amount:.1f}{unit}"
        amount /= 1024
    return f"{amount:.1f}Ti"


def parse_duration(value: object) -> float:
    """Seconds from a Go duration (``60s``, ``5m``, ``1m30s``, ``500ms``) or a number."""
    if isinstance(value, bool):
        raise ValueError(f"must be a duration, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"must be a duration such as 10s, 5m or 1m30s, got {value!r}")
    text = value.strip()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"must be a duration such as 10s, 5m or 1m30s, got {value!r}")
    return total
