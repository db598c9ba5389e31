"""Reading a long-running command's output in tests."""

from __future__ import annotations

import subprocess
import time

__all__ = ["read_until"]


def read_until(proc: subprocess.Popen[str], text: str, timeout: float) -> str:
    """Lines of ``proc``'s output up to the first containing ``text`` (or its end, or the
    timeout: the caller checks that ``text`` came)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            break
    return "".join(lines)
