"""cortex-ray's own log lines in Ray's processes (replicas, reloaders, dispatchers).

Ray keeps each process's stderr in its session's ``logs/worker-*.err`` (what ``cortex-ray
logs`` reads, and what a local run prints); Python drops INFO lines when no handler is set,
so the ``cortex_ray`` logger gets one of its own, once per process.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure"]

_FORMAT = "%(levelname)s %(asctime)s %(name)s -- %(message)s"


def configure(level: str = "INFO") -> None:
    logger = logging.getLogger("cortex_ray")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_cortex_ray", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._cortex_ray = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
