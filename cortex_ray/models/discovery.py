"""List an API's model storage and build its :class:`ModelTree`.

``path`` gives one model named ``_cortex_default``; ``paths`` the named models;
``dir`` one model per top-level folder. A failed listing raises a
:class:`~cortex_ray.errors.StorageError` and never yields a partial tree, so the
caller (the reloader) can keep what it had. A local ``dir`` that does not exist
(unmounted, moved away) is such an error too: it never lists as "no models".
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from cortex_ray.models.layout import Layout, describe_tree
from cortex_ray.models.tree import ModelInfo, ModelTree, build_model, split_dir_listing
from cortex_ray.spec.names import SINGLE_MODEL_NAME, model_name_problem
from cortex_ray.spec.schema import MultiModelsSpec
from cortex_ray.storage import ObjectInfo, Storage, open_storage

__all__ = ["Builder", "RememberingBuilder", "discover_model", "discover_models"]

Opener = Callable[[str], Storage]
Builder = Callable[[str, str, Iterable[ObjectInfo], Layout, "str | None"], ModelInfo]
"""Builds a model from its folder's listing (:func:`~cortex_ray.models.tree.build_model`)."""


class RememberingBuilder:
    """:func:`~cortex_ray.models.tree.build_model` that gives back the very ``ModelInfo`` it built
    last time for a model whose listing is the same (keys, sizes, ETags, times): a poll that
    finds nothing new rebuilds and digests nothing, and unchanged models keep their objects
    (what downstream tells changes by). Only the models of the last full listing are kept.

    ``keep_files=False`` (the reloader's): the models it builds carry no file lists (see
    :attr:`~cortex_ray.models.tree.VersionInfo.files`); it keeps the listings it compares itself."""

    def __init__(self, keep_files: bool = True) -> None:
        self.keep_files = keep_files
        self._built: dict[str, tuple[list[ObjectInfo], tuple[str, Layout, str | None], ModelInfo]] = {}
        self.reused = 0
        """Models given back unchanged, since the start."""

    def __call__(
        self, name: str, uri: str, objects: Iterable[ObjectInfo], layout: Layout, signature_key: str | None
    ) -> ModelInfo:
        listed = list(objects)
        how = (uri, layout, signature_key)
        before = self._built.get(name)
        if before is not None and before[1] == how and before[0] == listed:
            self.reused += 1
            return before[2]
        model = build_model(name, uri, listed, layout, signature_key, keep_files=self.keep_files)
        self._built[name] = (listed, how, model)
        return model

    def keep_only(self, names: Iterable[str]) -> None:
        """Forget the models not in ``names`` (gone from a full listing)."""
        keep = set(names)
        self._built = {n: built for n, built in self._built.items() if n in keep}


def discover_models(
    spec: MultiModelsSpec,
    layout: Layout,
    opener: Opener = open_storage,
    max_workers: int = 8,
    build: Builder = build_model,
) -> ModelTree:
    """The model tree that ``spec`` names, as storage holds it right now."""
    if spec.dir is not None:
        return _from_dir(spec.dir, layout, spec.signature_key, opener, build)
    if spec.path is not None:
        entries = [(SINGLE_MODEL_NAME, spec.path, spec.signature_key)]
    else:
        entries = [(p.name, p.path, p.signature_key or spec.signature_key) for p in spec.paths or []]

    def one(entry: tuple[str, str, str | None]) -> ModelInfo:
        name, uri, key = entry
        return build(name, uri, opener(uri).list(), layout, key)

    workers = max(1, min(max_workers, len(entries)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        models = list(pool.map(one, entries))
    return ModelTree(models={m.name: m for m in models})


class _CollectionPause:
    """Python's cyclic garbage collector held off while a ``dir`` is listed and built: a listing
    makes an object or three per file (60,000 files at 10,000 models), none of them garbage,
    and each collection they trigger walks them all again (a third of a poll's CPU). Held off
    while the listing is grouped and built, not while storage is listed (S3's pages may take
    long). It runs again as usual afterwards (builds in several threads at once: after the last
    one), and is left off when it was off before the first began."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._turned_off = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._inside == 0 and gc.isenabled():
                gc.disable()
                self._turned_off = True
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0 and self._turned_off:
                    gc.enable()
                    self._turned_off = False


_collection_paused = _CollectionPause()


def _from_dir(
    uri: str, layout: Layout, signature_key: str | None, opener: Opener, build: Builder
) -> ModelTree:
    storage = opener(uri)
    storage.check_root()  # a `dir` that is missing is an error, not a folder without models
    listing = storage.list()
    models: dict[str, ModelInfo] = {}
    with _collection_paused():  # (the CPU part only: never across storage's network calls)
        groups, loose = split_dir_listing(listing)
        for name in sorted(groups):
            model_uri = f"{uri}{name}/"
            problem = model_name_problem(name)
            if problem is not None:
                models[name] = ModelInfo(name, model_uri, False, error=problem)
            else:
                models[name] = build(name, model_uri, groups[name], layout, signature_key)
    warnings: tuple[str, ...] = ()
    if loose:
        warnings = (f"{uri}: files outside any model folder are ignored: {describe_tree(loose, 10)}",)
    return ModelTree(models=models, warnings=warnings)


def discover_model(
    spec: MultiModelsSpec,
    layout: Layout,
    name: str,
    opener: Opener = open_storage,
    build: Builder = build_model,
) -> ModelInfo | None:
    """One model of the tree, as storage holds it right now (its prefix listed, nothing else);
    ``None`` when the spec's storage holds no such model. Errors as :func:`discover_models`
    (a missing local ``dir`` included: it never lists as a model removed)."""
    if spec.dir is not None:
        storage = opener(spec.dir)
        storage.check_root()
        objects = storage.list(f"{name}/")
        if not objects:
            return None
        model_uri = f"{spec.dir}{name}/"
        problem = model_name_problem(name)
        if problem is not None:
            return ModelInfo(name, model_uri, False, error=problem)
        return build(name, model_uri, objects, layout, spec.signature_key)
    if spec.path is not None:
        if name != SINGLE_MODEL_NAME:
            return None
        return build(name, spec.path, opener(spec.path).list(), layout, spec.signature_key)
    for entry in spec.paths or []:
        if entry.name == name:
            key = entry.signature_key or spec.signature_key
            return build(name, entry.path, opener(entry.path).list(), layout, key)
    return None
