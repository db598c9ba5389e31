"""Names, each spelled in one place: model names (what is allowed, what is reserved) and the
names of the parts an API's Serve application is made of.

The deployer (which builds the application) and the replica side (which looks its parts up)
both read them from here.
"""

from __future__ import annotations

import re

__all__ = [
    "DISPATCHER_ACTOR",
    "RELOADER_ACTOR",
    "SINGLE_MODEL_NAME",
    "model_name_problem",
    "worker_name",
]

SINGLE_MODEL_NAME = "_cortex_default"
"""The model a single ``path`` gives (Cortex's ``consts.SingleModelName``)."""

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")

RELOADER_ACTOR = "reloader"
"""The deployment-scoped actor of an API with models that watches their storage."""
DISPATCHER_ACTOR = "dispatcher"
"""The deployment-scoped actor of an AsyncAPI's gateway that hands workloads to workers."""


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model (``paths[].name``, a folder of a ``dir``), or ``None``."""
    if name == SINGLE_MODEL_NAME:
        return f"{name!r} is a reserved name; please specify a different model name"
    if not _MODEL_NAME.match(name):
        return (
            f"{name!r} is not a valid model name: use letters, digits, '.', '-' and '_' "
            "(not starting with '.')"
        )
    return None


def worker_name(api_name: str) -> str:
    """The deployment of an AsyncAPI's workers (the gateway's deployment is the API's name)."""
    return f"{api_name}-worker"
