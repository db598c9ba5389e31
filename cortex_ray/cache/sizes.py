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

GPU memory follows the same order, in its own budget (``gpu_cache_size``): stated
(``cortex_gpu_bytes``), else measured (the growth of the CUDA memory PyTorch reports allocated
across a load that ran alone), else, under a GPU budget, estimated (the model's last GPU size,
else its files' size). ``gpu_bytes`` in ``/info``; the reclaimer returns torch's cached blocks
after unloads.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

__all__ = [
    "GPU_SIZE_ATTRIBUTE",
    "SIZE_ATTRIBUTE",
    "LoadMeter",
    "Measured",
    "cuda_allocated",
    "gpu_size",
    "memory_size",
    "process_rss",
    "stated_size",
]

T = TypeVar("T")

SIZE_ATTRIBUTE = "cortex_size_bytes"
"""The attribute a handler may set on the object ``load_model`` returns: its size in bytes."""
GPU_SIZE_ATTRIBUTE = "cortex_gpu_bytes"
"""The same, for the GPU memory it takes."""

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss() -> int | None:
    """This process's resident memory in bytes (``None`` where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def cuda_allocated() -> int | None:
    """Bytes of CUDA memory PyTorch holds allocated now (``None``: no torch on a GPU here)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None) if torch is not None else None
    try:
        if cuda is None or not cuda.is_available():
            return None
        return int(cuda.memory_allocated())
    except Exception:  # a broken CUDA setup must not fail a load
        return None


def stated_size(obj: Any, attribute: str = SIZE_ATTRIBUTE) -> int | None:
    """The size the object states of itself (``attribute``, a non-negative integer), if any."""
    size = getattr(obj, attribute, None)
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    return None


def memory_size(obj: Any, grown: Measured, files: int, estimate: int) -> tuple[int, str]:
    """The memory a loaded object takes, and how it was found: stated, else measured (at least
    its ``files``' size: memory freed by evicted models and reused hides growth), else the
    ``estimate``."""
    stated = stated_size(obj)
    if stated is not None:
        return stated, "stated"
    if grown.rss is not None:
        return max(grown.rss, files), "measured"
    return estimate, "estimated"


def gpu_size(obj: Any, grown: Measured, estimate: int | None) -> tuple[int | None, str]:
    """The GPU memory a loaded object takes, and how it was found: stated, else measured, else
    ``estimate`` (given under a GPU budget only); ``(None, "")`` when none of them says."""
    stated = stated_size(obj, GPU_SIZE_ATTRIBUTE)
    if stated is not None:
        return stated, "stated"
    if grown.gpu is not None:
        return grown.gpu, "measured"
    if estimate is not None:
        return estimate, "estimated"
    return None, ""


class Measured(NamedTuple):
    """What a load grew, when it ran alone (``None``: it did not, or nothing to read)."""

    rss: int | None
    gpu: int | None


class LoadMeter:
    """Runs loads (in any threads) and measures the memory growth of those that ran alone."""

    def __init__(
        self, rss: Callable[[], int | None] = process_rss, gpu: Callable[[], int | None] = cuda_allocated
    ) -> None:
        self._rss = rss
        self._gpu = gpu
        self._lock = threading.Lock()
        self._active = 0
        self._started = 0

    def measure(self, load: Callable[[], T]) -> tuple[T, Measured]:
        """``load()``'s result, and how much resident and GPU memory grew across it."""
        with self._lock:
            alone = self._active == 0
            self._active += 1
            self._started += 1
            mine = self._started
        before, gpu_before = self._rss(), self._gpu()
        try:
            result = load()
        finally:
            after, gpu_after = self._rss(), self._gpu()
            with self._lock:
                self._active -= 1
                alone = alone and self._started == mine  # nobody started after this one either
        return result, Measured(_growth(before, after, alone), _growth(gpu_before, gpu_after, alone))


def _growth(before: int | None, after: int | None, alone: bool) -> int | None:
    if not alone or before is None or after is None:
        return None
    return max(0, after - before)
