"""Model folder layouts, as Cortex 0.35 checked them.

* python: any files;
* tensorflow (CPU/GPU): ``saved_model.pb``, ``variables/variables.index`` and at
  least one ``variables/variables.data-*`` in each version;
* tensorflow on Inferentia: ``saved_model.pb``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Literal

__all__ = ["Layout", "check_layout", "describe_tree", "layout_for"]

Layout = Literal["python", "tensorflow", "neuron"]

_REQUIRED: dict[str, tuple[tuple[str, str], ...]] = {
    "python": (),
    "tensorflow": (
        ("saved_model.pb", "saved_model.pb"),
        ("variables/variables.index", "variables/variables.index"),
        ("variables/variables.data-*", "variables/variables.data-00000-of-..."),
    ),
    "neuron": (("saved_model.pb", "saved_model.pb"),),
}


def layout_for(handler_type: str, inferentia: bool) -> Layout:
    if handler_type == "tensorflow":
        return "neuron" if inferentia else "tensorflow"
    return "python"


def check_layout(layout: Layout, keys: Iterable[str]) -> str | None:
    """``None`` when the files ``keys`` (relative to one version) fit; else why not."""
    names = list(keys)
    if not names:
        return "the folder holds no files"
    missing = [shown for pattern, shown in _REQUIRED[layout] if not fnmatch.filter(names, pattern)]
    if not missing:
        return None
    what = {"tensorflow": "TensorFlow SavedModel", "neuron": "Neuron TensorFlow SavedModel"}[layout]
    return f"invalid {what}: missing {', '.join(missing)}; found: {describe_tree(names)}"


def describe_tree(keys: Iterable[str], limit: int = 50) -> str:
    """A short listing of keys for messages (at most ``limit`` entries)."""
    names = sorted(keys)
    shown = names[:limit]
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return (", ".join(shown) or "nothing") + more
