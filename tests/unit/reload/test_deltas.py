"""The reloader's delta log: one merged delta since the version a replica holds, or ``None``
(the whole tree) when the log cannot say."""

from __future__ import annotations

from cortex_ray.models.delta import TreeDelta
from cortex_ray.models.tree import ModelInfo
from cortex_ray.reload.deltas import DeltaLog


def delta(*names: str) -> TreeDelta:
    return TreeDelta({n: ModelInfo(n, f"mem://m/{n}/", True) for n in names})


def test_a_replica_gets_every_change_since_its_version_merged() -> None:
    log = DeltaLog(capacity=3)
    for version, name in enumerate("abcd", start=1):
        log.append(version, delta(name))
    assert log.oldest_base == 1  # capacity 3: versions 2, 3, 4 kept
    since = log.since(2, 4)
    assert since is not None and sorted(since.models) == ["c", "d"]
    assert sorted(log.since(1, 4).models) == ["b", "c", "d"]  # type: ignore[union-attr]
    assert log.since(0, 4) is None  # older than the log: the whole tree
    assert log.since(4, 4) is None and log.since(5, 4) is None  # nothing new, or from the future
    assert log.since(2, 5) is None  # the log does not reach the version asked: the whole tree


def test_a_gap_in_the_versions_clears_the_log() -> None:
    log = DeltaLog()
    log.append(1, delta("a"))
    log.append(2, delta("b"))
    log.append(7, delta("c"))  # versions 3-6 never logged
    assert log.oldest_base == 6
    assert log.since(2, 7) is None and sorted(log.since(6, 7).models) == ["c"]  # type: ignore[union-attr]


def test_too_many_changed_models_are_sent_as_the_whole_tree() -> None:
    log = DeltaLog(max_models=2)
    log.append(1, delta("a"))
    log.append(2, delta("b", "c"))
    assert log.since(1, 2) is not None and log.since(0, 2) is None
    log.clear()
    assert log.since(1, 2) is None and log.oldest_base is None
