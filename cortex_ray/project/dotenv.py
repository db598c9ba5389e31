"""Read a ``.env`` file: one ``VARIABLE=value`` per line, as Cortex documented it.

Also taken: blank lines, ``#`` comments, an ``export`` prefix, values in single or double quotes
(a ``#`` inside quotes is kept), and `` #`` comments after an unquoted value. Anything else is
an error naming the file and the line.
"""

from __future__ import annotations

import re
from pathlib import Path

from cortex_ray.errors import SpecError

__all__ = ["read_dotenv"]

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables of ``path`` (an absent file: none)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the file: {exc}", file=str(path)) from exc
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise SpecError(f"line {number}: expected VARIABLE=value, got {raw[:60]!r}", file=str(path))
        key, value = match.group(1), match.group(2)
        if key.startswith("CORTEX_"):
            raise SpecError(
                f"line {number}: environment variables starting with CORTEX_ are reserved (got {key})",
                file=str(path),
            )
        values[key] = _value(value, number, path)
    return values


def _value(value: str, number: int, path: Path) -> str:
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        if end < 0:
            raise SpecError(f"line {number}: the value's closing {quote} is missing", file=str(path))
        rest = value[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            raise SpecError(f"line {number}: unexpected text after the quoted value", file=str(path))
        inner = value[1:end]
        return inner.replace("\\n", "\n") if quote == '"' else inner
    return value.split(" #", 1)[0].strip()
