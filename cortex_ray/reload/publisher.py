"""Decide which observed model versions are published to replicas.

The reloader lists storage every ``poll_interval``; this turns each listing
(the *observed* tree) into the *published* tree, the one replicas serve from:

* **Settling.** A version that is new, or whose files changed, is published only
  once its listing (keys, sizes, ETags, times) has stayed the same for
  ``settle_time`` seconds, checked at each poll (default: one poll interval, so
  "unchanged across two consecutive polls"; with file events, 2 s at most: see
  :attr:`~cortex_ray.spec.MultiModelsSpec.settle_seconds`). A version still being uploaded
  keeps changing and is not published half-written. Until then the previous
  files of a changed version stay published.
* **Never worse.** New files that fail the layout check never replace a valid
  version that was published; a model whose folder turns invalid (e.g. mixed
  layout while being restructured) keeps its published versions. The problem is
  reported, not served.
* **Unchanged models keep their object.** A model whose published state is the same as before
  is the very ``ModelInfo`` published before, so what changed is told by identity
  (:func:`~cortex_ray.models.delta.delta_between`): decided here, once, where the listing is read.
* **Removal** settles like any other change: a model or version missing from
  the listing stays published until it has been missing for ``settle_time``
  (so a folder briefly moved away, or a ``dir`` swapped with two ``mv``, never
  unloads every model); and only a successful listing can remove anything (a
  failed listing, or a local root that does not exist, never reaches this class).
  A listing with no models at all (an empty mount point, an emptied bucket) must
  also have lasted ``EMPTY_SETTLE`` (60 s) before it removes every model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from cortex_ray.models.tree import ModelInfo, ModelTree, VersionInfo

__all__ = ["EMPTY_SETTLE", "ModelProblem", "Publisher"]

EMPTY_SETTLE = 60.0
"""How long a listing with no models at all must last before every model is removed."""


@dataclass(frozen=True)
class ModelProblem:
    """Why a model or version is not published as listed (shown by ``/info`` and ``get``)."""

    model: str
    version: int | None
    reason: str


@dataclass
class _Pending:
    fingerprint: str
    since: float


class Publisher:
    def __init__(self, settle_time: float) -> None:
        self.settle_time = settle_time
        self.published: ModelTree | None = None
        self.problems: list[ModelProblem] = []
        self.published_at: dict[tuple[str, int], float] = {}
        """When each version's current files were published."""
        self.delays: list[float] = []
        """For each version published by the last listing: how long after its files were first seen."""
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._absent: dict[tuple[str, int | None], float] = {}
        self._empty_since: float | None = None
        """Published models (version ``None``) and versions missing from the listing, since when."""

    def observe(
        self, observed: ModelTree, now: float | None = None, only: Collection[str] | None = None
    ) -> ModelTree:
        """The tree to publish after this listing (also kept as ``published``).

        ``only``: the listing is of these models alone (an event's); every other model keeps
        what is published and its problems, undecided (its last listing is not evidence now: a
        version it showed half-uploaded may have changed since).
        """
        now = time.time() if now is None else now
        previous = self.published
        if only is not None and previous is not None:
            return self._observe_some(observed, set(only), now)
        self.problems = []
        self.delays = []
        if previous is None:  # the first listing is published as it is
            self.published = observed
            for name, model in observed.models.items():
                for v in model.versions:
                    self.published_at[(name, v)] = now
            return observed
        emptied = not observed.models and any(m.versions for m in previous.models.values())
        if not emptied:
            self._empty_since = None
        elif self._empty_since is None:
            self._empty_since = now
        models: dict[str, ModelInfo] = {}
        for name in sorted(set(observed.models) | set(previous.models)):
            chosen = self._model(name, observed.models.get(name), previous.models.get(name), now)
            if chosen is not None:
                models[name] = chosen
        return self._published(models, observed.warnings, lambda name: name in observed.models)

    def _observe_some(self, observed: ModelTree, only: set[str], now: float) -> ModelTree:
        assert self.published is not None
        previous = self.published
        self.problems = [p for p in self.problems if p.model not in only]
        self.delays = []
        models = dict(previous.models)
        for name in sorted(only):
            seen, before = observed.models.get(name), previous.models.get(name)
            if seen is None and before is None:
                continue  # (an event for a model neither listed nor published)
            chosen = self._model(name, seen, before, now)
            if chosen is None:
                models.pop(name, None)
            else:
                models[name] = chosen
        return self._published(
            models, previous.warnings, lambda name: name not in only or name in observed.models
        )

    def _published(
        self, models: dict[str, ModelInfo], warnings: tuple[str, ...], listed: Callable[[str], bool]
    ) -> ModelTree:
        live = {(n, v) for n, m in models.items() for v in m.versions}
        self._pending = {k: p for k, p in self._pending.items() if listed(k[0])}
        self._absent = {
            k: t for k, t in self._absent.items() if (k[0] in models if k[1] is None else k in live)
        }
        self.published_at = {k: t for k, t in self.published_at.items() if k in live}
        self.published = ModelTree(models, warnings=warnings)
        return self.published

    def _model(
        self, name: str, seen: ModelInfo | None, before: ModelInfo | None, now: float
    ) -> ModelInfo | None:
        """What to publish for one model (``None``: nothing) given its listing (``seen``) and what
        is published (``before``)."""
        if seen is None:
            assert before is not None
            if before.versions and (
                not self._absence_settled(name, None, now) or not self._emptiness_settled(now)
            ):
                return before  # gone from one listing: not yet removed
            return None
        self._absent.pop((name, None), None)
        if seen.error:
            self.problems.append(ModelProblem(name, None, seen.error))
            if before is not None and before.versions:
                return before  # keep serving what was published
            return _kept(before, seen)
        versions: dict[int, VersionInfo] = {}
        old_versions = before.versions if before else {}
        for v in sorted(set(seen.versions) | set(old_versions)):
            info, old = seen.versions.get(v), old_versions.get(v)
            if info is None:
                assert old is not None
                if not self._absence_settled(name, v, now):
                    versions[v] = old
                continue
            self._absent.pop((name, v), None)
            chosen = self._version(name, v, info, old, now)
            if chosen is not None:
                versions[v] = chosen
        return _kept(
            before, ModelInfo(name, seen.uri, seen.versioned, versions, signature_key=seen.signature_key)
        )

    def _emptiness_settled(self, now: float) -> bool:
        """A listing that would remove every model (an empty mount point, an emptied bucket)
        is published only after it has stayed empty for ``EMPTY_SETTLE`` (or ``settle_time``)."""
        if self._empty_since is None:
            return True
        waited = now - self._empty_since
        if waited >= max(self.settle_time, EMPTY_SETTLE):
            return True
        reason = (
            f"the listing holds no models at all: nothing is removed before it has stayed so for "
            f"{max(self.settle_time, EMPTY_SETTLE):.0f}s ({waited:.0f}s so far)"
        )
        if not any(p.reason == reason for p in self.problems):
            self.problems.append(ModelProblem("*", None, reason))
        return False

    def _absence_settled(self, name: str, version: int | None, now: float) -> bool:
        """Whether a published model (``version`` None) or version has been missing from the
        listings for ``settle_time``: only then is its removal published."""
        since = self._absent.setdefault((name, version), now)
        if now - since >= self.settle_time:
            return True
        reason = f"removal not published yet: waiting for it to settle ({now - since:.0f}s)"
        self.problems.append(ModelProblem(name, version, reason))
        return False

    def _version(
        self, name: str, v: int, info: VersionInfo, old: VersionInfo | None, now: float
    ) -> VersionInfo | None:
        key = (name, v)
        if old is not None and old.fingerprint == info.fingerprint and old.uri == info.uri:
            self._pending.pop(key, None)
            return info
        pending = self._pending.get(key)
        if pending is None or pending.fingerprint != info.fingerprint:
            pending = self._pending[key] = _Pending(info.fingerprint, now)
        settled = now - pending.since >= self.settle_time
        if not settled:
            waited = now - pending.since
            what = "new files" if old is not None else "new version"
            self.problems.append(
                ModelProblem(
                    name, v, f"{what} not published yet: waiting for the upload to settle ({waited:.0f}s)"
                )
            )
            return old
        self._pending.pop(key, None)
        self.delays.append(now - pending.since)
        if info.error and old is not None and old.valid:
            self.problems.append(
                ModelProblem(
                    name, v, f"new files are invalid ({info.error}); still serving the previous files"
                )
            )
            return old
        self.published_at[key] = now
        return info


def _kept(before: ModelInfo | None, new: ModelInfo) -> ModelInfo:
    """``before`` when ``new`` publishes the same thing (its object stays: nothing changed)."""
    if before is None or (before.uri, before.versioned, before.error, before.signature_key) != (
        new.uri,
        new.versioned,
        new.error,
        new.signature_key,
    ):
        return new
    if before.versions.keys() != new.versions.keys():
        return new
    for v, info in new.versions.items():
        old = before.versions[v]
        if old is not info and _version_key(old) != _version_key(info):
            return new
    return before


def _version_key(info: VersionInfo) -> tuple[str, str, str | None]:
    return info.fingerprint, info.uri, info.error
