"""Storage events as hints: which models may have changed, so that the reloader lists those
models now instead of waiting for its next poll.

An event source yields batches of model names (``None``: something changed that no model name
says, e.g. a file outside any model folder: list everything). Events are hints, never proof:
they may come twice, late, or out of order, and the reloader confirms each by listing the
model's prefix; the periodic full listing (``poll_interval``) still runs, to catch anything
an event missed.

* :class:`LocalWatch`: a local ``dir`` / ``path`` / ``paths``, watched with ``watchfiles``
  (inotify on Linux; installed with Ray Serve).
* :class:`SqsEvents`: models in S3, from an SQS queue receiving the bucket's event
  notifications (:mod:`cortex_ray.storage.sqs`); a batch's messages are deleted only once the
  reloader handled it (a failure: they come back after the queue's visibility timeout).
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
from cortex_ray.storage import split_uri
from cortex_ray.storage.sqs import WAIT_SECONDS, SqsQueue

__all__ = ["EventSource", "LocalWatch", "QueuedEvents", "SqsEvents", "event_source"]

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


class SqsEvents:
    """S3 event notifications from an SQS queue, as model names (keys outside the spec's
    prefixes are ignored)."""

    def __init__(self, spec: MultiModelsSpec, queue: str, wait: float | None = None) -> None:
        self.queue = SqsQueue(queue)
        self._wait = WAIT_SECONDS if wait is None else wait
        self._closed = False
        self._prefixes: list[tuple[str, str, str | None]] = []
        """(bucket, key prefix, model): a ``dir`` (model ``None``), or one model's prefix."""
        if spec.dir is not None:
            self._prefixes.append((*_bucket_prefix(spec.dir), None))
        elif spec.path is not None:
            self._prefixes.append((*_bucket_prefix(spec.path), SINGLE_MODEL_NAME))
        else:
            self._prefixes += [(*_bucket_prefix(p.path), p.name) for p in spec.paths or []]
        self.messages = 0
        """Messages received and handled."""

    def model_of(self, bucket: str, key: str) -> str | bool | None:
        """The model a changed object belongs to; ``None``: the ``dir`` itself (a loose file: list
        everything); ``False``: none of this API's."""
        for where, prefix, model in self._prefixes:
            if bucket != where or not key.startswith(prefix):
                continue
            if model is not None:
                return model
            head, slash, _ = key[len(prefix) :].partition("/")
            return head if slash and head else None
        return False

    async def batches(self) -> AsyncIterator[set[str] | None]:
        while not self._closed:
            batch = await asyncio.to_thread(self.queue.receive, self._wait)
            if not batch.receipts:
                continue
            found = {self.model_of(bucket, key) for bucket, key in batch.keys}
            found.discard(False)
            if found:
                yield None if None in found else {n for n in found if isinstance(n, str)}
            await asyncio.to_thread(self.queue.delete, batch.receipts)  # (handled: never again)
            self.messages += len(batch.receipts)

    def close(self) -> None:
        self._closed = True  # (the receive running ends within its wait)


def _bucket_prefix(uri: str) -> tuple[str, str]:
    _, bucket, prefix = split_uri(uri)
    return bucket, f"{prefix.strip('/')}/" if prefix.strip("/") else ""


def event_source(spec: MultiModelsSpec) -> EventSource | None:
    """The spec's event source (``events: watch`` or ``events: {sqs: ...}``), or ``None``
    (polling alone)."""
    if spec.events is not None and not isinstance(spec.events, str):
        return SqsEvents(spec, spec.events.sqs)
    if spec.events != "watch":
        return None
    uris = [spec.dir] if spec.dir else [spec.path] if spec.path else [p.path for p in spec.paths or []]
    if not all(uri is not None and is_local_uri(uri) for uri in uris):  # (the spec's rules say so too)
        log.warning("events: watch needs local model folders; polling only")
        return None
    return LocalWatch(spec)
