"""The model tree: which models and versions a storage listing holds.

Built from listings alone (pure functions), so the reloader, the CLI and the
tests share it. A model folder is *versioned* when every top-level entry is an
integer folder, *unversioned* (version 1) when none is, and invalid when mixed.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cortex_ray.errors import StorageChangedError
from cortex_ray.models.layout import Layout, check_layout, describe_tree
from cortex_ray.storage.base import ObjectInfo

__all__ = [
    "ModelInfo",
    "ModelTree",
    "VersionInfo",
    "Versions",
    "build_model",
    "listed_files",
    "split_dir_listing",
]

_INTEGER = re.compile(r"^[0-9]+$")


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One version of a model: its files (or what a replica needs of them) and their fingerprint."""

    version: int
    uri: str
    """The folder holding this version's files, ending with ``/``."""
    files: tuple[ObjectInfo, ...] | None
    """Keys relative to ``uri``, sorted. ``None`` in the trees the reloader publishes: a replica
    lists ``uri`` when it downloads the version and checks that listing against ``fingerprint``
    (:func:`listed_files`), so a tree of 10,000 models carries no file lists."""
    fingerprint: str
    error: str | None = None
    """Why this version cannot be served (layout), or ``None``."""
    size: int = -1
    """The total of its files' sizes (computed from ``files`` when they are given)."""
    timestamp: float = -1.0
    """The newest modification time of its files, Cortex's model timestamp (computed from
    ``files`` when they are given)."""
    file_count: int = -1
    """How many files it holds (computed from ``files`` when they are given)."""

    def __post_init__(self) -> None:
        if self.files is not None:
            object.__setattr__(self, "size", sum(f.size for f in self.files))
            object.__setattr__(self, "timestamp", max((f.mtime for f in self.files), default=0.0))
            object.__setattr__(self, "file_count", len(self.files))
        elif min(self.size, self.file_count) < 0:  # (a time before 1970 is a time)
            raise ValueError(
                f"{self.uri}: a version without its files needs its size, timestamp and file count"
            )

    @property
    def valid(self) -> bool:
        return self.error is None

    def without_files(self) -> VersionInfo:
        """This version as a replica holds it: no file list, the same fingerprint and totals."""
        if self.files is None:
            return self
        return VersionInfo(
            self.version,
            self.uri,
            None,
            self.fingerprint,
            self.error,
            self.size,
            self.timestamp,
            self.file_count,
        )


class Versions(Mapping[int, VersionInfo]):
    """A model's versions by number: a read-only mapping held as one tuple of its
    :class:`VersionInfo` sorted by version (a replica holds one per model; a dict of two versions
    costs twice as much). Lookups bisect the few versions a model has."""

    __slots__ = ("_infos",)

    def __init__(self, versions: Mapping[int, VersionInfo] | None = None) -> None:
        items = sorted((versions or {}).items())
        for number, info in items:
            if info.version != number:
                raise ValueError(f"version {info.version} filed as version {number}")
        self._infos = tuple(info for _, info in items)

    def __getitem__(self, version: int) -> VersionInfo:
        found = self._find(version)
        if found is None:
            raise KeyError(version)
        return found

    def get(self, version: int, default: Any = None) -> Any:  # (Mapping's goes through a KeyError)
        found = self._find(version)
        return default if found is None else found

    def __contains__(self, version: object) -> bool:
        return self._find(version) is not None

    def _find(self, version: object) -> VersionInfo | None:
        infos = self._infos
        if type(version) is int:  # (not a bool)
            at = bisect.bisect_left(infos, version, key=_number)
            if at < len(infos) and infos[at].version == version:
                return infos[at]
        return None

    def __iter__(self) -> Iterator[int]:
        return (info.version for info in self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __repr__(self) -> str:
        return repr({info.version: info for info in self._infos})

    def __reduce__(self) -> tuple[Any, tuple[tuple[VersionInfo, ...]]]:
        return _versions, (self._infos,)


def _number(info: VersionInfo) -> int:
    return info.version


def _versions(infos: tuple[VersionInfo, ...]) -> Versions:
    versions = Versions()
    versions._infos = infos
    return versions


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model: its versions (valid or not) and any model-level problem."""

    name: str
    uri: str
    versioned: bool
    versions: Mapping[int, VersionInfo] = field(default_factory=dict)
    error: str | None = None
    signature_key: str | None = None
    # computed once, when built, never per request (a model is immutable); slots, no __dict__:
    # a replica holds one per model (tens of thousands)
    candidates: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """Valid versions, highest first: the order "latest" tries them in."""

    def __post_init__(self) -> None:
        if not isinstance(self.versions, Versions):
            object.__setattr__(self, "versions", Versions(self.versions))
        valid = tuple(sorted((v for v, info in self.versions.items() if info.valid), reverse=True))
        object.__setattr__(self, "candidates", valid)

    @property
    def valid_versions(self) -> tuple[int, ...]:
        """The valid versions, lowest first."""
        return self.candidates[::-1]

    @property
    def latest(self) -> int | None:
        """The highest valid version, or ``None`` when none is valid."""
        return self.candidates[0] if self.candidates else None

    @property
    def problems(self) -> list[str]:
        out = [self.error] if self.error else []
        out += [f"version {v}: {info.error}" for v, info in sorted(self.versions.items()) if info.error]
        return out


@dataclass(frozen=True)
class ModelTree:
    """Every model an API serves, by name, plus problems of the listing itself."""

    models: Mapping[str, ModelInfo] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """Things in the listing that belong to no model (served models are unaffected)."""

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.models))

    @property
    def valid(self) -> bool:
        return all(not m.problems for m in self.models.values())


def listed_files(info: VersionInfo, listing: Iterable[ObjectInfo]) -> tuple[ObjectInfo, ...]:
    """``info``'s files: its own list, or else ``listing`` (of ``info.uri``, taken now) when that is
    still what was published. Raises :class:`~cortex_ray.errors.StorageChangedError` when the
    folder changed since (a newer tree is on its way; downloading it now could mix two uploads)."""
    if info.files is not None:
        return info.files
    files = tuple(sorted(listing))
    if fingerprint(files) == info.fingerprint:
        return files
    # a model folder published as version 1 while integer version folders are being added to it
    # (restructured; the model kept as published meanwhile): its own files are the rest
    own = tuple(f for f in files if not _INTEGER.match(f.key.partition("/")[0]) or "/" not in f.key)
    if len(own) < len(files) and fingerprint(own) == info.fingerprint:
        return own
    raise StorageChangedError(
        f"{info.uri}: the files changed since it was listed and published as version {info.version} "
        f"({info.file_count} files then, {len(files)} now)"
    )
    return files


def fingerprint(files: Iterable[ObjectInfo]) -> str:
    """A digest of keys, sizes, ETags and times: changes when any file does."""
    digest = hashlib.sha256()
    for obj in sorted(files):
        digest.update(f"{obj.key}\0{obj.size}\0{obj.etag}\0{obj.mtime!r}\n".encode())
    return digest.hexdigest()[:32]


def build_model(
    name: str,
    uri: str,
    objects: Iterable[ObjectInfo],
    layout: Layout,
    signature_key: str | None = None,
    keep_files: bool = True,
) -> ModelInfo:
    """A model from the listing of its folder (keys relative to ``uri``). ``keep_files=False``: its
    versions keep their fingerprint and totals but not their file lists (a published tree)."""
    model = _build_model(name, uri, list(objects), layout, signature_key)
    if keep_files or not model.versions:
        return model
    versions = {v: info.without_files() for v, info in model.versions.items()}
    return ModelInfo(model.name, model.uri, model.versioned, versions, model.error, model.signature_key)


def _build_model(
    name: str, uri: str, objects: list[ObjectInfo], layout: Layout, signature_key: str | None
) -> ModelInfo:
    if not objects:
        return ModelInfo(
            name,
            uri,
            versioned=False,
            error=f"{uri}: no files found (the folder is empty or absent)",
            signature_key=signature_key,
        )
    groups, top_files = split_dir_listing(objects)
    integer = sorted((g for g in groups if _INTEGER.match(g)), key=int)
    others = sorted([f"{g}/" for g in groups if not _INTEGER.match(g)] + top_files)
    if integer and not others:
        versions: dict[int, VersionInfo] = {}
        for folder in integer:
            files = tuple(sorted(groups[folder]))
            version = int(folder)
            if version in versions:
                error = f"version folders {folder!r} and another name the same version {version}"
                versions[version] = VersionInfo(version, f"{uri}{folder}/", files, fingerprint(files), error)
                continue
            versions[version] = VersionInfo(
                version,
                f"{uri}{folder}/",
                files,
                fingerprint(files),
                check_layout(layout, (f.key for f in files)),
            )
        return ModelInfo(name, uri, versioned=True, versions=versions, signature_key=signature_key)
    if integer:
        return ModelInfo(
            name,
            uri,
            versioned=False,
            error=(
                f"{uri}: mixes integer version folders ({', '.join(f + '/' for f in integer)}) with other "
                f"entries ({describe_tree(others, 10)}); a model folder must hold either only integer "
                "version folders or only the model's files"
            ),
            signature_key=signature_key,
        )
    files = tuple(sorted(objects))
    only = VersionInfo(1, uri, files, fingerprint(files), check_layout(layout, (f.key for f in files)))
    return ModelInfo(name, uri, versioned=False, versions={1: only}, signature_key=signature_key)


def split_dir_listing(objects: Iterable[ObjectInfo]) -> tuple[dict[str, list[ObjectInfo]], list[str]]:
    """Group a ``dir`` listing by its first path component (one model each).

    Returns the groups (keys made relative to each model folder) and the keys of
    files lying directly in the ``dir``, which belong to no model.
    """
    groups: dict[str, list[ObjectInfo]] = {}
    loose: list[str] = []
    for obj in objects:
        head, sep, rest = obj.key.partition("/")
        if sep:
            groups.setdefault(head, []).append(ObjectInfo(rest, obj.size, obj.etag, obj.mtime))
        else:
            loose.append(obj.key)
    return groups, loose
