"""A change to a published model tree, sent to replicas instead of the whole tree.

The reloader decides once, where it reads the listing, which models changed (their
:class:`~cortex_ray.models.tree.ModelInfo` is a new object; an unchanged model keeps the very
object it had). A :class:`TreeDelta` carries those models only: the new ``ModelInfo`` of each
model added or changed, ``None`` for each model removed, and the tree's warnings. A replica
applies it to the tree it holds (:func:`apply_delta`) in time proportional to the models that
changed plus one shallow copy of the name index, never a walk of every version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cortex_ray.models.diff import Change, diff_trees
from cortex_ray.models.tree import ModelInfo, ModelTree

__all__ = ["TreeDelta", "apply_delta", "delta_between", "merge_deltas"]


@dataclass(frozen=True)
class TreeDelta:
    models: Mapping[str, ModelInfo | None] = field(default_factory=dict)
    """Each changed model's new state (``None``: removed)."""
    warnings: tuple[str, ...] = ()
    """The new tree's warnings (whole: they are few)."""

    def __len__(self) -> int:
        return len(self.models)

    def changes(self, old: ModelTree) -> list[Change]:
        """What this delta changes in ``old``, version by version (for logs), looking at the
        changed models only."""
        before = ModelTree({n: m for n in self.models if (m := old.models.get(n)) is not None})
        after = ModelTree({n: m for n, m in self.models.items() if m is not None})
        return diff_trees(before, after)


def apply_delta(tree: ModelTree, delta: TreeDelta) -> ModelTree:
    """``tree`` with ``delta`` applied (a new tree; ``tree`` is not changed). Idempotent: applying
    the same delta again gives the same tree."""
    models = dict(tree.models)
    for name, model in delta.models.items():
        if model is None:
            models.pop(name, None)
        else:
            models[name] = model
    return ModelTree(models, warnings=delta.warnings)


def delta_between(old: ModelTree, new: ModelTree) -> TreeDelta:
    """The delta from ``old`` to ``new``, comparing model objects by identity: a model whose
    object is the same in both did not change (the publisher keeps unchanged models' objects)."""
    changed = {
        name: new.models.get(name)
        for name in {*old.models, *new.models}
        if old.models.get(name) is not new.models.get(name)
    }
    return TreeDelta(dict(sorted(changed.items())), new.warnings)


def merge_deltas(deltas: Iterable[TreeDelta]) -> TreeDelta:
    """One delta doing what ``deltas`` do in order (later models win; the last warnings)."""
    models: dict[str, ModelInfo | None] = {}
    warnings: tuple[str, ...] = ()
    for delta in deltas:
        models.update(delta.models)
        warnings = delta.warnings
    return TreeDelta(models, warnings)
