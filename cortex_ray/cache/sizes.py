"""How much memory a loaded model takes: stated by the handler, or measured across its load.

* **Stated**: the object ``load_model`` returned has an integer ``cortex_size_bytes``
  attribute. It wins over any measurement (the handler knows best, e.g. for a GPU model).
* **Measured**: the growth of the process's resident memory (RSS) across ``load_model``, when
  no other load ran at any moment of it (the growth would be theirs too). Memory freed by
  evicted models and reused by this load hides part of the growth, so a measurement below the
  size of the version's files counts as the files' size.
* **Estimated**: when loads overlapped (or RSS cannot be read): the last size measured for
  another version of the same model, else the size of the version's files.

Before a load, the cache reserves the estimate; after it, the size found replaces it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["SIZE_ATTRIBUTE", "LoadMeter", "process_rss", "stated_size"]

T = TypeVar("T")

SIZE_ATTRIBUTE = "cortex_size_bytes"
"""The attribute a handler may set on the object ``load_model`` returns: its size in bytes."""

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss() -> int | None:
    """This process's resident memory in bytes (``None`` where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def stated_size(obj: Any) -> int | None:
    size = getattr(obj, SIZE_ATTRIBUTE, None)
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    return None


class LoadMeter:
    """Runs loads (in any threads) and measures the RSS growth of those that ran alone."""

    def __init__(self, rss: Callable[[], int | None] = process_rss) -> None:
        self._rss = rss
        self._lock = threading.Lock()
        self._active = 0
        self._started = 0

    def measure(self, load: Callable[[], T]) -> tuple[T, int | None]:
        """``load()``'s result, and how much the RSS grew across it (``None``: another load ran
        meanwhile, or RSS cannot be read)."""
        with self._lock:
            alone = self._active == 0
            self._active += 1
            self._started += 1
            mine = self._started
        before = self._rss()
        try:
            result = load()
        finally:
            after = self._rss()
            with self._lock:
                self._active -= 1
                alone = alone and self._started == mine  # nobody started after this one either
        if not alone or before is None or after is None:
            return result, None
        return result, max(0, after - before)
