"""Room in the cache's tiers: the budget rules that decide which versions leave for a download
or a load, and how long a load waits when none can.

Memory, disk and GPU memory are each a :class:`~cortex_ray.cache.tier.Tier`, counted in model
versions (Cortex's ``cache_size: 3``) or in bytes (``cache_size: 6Gi``). A download or load
reserves its room before it starts (its estimate, in bytes: the model's last measured size, else
its files'), corrected once the object's size is known. To make room, the least used version
that can go is evicted: never one a running request uses, nor a pinned one, nor the version the
load replaces (that one lends its room instead: load before unload). When nothing can go, the
load waits until something is freed, at most ``memory_wait`` seconds, then fails with
:class:`~cortex_ray.errors.CacheFullError` naming what holds the room. The room acts on the
tiers only through the two evictions it is given (``drop_memory``, ``drop_disk``); everything
runs on the replica's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cortex_ray.cache.callbacks import TierCallbacks
from cortex_ray.cache.entry import Entry, Holder, Key, LoadedModel
from cortex_ray.cache.tier import Tier
from cortex_ray.cache.usage import Usage
from cortex_ray.clock import Clock
from cortex_ray.errors import CacheFullError, ModelLoadError
from cortex_ray.models.tree import VersionInfo
from cortex_ray.spec.quantity import format_bytes

__all__ = ["Room"]

log = logging.getLogger("cortex_ray.cache")


class Room:
    """The room rules over one cache's tiers (``entries`` is the tiers' own table, read here and
    changed only through ``drop_memory`` / ``drop_disk``)."""

    def __init__(
        self,
        entries: dict[Key, Entry],
        memory: Tier,
        disk: Tier,
        gpu: Tier,
        *,
        usage: Usage,
        callbacks: TierCallbacks,
        clock: Clock,
        memory_wait: float,
        drop_memory: Callable[[Entry], None],
        drop_disk: Callable[[Entry], None],
        evicted: Callable[[str], None],
    ) -> None:
        self._entries = entries
        self.memory, self.disk, self.gpu = memory, disk, gpu
        self.usage = usage
        self.callbacks = callbacks
        self.clock = clock
        self.memory_wait = memory_wait
        self._drop_memory = drop_memory
        self._drop_disk = drop_disk
        self._evicted = evicted
        """Told the tier's name at each eviction (metrics)."""
        self._sizes: dict[str, int] = {}
        """The last size measured or stated per model name (the estimate for its next versions)."""
        self._gpu_sizes: dict[str, int] = {}
        """The same, of GPU memory."""
        self._freed = asyncio.Event()
        self._waiting = 0
        """Loads in :meth:`wait` now."""

    # --- estimates -------------------------------------------------------------

    def estimate(self, name: str, files: int) -> int:
        """The memory to reserve for a load: the model's last size found, else its files' size."""
        return self._sizes.get(name, files)

    def learned(self, loaded: LoadedModel) -> None:
        """A load landed: its sizes, unless only estimated, are the model's next estimates."""
        if loaded.size_source != "estimated":
            self._sizes[loaded.name] = loaded.size
        if loaded.gpu_bytes is not None and loaded.gpu_source != "estimated":
            self._gpu_sizes[loaded.name] = loaded.gpu_bytes

    async def reserve_disk(self, entry: Entry, info: VersionInfo) -> None:
        """Take room on disk for a download: a free slot (or bytes), or room made by evicting the
        least used version whose files nothing reads (copies not also in memory first). In
        versions, new files of a version on disk download into its slot; in bytes, they need
        their own room, unless no eviction can make it (then the two copies overlap until the
        old one is unread)."""
        need = self.disk.need(info.size)
        limit = self.disk.limit
        if self.disk.in_bytes and limit is not None and need > limit:
            raise ModelLoadError(
                f"model {entry.key[0]!r} version {entry.key[1]} has {format_bytes(need)} of files, more than "
                f"disk_cache_size ({self.disk.budget})",
                model=entry.key[0],
                version=entry.key[1],
            )
        deadline = self.clock.monotonic() + self.memory_wait
        while True:
            self.callbacks.check_current(entry.key, info.fingerprint)
            if not self.disk.in_bytes and entry.holds_disk_slot:
                entry.download_slot = True
                return
            if self.disk.fits(self._entries.values(), need):
                entry.download_slot, entry.download_reserved = True, need if self.disk.in_bytes else 0
                return
            victim = self.disk.victim(
                self._entries,
                self.usage,
                lambda e: e.evictable_from_disk,
                entry.key,
                lambda e: e.loaded is None,
            )
            if victim is not None:
                log.info("evicting model %s version %s from disk (LRU)", *victim.key)
                self._evicted("disk")
                self._drop_disk(victim)
                continue
            if self.disk.in_bytes and entry.holds_disk_slot:  # its old files: they overlap a while
                entry.download_slot, entry.download_reserved = True, 0
                return
            if self.clock.monotonic() >= deadline:
                raise CacheFullError(
                    f"no room came free on disk for model {entry.key[0]!r} version {entry.key[1]} in "
                    f"{self.memory_wait:g}s: disk_cache_size ({self.disk.budget}) is held by files that "
                    "loads are reading or downloads are writing",
                    model=entry.key[0],
                    version=entry.key[1],
                )
            await self.wait(deadline)

    async def reserve_memory(
        self, entry: Entry, fingerprint: str, requester: Holder | None = None, estimate: int = 0
    ) -> None:
        """Take memory for a load. In versions: the old object's slot (new files of a version in
        memory), the slot of the version this one replaces as "latest" (borrowed, nothing
        evicted), a free one, or one freed by evicting the least used model that can go now.
        In bytes: room for the estimate, made by evicting the least used models that can go
        (never the one it replaces); when even that cannot make room, the object it replaces
        lends its bytes (load before unload: both are in memory until the swap lands). Never a
        model another running request uses, nor a pinned one. Looked at again after every wait,
        and only while these files are still published; after ``memory_wait`` seconds,
        :class:`CacheFullError`."""
        in_bytes = self.memory.in_bytes
        need = self.memory.need(estimate)
        self.check_estimate(entry.key, estimate)
        deadline = self.clock.monotonic() + self.memory_wait
        while True:
            self.callbacks.check_current(entry.key, fingerprint)
            if (
                entry.load_slot
                or entry.borrowed_from is not None
                or (entry.loaded is not None and not in_bytes)
            ):
                return
            lender = self._entries.get(self.callbacks.lender_for(entry.key) or ("", -1))
            if lender is not None and (lender is entry or not lender.replaceable):
                lender = None
            if not in_bytes and lender is not None:
                entry.borrowed_from, lender.lent_to = lender.key, entry.key  # in memory, not lent
                return
            if self.memory.fits(self._entries.values(), need):
                entry.load_slot, entry.reserved = True, need if in_bytes else 0
                return

            def can_go(e: Entry, lender: Entry | None = lender) -> bool:
                return e.evictable_for(requester) and not self.callbacks.is_pinned(e.key) and e is not lender

            victim = self.memory.victim(self._entries, self.usage, can_go, entry.key)
            if victim is not None:
                log.info("evicting model %s version %s from memory (LRU)", *victim.key)
                self._evicted("memory")
                self._drop_memory(victim)
                continue
            replaced = entry.loaded if entry.loaded is not None else lender.loaded if lender else None
            if (
                in_bytes
                and replaced is not None
                and self.memory.fits(self._entries.values(), need - replaced.size)
            ):
                entry.reserved = max(0, need - replaced.size)
                if entry.loaded is None and lender is not None:
                    entry.borrowed_from, lender.lent_to = lender.key, entry.key
                    entry.borrowed_bytes = need - entry.reserved
                else:
                    entry.load_slot = True
                log.info(
                    "model %s version %s loads beside the version it replaces (%s): the budget holds one",
                    *entry.key,
                    format_bytes(replaced.size),
                )
                return
            if self.clock.monotonic() >= deadline or self._only_pins_hold(entry):
                raise CacheFullError(self._why_full(entry.key), model=entry.key[0], version=entry.key[1])
            if requester is not None and not requester.patient:
                raise CacheFullError(
                    f"no memory for model {entry.key[0]!r} version {entry.key[1]} now, and a warm-up request "
                    "does not wait for it (the version it warms holds memory until it ends)",
                    model=entry.key[0],
                    version=entry.key[1],
                )
            await self.wait(deadline)

    async def reserve_gpu(self, entry: Entry, fingerprint: str, requester: Holder | None, need: int) -> None:
        """Take GPU memory for a load (``gpu_cache_size``), after its memory: room for the
        estimate, made by unloading the least used models holding GPU memory that can go (never
        one in use, pinned, or the one it replaces); when that cannot make room, the object it
        replaces lends its GPU bytes (both are loaded until the swap lands). Waits as
        :meth:`reserve_memory` does. A load waiting here holds its memory reservation meanwhile:
        with both budgets in bytes, a swap of a bigger version waiting for that memory while
        holding the GPU this load waits for ends only at ``memory_wait`` (a 503), a known limit."""
        if self.gpu.budget is None:
            return
        deadline = self.clock.monotonic() + self.memory_wait
        while True:
            self.callbacks.check_current(entry.key, fingerprint)
            if self.gpu.fits(self._entries.values(), need):
                entry.gpu_reserved = need
                return
            # the version it replaces: the one its memory already borrows from, else the latest's
            lender = self._entries.get(
                entry.borrowed_from or self.callbacks.lender_for(entry.key) or ("", -1)
            )
            if lender is not None and (
                lender is entry
                or lender.loaded is None
                or lender.load is not None
                or lender.lent_to not in (None, entry.key)
            ):
                lender = None

            def can_go(e: Entry, lender: Entry | None = lender) -> bool:
                return (
                    e.evictable_for(requester)
                    and not self.callbacks.is_pinned(e.key)
                    and e is not lender
                    and e is not entry
                )

            victim = self.gpu.victim(self._entries, self.usage, can_go, entry.key)
            if victim is not None:
                log.info("evicting model %s version %s from memory (LRU, for GPU memory)", *victim.key)
                self._evicted("gpu")
                self._drop_memory(victim)
                continue
            replaced = entry.loaded if entry.loaded is not None else lender.loaded if lender else None
            took = min(need, replaced.gpu_bytes or 0) if replaced is not None else 0
            if took and self.gpu.fits(self._entries.values(), need - took):
                entry.gpu_reserved = need - took  # (load before unload: both until the swap lands)
                if entry.loaded is None and lender is not None:
                    if entry.borrowed_from is None:  # (its memory had room of its own)
                        entry.borrowed_from, lender.lent_to = lender.key, entry.key
                    entry.gpu_borrowed = took
                return
            if self.clock.monotonic() >= deadline or self._only_pins_hold(entry, self.gpu):
                raise CacheFullError(
                    self._why_full(entry.key, self.gpu), model=entry.key[0], version=entry.key[1]
                )
            if requester is not None and not requester.patient:
                raise CacheFullError(
                    f"no GPU memory for model {entry.key[0]!r} version {entry.key[1]} now, and a warm-up "
                    "request does not wait for it",
                    model=entry.key[0],
                    version=entry.key[1],
                )
            await self.wait(deadline)

    def gpu_estimate(self, name: str, files: int) -> int:
        """The GPU memory to reserve for a load: the model's last GPU size found, else its files'
        size, at most the whole budget (a guess never fails a load by itself); 0 without a GPU
        budget."""
        limit = self.gpu.limit
        if limit is None:
            return 0
        return self._gpu_sizes.get(name, min(files, limit))

    def check_estimate(self, key: Key, estimate: int, gpu_estimate: int = 0) -> None:
        """A version whose estimate alone is more than the memory budget fails (before its files
        are even downloaded); on the GPU only when the estimate is the model's last GPU size."""
        gpu_limit = self.gpu.limit
        if gpu_limit is not None and gpu_estimate > gpu_limit and key[0] in self._gpu_sizes:
            raise ModelLoadError(
                f"model {key[0]!r} version {key[1]} needs about {format_bytes(gpu_estimate)} of GPU memory "
                f"(its last load's), more than gpu_cache_size ({self.gpu.budget})",
                model=key[0],
                version=key[1],
            )
        limit = self.memory.limit
        if self.memory.in_bytes and limit is not None and self.memory.need(estimate) > limit:
            raise ModelLoadError(
                f"model {key[0]!r} version {key[1]} needs about {format_bytes(estimate)} in memory "
                f"(its estimate: {'its last load' if key[0] in self._sizes else 'its files'}), more "
                f"than cache_size ({self.memory.budget})",
                model=key[0],
                version=key[1],
            )

    def check_fits(self, loaded: LoadedModel) -> None:
        """A model bigger than the memory budget (less what pinned models hold) fails, instead of
        evicting everything or staying above the budget."""
        key = (loaded.name, loaded.version)
        replaced = self.callbacks.lender_for(key)  # (the version it replaces as latest leaves: not counted)
        pins = [
            e.loaded
            for e in self._entries.values()
            if e.loaded and e.key not in (key, replaced) and self.callbacks.is_pinned(e.key)
        ]
        checks = [(self.memory, loaded.size, loaded.size_source, sum(p.size for p in pins), "in memory")]
        if loaded.gpu_bytes is not None:
            gpu_pinned = sum(p.gpu_bytes or 0 for p in pins)
            checks.append((self.gpu, loaded.gpu_bytes, loaded.gpu_source, gpu_pinned, "of GPU memory"))
        for tier, size, source, pinned, where in checks:
            limit = tier.limit
            if not tier.in_bytes or limit is None or size <= limit - pinned:
                continue
            left = f", less {format_bytes(pinned)} that pinned models hold" if pinned else ""
            raise ModelLoadError(
                f"model {loaded.name!r} version {loaded.version} takes {format_bytes(size)} {where} "
                f"({source}), more than {_FIELD[tier.name]} ({tier.budget}{left})",
                model=loaded.name,
                version=loaded.version,
            )

    def correct(self, entry: Entry, loaded: LoadedModel, estimate: int, gpu_estimate: int) -> None:
        """The size is known once loaded: the load's reservation becomes it (before any warm-up,
        which may take long), and what can go makes room if it came out bigger."""
        if self.memory.in_bytes:
            entry.reserved = max(0, entry.reserved + loaded.size - self.memory.need(estimate))
        if self.gpu.budget is not None:
            entry.gpu_reserved = max(0, entry.gpu_reserved + (loaded.gpu_bytes or 0) - gpu_estimate)
        self.shrink_to_budget(entry.key)

    def shrink_to_budget(self, loaded: Key) -> None:
        """After a load whose size came out above its reservation: evict what can go until the
        memory budget holds again (what cannot go yet leaves with the requests using it)."""
        for tier in (self.memory, self.gpu):
            while not tier.fits(self._entries.values(), 0):
                victim = tier.victim(
                    self._entries,
                    self.usage,
                    lambda e: e.evictable_from_memory and not self.callbacks.is_pinned(e.key),
                    loaded,
                )
                if victim is None:
                    log.warning(
                        "%s cache over its budget (%s of %s): what holds it is in use, loading or pinned",
                        tier.name,
                        format_bytes(tier.used(self._entries.values())),
                        tier.budget,
                    )
                    break
                log.info(
                    "evicting model %s version %s from memory (%s over its budget)", *victim.key, tier.name
                )
                self._evicted(tier.name)
                self._drop_memory(victim)

    def _only_pins_hold(self, entry: Entry, tier: Tier | None = None) -> bool:
        """Whether the memory that ``entry`` cannot get is all held by pinned versions at rest
        (nothing will ever free it: waiting is pointless)."""
        tier = tier or self.memory
        holding = [e for e in self._entries.values() if e is not entry and tier.used([e])]
        return bool(holding) and all(self.callbacks.is_pinned(e.key) and e.load is None for e in holding)

    def _why_full(self, key: Key, tier: Tier | None = None) -> str:
        tier = tier or self.memory
        field, what = _FIELD[tier.name], "GPU memory" if tier is self.gpu else "memory"
        holds = [e for e in self._entries.values() if tier.used([e])]
        pinned = [f"{e.key[0]} v{e.key[1]}" for e in holds if self.callbacks.is_pinned(e.key)]
        in_use = [
            f"{e.key[0]} v{e.key[1]} ({len(e.loaded.holders)} request(s))"
            for e in holds
            if e.loaded is not None and e.loaded.holders
        ]
        loading = [f"{e.key[0]} v{e.key[1]}" for e in holds if e.load is not None and e.key != key]
        room = ""
        if tier.in_bytes and tier.limit is not None:
            free = max(0, tier.limit - tier.used(self._entries.values()))
            room = f" ({format_bytes(free)} of {tier.budget} free)"
        if pinned and not in_use and not loading:
            return (
                f"no {what} can come free for model {key[0]!r} version {key[1]}{room}: {field} "
                f"({tier.budget}) is held by pinned models [{', '.join(pinned)}]"
            )
        slot = "slot " if tier is self.memory else ""
        return (
            f"no {what} {slot}came free for model {key[0]!r} version {key[1]} "
            f"in {self.memory_wait:g}s{room}: "
            f"{field} ({tier.budget}) is held by models in use by running requests "
            f"[{', '.join(in_use) or 'none'}], loads in flight [{', '.join(loading) or 'none'}] "
            f"and pinned models [{', '.join(pinned) or 'none'}]"
        )

    async def wait(self, deadline: float | None = None) -> None:
        """Wait until a slot may have been freed, or ``deadline`` (the clock's) came."""
        self._waiting += 1
        try:
            if deadline is None:
                await self._freed.wait()
                return
            freed = asyncio.ensure_future(self._freed.wait())
            timer = asyncio.ensure_future(self.clock.sleep(deadline - self.clock.monotonic()))
            try:
                await asyncio.wait({freed, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                freed.cancel()
                timer.cancel()
        finally:
            self._waiting -= 1

    def notify(self) -> None:
        """Something was freed: every load waiting looks again (nothing to do when none waits,
        as at the end of most requests)."""
        if self._waiting:
            self._freed.set()
            self._freed = asyncio.Event()


_FIELD = {"memory": "cache_size", "disk": "disk_cache_size", "gpu": "gpu_cache_size"}
"""The spec field that sets each tier's budget (in errors)."""
