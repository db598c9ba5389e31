"""Model discovery: the model tree of an API, its layout checks and tree diffs."""

from cortex_ray.models.diff import Change, diff_trees
from cortex_ray.models.discovery import discover_models
from cortex_ray.models.layout import Layout, check_layout, layout_for
from cortex_ray.models.tree import ModelInfo, ModelTree, VersionInfo, build_model

__all__ = [
    "Change",
    "Layout",
    "ModelInfo",
    "ModelTree",
    "VersionInfo",
    "build_model",
    "check_layout",
    "diff_trees",
    "discover_models",
    "layout_for",
]
