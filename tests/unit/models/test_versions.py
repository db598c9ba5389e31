"""A model's versions as a mapping (:class:`~cortex_ray.models.tree.Versions`): lookups by
number, and what is not a version number is never found (a bool, a string, a float)."""

from __future__ import annotations

import pytest

from cortex_ray.models.tree import VersionInfo, Versions


def info(version: int) -> VersionInfo:
    return VersionInfo(version, f"mem://m/{version}/", (), f"fp{version}")


def test_versions_are_found_by_number_and_nothing_else_is() -> None:
    versions = Versions({3: info(3), 1: info(1), 20: info(20)})
    assert list(versions) == [1, 3, 20] and len(versions) == 3
    assert versions[3].fingerprint == "fp3" and versions.get(20) is versions[20]
    assert 1 in versions and 2 not in versions and 21 not in versions
    for other in (True, "3", 3.0, None):
        assert other not in versions and versions.get(other, "none") == "none"  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        versions[2]
    assert Versions().get(1) is None and 1 not in Versions()


def test_a_version_filed_under_another_number_is_refused() -> None:
    with pytest.raises(ValueError, match="version 2 filed as version 1"):
        Versions({1: info(2)})
