"""One model version in a replica's cache, as an explicit state machine.

Each version (``name``, ``version``) has a disk side and a memory side::

    disk:    absent -> queued -> downloading -> on_disk ----------> absent
                                      ^            | new files      (evicted, removed:
                                      +------------+                 folders go once unread)

    memory:  absent -> downloading -> queued -> loading -> in_memory -> swapping -> in_memory
                                    |          |         (new files, or the version that
                                    v          v          replaces it as latest, loading)
                                  absent     absent (evicted, removed: drained by refcount,
                                                     then reclaimed off the event loop)

Slot accounting is a function of the state, nothing else (with budgets in bytes, a slot
weighs its bytes: the loaded object's size, a load's reservation, the folders' files):

* a **memory slot** is held by ``loading``, ``in_memory`` and ``swapping``; a load that
  replaces the version serving "latest" of the same model *borrows* that version's slot
  (it holds none of its own) and takes it over when it lands, so a swap never evicts the
  version serving, and retries of a broken version never do either;
* a **disk slot** is held by ``downloading`` and while the version has any folder on disk:
  its current files, or older ones that a running load still reads (deleted once unread).

``downloading`` means a load waits for its files (it takes no memory meanwhile); ``queued``
means waiting for a slot (every slot is held by something that cannot be evicted now: loads in
flight, folders being read, models in use). So the limits hold at
every step.

A loaded object is **in use** while a request that was given it runs (its :class:`Holder`
is in ``LoadedModel.holders``): it is never evicted for another request's load. It can still
be *replaced* in its slot (new files of the version, or the version that replaces it as
"latest"): that is load before unload, and the requests using the old object finish with it
(it is freed when the last one ends). A request's own models may be evicted for its own loads,
so a request that uses more models than the cache holds is never left waiting on itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Entry", "Folder", "Holder", "Key", "LoadedModel"]

Key = tuple[str, int]


class Holder:
    """One request's holds on model objects: given with each object, let go when it ends."""

    __slots__ = ("closed", "held", "patient")

    def __init__(self) -> None:
        self.held: list[LoadedModel] = []
        self.closed = False
        """The request ended (its holds were let go): nothing more is held for it."""
        self.patient = True
        """Whether a load it starts may wait for memory to come free (a warm-up request may not:
        the version it warms holds memory that only its end frees)."""


@dataclass
class LoadedModel:
    """A model version held in memory."""

    name: str
    version: int
    fingerprint: str
    model: Any
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    size: int = 0
    """Bytes it takes in memory (:mod:`cortex_ray.cache.sizes`)."""
    size_source: str = ""
    """How ``size`` was found: ``stated``, ``measured`` or ``estimated``."""
    gpu_bytes: int | None = None
    """CUDA memory it takes: stated (``cortex_gpu_bytes``), or what its load allocated (PyTorch on
    a GPU, a load that ran alone), or, under a GPU budget only, estimated; else ``None``."""
    gpu_source: str = ""
    """How ``gpu_bytes`` was found: ``stated``, ``measured`` or ``estimated`` (``""``: not found)."""
    holders: set[Holder] = field(default_factory=set, compare=False, repr=False)
    """The running requests that were given this object (it is in use while any is)."""


@dataclass(eq=False)
class Folder:
    """One downloaded copy of a version's files."""

    path: Path
    fingerprint: str
    size: int = 0
    """Bytes of its files."""
    readers: int = 0
    """Loads reading these files right now: the folder is never deleted under them."""


@dataclass(eq=False)
class Entry:
    key: Key
    folder: Folder | None = None
    """The newest complete download."""
    old_folders: list[Folder] = field(default_factory=list)
    """Folders replaced or evicted, deleted as soon as nothing reads them (they keep the slot)."""
    download: asyncio.Future[Folder] | None = None
    download_fp: str | None = None
    download_slot: bool = False
    """Whether the running download holds a disk slot (``False`` while queued for one)."""
    download_reserved: int = 0
    """Bytes the running download reserved on disk (a disk budget in bytes)."""
    wanted: int = 0
    """Loads waiting for this version's download to pin its folder (it stays until they have)."""
    loaded: LoadedModel | None = None
    loaded_from: Folder | None = None
    load: asyncio.Future[LoadedModel] | None = None
    load_fp: str | None = None
    load_slot: bool = False
    """Whether the running load holds a memory slot of its own (``False`` while queued, or
    while it borrows the slot of ``borrowed_from``)."""
    borrowed_from: Key | None = None
    lent_to: Key | None = None
    reserved: int = 0
    """Bytes the running load reserved in memory (a memory budget in bytes): its estimate, less
    what it takes over from the object it replaces when the budget cannot hold both."""
    gpu_reserved: int = 0
    """The same, of GPU memory (``gpu_cache_size``)."""
    borrowed_bytes: int = 0
    """Of its memory estimate, the bytes it takes over from the version it borrows from (they
    become its own reservation if that version leaves before the load lands)."""
    gpu_borrowed: int = 0
    """The same, of GPU memory."""

    # --- states ------------------------------------------------------------

    @property
    def disk_state(self) -> str:
        if self.download is not None:
            return "downloading" if self.download_slot else "queued"
        return "on_disk" if self.folder is not None else "absent"

    @property
    def memory_state(self) -> str:
        if self.load is not None:
            if self.loaded is not None:
                return "swapping"
            if self.load_slot or self.borrowed_from:
                return "loading"
            return "downloading" if self.download is not None else "queued"
        return "in_memory" if self.loaded is not None else "absent"

    # --- slots -------------------------------------------------------------

    @property
    def holds_memory_slot(self) -> bool:
        return self.loaded is not None or self.load_slot

    @property
    def holds_disk_slot(self) -> bool:
        return self.download_slot or self.folder is not None or bool(self.old_folders)

    @property
    def memory_bytes(self) -> int:
        """Bytes held in memory: the loaded object's, and what a running load reserved."""
        return (self.loaded.size if self.loaded is not None else 0) + self.reserved

    @property
    def gpu_bytes(self) -> int:
        """GPU bytes held: the loaded object's, and what a running load reserved."""
        held = self.loaded.gpu_bytes if self.loaded is not None else None
        return (held or 0) + self.gpu_reserved

    @property
    def disk_bytes(self) -> int:
        """Bytes held on disk: every folder's files, and what a running download reserved."""
        folders = sum(f.size for f in self.old_folders) + (self.folder.size if self.folder else 0)
        return folders + (self.download_reserved if self.download_slot else 0)

    @property
    def replaceable(self) -> bool:
        """Its slot can be taken over now (nothing of it is in flight, nothing borrows it);
        requests using it finish with the old object."""
        return self.loaded is not None and self.load is None and self.lent_to is None

    def evictable_for(self, requester: Holder | None) -> bool:
        """Evicting it frees a slot now, and no running request uses it (but ``requester``,
        the request the slot is for)."""
        return self.replaceable and self.loaded is not None and self.loaded.holders <= {requester}

    @property
    def evictable_from_memory(self) -> bool:
        return self.evictable_for(None)

    @property
    def evictable_from_disk(self) -> bool:
        """Its files can be deleted now: no download of it running, no load reading them (a load
        still waiting for a memory slot downloads again once it has one)."""
        folders = [*self.old_folders, *([self.folder] if self.folder else [])]
        busy = self.download is not None or self.wanted or any(f.readers for f in folders)
        return self.folder is not None and not busy

    @property
    def idle(self) -> bool:
        """Holds nothing and runs nothing: the entry can be forgotten."""
        return not (
            self.holds_memory_slot
            or self.holds_disk_slot
            or self.download is not None
            or self.load is not None
            or self.wanted
            or self.lent_to is not None
            or self.borrowed_from is not None
        )

    def deletable_folders(self) -> list[Folder]:
        """Old folders nothing reads or serves from any more (removed from ``old_folders``)."""
        keep: list[Folder] = []
        gone: list[Folder] = []
        for f in self.old_folders:
            (keep if f.readers or f is self.loaded_from else gone).append(f)
        self.old_folders = keep
        return gone
