"""Storage events as hints: which models may have changed, so that the reloader lists those
models now instead of waiting for its next poll.

An event source yields batches of model names (``None``: something changed that no model name
says, e.g. a file outside any model folder: list everything). Events are hints, never proof:
they may come twice, late, or out of order, and the reloader confirms each by listing the
model's prefix; the periodic full listing (``poll_interval``) still runs, to catch anything
an event missed.

* :class:`LocalWatch`: a local ``dir`` / ``path`` / ``paths``, watched with ``watchfiles``
  (inotify on Linux; installed with Ray Serve).
* :class:`QueuedEvents`: names put by hand (tests, and the base of queue-fed sources).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from cortex_ray.spec.names import SINGLE_MODEL_NAME
from cortex_ray.spec.paths import is_local_uri, local_path_of
from cortex_ray.spec.schema import MultiModelsSpec

__all__ = ["EventSource", "LocalWatch", "QueuedEvents", "event_source"]

log = logging.getLogger("cortex_ray.reloader")
DEBOUNCE_MS = 50
"""Events this close together come as one batch."""


class EventSource(Protocol):
    def batches(self) -> AsyncIterator[set[str] | None]:
        """Batches of model names that may have changed (``None``: any may have)."""
        ...

    def close(self) -> None: ...


class QueuedEvents:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[set[str] | None] = asyncio.Queue()

    def put(self, names: set[str] | None) -> None:
        self._queue.put_nowait(names)

    async def batches(self) -> AsyncIterator[set[str] | None]:
        while True:
            yield await self._queue.get()

    def close(self) -> None:
        return None


class LocalWatch:
    """File events under the spec's local model folders, as model names."""

    def __init__(self, spec: MultiModelsSpec) -> None:
        self._roots: list[tuple[Path, str | None]] = []
        """(folder, model): a ``dir`` (model ``None``: the first path component names it), or one
        model's folder."""
        if spec.dir is not None:
            self._roots.append((local_path_of(spec.dir), None))
        elif spec.path is not None:
            self._roots.append((local_path_of(spec.path), SINGLE_MODEL_NAME))
        else:
            self._roots += [(local_path_of(p.path), p.name) for p in spec.paths or []]
        self._stop = asyncio.Event()

    def model_of(self, path: str | Path) -> str | None:
        """The model a changed path belongs to (``None``: none says)."""
        changed = Path(path)
        for root, model in self._roots:
            try:
                rel = changed.relative_to(root)
            except ValueError:
                continue
            if model is not None:
                return model
            return rel.parts[0] if len(rel.parts) > 1 else None  # (a loose file, or the dir itself)
        return None

    async def batches(self) -> AsyncIterator[set[str] | None]:
        import watchfiles

        roots = [str(root) for root, _ in self._roots]
        async for changes in watchfiles.awatch(
            *roots, stop_event=self._stop, debounce=DEBOUNCE_MS, step=10, recursive=True
        ):
            names = {self.model_of(path) for _, path in changes}
            yield None if None in names else {n for n in names if n is not None}

    def close(self) -> None:
        self._stop.set()


def event_source(spec: MultiModelsSpec) -> EventSource | None:
    """The spec's event source (``events: watch``), or ``None`` (polling alone)."""
    if spec.events != "watch":
        return None
    uris = [spec.dir] if spec.dir else [spec.path] if spec.path else [p.path for p in spec.paths or []]
    if not all(uri is not None and is_local_uri(uri) for uri in uris):  # (the spec's rules say so too)
        log.warning("events: watch needs local model folders; polling only")
        return None
    return LocalWatch(spec)
