"""What the tiers ask of, and tell, the one who owns them (as MLServer's registry takes
``on_model_load`` / ``on_model_unload``): the tiers know slots, files and loads; which files
are the published ones, what is pinned and what "latest" is belong to the owner
(:class:`~cortex_ray.cache.model_cache.ModelCache`, which knows the model tree).

Every callback runs on the replica's event loop and must not block. The defaults describe a
cache with no tree: every file is current, nothing is pinned, nothing replaces anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cortex_ray.cache.entry import Key, LoadedModel
from cortex_ray.errors import ModelLoadError
from cortex_ray.models.tree import VersionInfo

__all__ = ["Superseded", "TierCallbacks"]


class Superseded(ModelLoadError):
    """The files a download or load was for stopped being the published ones while it ran."""


def _always(key: Key, fingerprint: str) -> bool:
    return True


def _never(key: Key) -> bool:
    return False


def _nobody(key: Key) -> Key | None:
    return None


def _ignore_loaded(loaded: LoadedModel) -> None:
    return None


def _ignore_failed(name: str, info: VersionInfo, reason: str) -> None:
    return None


def _ignore_replaced(old: Key, new: LoadedModel) -> None:
    return None


@dataclass
class TierCallbacks:
    # --- questions, asked again at every pass of a reservation ----------------------
    is_current: Callable[[Key, str], bool] = _always
    """Whether files of this fingerprint are still the ones published for the version (a
    download or load of files no longer published stops, :class:`Superseded`)."""
    is_pinned: Callable[[Key], bool] = _never
    """Whether the version stays in memory whatever comes (never a victim, never idle)."""
    lender_for: Callable[[Key], Key | None] = _nobody
    """The version whose memory a load of this one takes over (it replaces it as the model's
    "latest"), or ``None``."""
    # --- what happened ------------------------------------------------------------------
    on_loaded: Callable[[LoadedModel], None] = _ignore_loaded
    """A load was installed (and serves from now on)."""
    on_failed: Callable[[str, VersionInfo, str], None] = _ignore_failed
    """A download or load failed, with the reason (not when superseded, nor when the cache was
    full: neither is the model's fault)."""
    on_replaced: Callable[[Key, LoadedModel], None] = _ignore_replaced
    """The new object took over the memory of the old version, which is unloaded right after."""

    def check_current(self, key: Key, fingerprint: str) -> None:
        """:class:`Superseded` unless files of ``fingerprint`` are the ones published for ``key``."""
        if not self.is_current(key, fingerprint):
            raise Superseded(f"model {key[0]!r} version {key[1]} changed", model=key[0])
