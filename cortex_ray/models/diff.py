"""Diff two model trees into the changes the live reloader acts on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cortex_ray.models.tree import ModelTree

__all__ = ["Change", "ChangeKind", "diff_trees"]

ChangeKind = Literal["model_added", "model_removed", "version_added", "version_removed", "version_changed"]


@dataclass(frozen=True, order=True)
class Change:
    model: str
    version: int | None
    kind: ChangeKind

    def __str__(self) -> str:
        where = self.model if self.version is None else f"{self.model} v{self.version}"
        return f"{self.kind.replace('_', ' ')}: {where}"


def diff_trees(old: ModelTree, new: ModelTree) -> list[Change]:
    """What changed from ``old`` to ``new``, sorted by model and version.

    A model appearing or disappearing gives one ``model_*`` change plus one
    ``version_*`` change per version it had; a version whose files changed (a
    file updated in place, added or removed, or the model's folder structure
    changed) gives ``version_changed``.
    """
    changes: list[Change] = []
    for name in sorted(set(old.models) | set(new.models)):
        before = old.models.get(name)
        after = new.models.get(name)
        if before is None:
            changes.append(Change(name, None, "model_added"))
        elif after is None:
            changes.append(Change(name, None, "model_removed"))
        old_versions = before.versions if before else {}
        new_versions = after.versions if after else {}
        for version in sorted(set(old_versions) | set(new_versions)):
            a, b = old_versions.get(version), new_versions.get(version)
            if a is None:
                changes.append(Change(name, version, "version_added"))
            elif b is None:
                changes.append(Change(name, version, "version_removed"))
            elif a.fingerprint != b.fingerprint or a.uri != b.uri:
                changes.append(Change(name, version, "version_changed"))
    return changes
