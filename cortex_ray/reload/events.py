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
  reloader listed what they name (a failed listing: they come back after the queue's
  visibility timeout).

The consumer tells a source how each batch went: ``ok = yield names`` in the source, the
reloader answering ``asend(True)`` once the batch's listing succeeded, ``asend(False)`` if not.
* :class:`QueuedEvents`: names put by hand (tests, and the base of queue-fed sources).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator
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


Batches = AsyncGenerator[set[str] | None, bool | None]
"""Batches of model names that may have changed (``None``: any may have); what is sent back
says whether the batch before was handled (``None``: not said)."""


class EventSource(Protocol):
    def batches(self) -> Batches: ...

    def close(self) -> None: ...


class QueuedEvents:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[set[str] | None] = asyncio.Queue()

    def put(self, names: set[str] | None) -> None:
        self._queue.put_nowait(names)

    async def batches(self) -> Batches:
        while True:
            yield await self._queue.get()

    def close(self) -> None:
        return None


class LocalWatch:
    """File events under the spec's local model folders, as model names.

    A watched folder that is replaced or removed (``mv models models.old``) would silence its
    watch: every ``check_every`` seconds the folders' identities are compared with the watch's,
    and a change ends the batches with one ``None`` (list everything) and an error (the
    reloader watches again after a pause)."""

    def __init__(self, spec: MultiModelsSpec, check_every: float = 2.0) -> None:
        self.check_every = check_every
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

    async def batches(self) -> Batches:
        import watchfiles

        roots = [str(root) for root, _ in self._roots]
        watched = {root: _identity(root) for root in roots}
        stop = asyncio.Event()
        replaced: list[str] = []

        async def check() -> None:
            while True:
                try:
                    await asyncio.wait_for(self._stop.wait(), self.check_every)
                    break  # (closed)
                except TimeoutError:
                    pass
                replaced.extend(r for r, was in watched.items() if _identity(r) != was)
                if replaced:
                    break
            stop.set()

        checker = asyncio.get_running_loop().create_task(check())
        try:
            async for changes in watchfiles.awatch(
                *roots,
                stop_event=stop,
                debounce=DEBOUNCE_MS,
                step=10,
                recursive=True,
                watch_filter=None,  # (every file counts: a model may hold any name)
            ):
                names = {self.model_of(path) for _, path in changes}
                yield None if None in names else {n for n in names if n is not None}
        finally:
            checker.cancel()
        if replaced:
            yield None  # (anything may have changed)
            raise FileNotFoundError(f"the watched model folder {replaced[0]} was replaced or removed")

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
        """Messages received, handled and deleted."""
        self.kept = 0
        """Messages received whose listing failed, left in the queue."""

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

    async def batches(self) -> Batches:
        while not self._closed:
            batch = await asyncio.to_thread(self.queue.receive, self._wait)
            if not batch.receipts:
                continue
            found = {self.model_of(bucket, key) for bucket, key in batch.keys}
            found.discard(False)
            handled: bool | None = True
            if found:
                handled = yield None if None in found else {n for n in found if isinstance(n, str)}
            if handled is False:  # (left in the queue: received again after its visibility timeout)
                self.kept += len(batch.receipts)
                continue
            await asyncio.to_thread(self.queue.delete, batch.receipts)  # (handled: never again)
            self.messages += len(batch.receipts)

    def close(self) -> None:
        self._closed = True  # (the receive running ends within its wait)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


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
