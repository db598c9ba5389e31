"""Put Cortex's module names in ``sys.modules`` of this process (a replica or worker)."""

from __future__ import annotations

import sys
import types

from cortex_ray.compat import client as client_module
from cortex_ray.compat import log as log_module

__all__ = ["install"]


def install(labels: dict[str, str] | None = None, log_level: str = "info") -> None:
    """Register ``cortex_internal.lib.log`` and ``cortex`` (ours, over any installed one: a
    handler inside cortex-ray talks to cortex-ray) and configure the handler logger."""
    log_module.configure(log_level, labels)
    internal = _package("cortex_internal")
    lib = _package("cortex_internal.lib")
    internal.lib = lib  # type: ignore[attr-defined]
    lib.log = log_module  # type: ignore[attr-defined]
    sys.modules["cortex_internal.lib.log"] = log_module
    cortex = types.ModuleType("cortex", "Cortex's client, served by cortex-ray")
    cortex.client = client_module.client  # type: ignore[attr-defined]
    cortex.Client = client_module.Client  # type: ignore[attr-defined]
    sys.modules["cortex"] = cortex


def _package(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package: its submodules are found in sys.modules
    sys.modules[name] = module
    return module
