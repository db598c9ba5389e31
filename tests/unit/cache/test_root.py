"""The disk tier's folder is private: nobody else can create or swap model files in it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cortex_ray.cache.root import private_cache_root


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_folder_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORTEX_RAY_CACHE_DIR", str(tmp_path / "cache"))
    root = private_cache_root("iris")
    assert root == str(tmp_path / "cache" / "iris" / f"pid-{os.getpid()}")
    for folder in (tmp_path / "cache", tmp_path / "cache" / "iris", Path(root)):
        assert mode(folder) == 0o700


def test_an_open_folder_of_ours_is_made_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "cache"
    base.mkdir(mode=0o777)
    os.chmod(base, 0o777)
    monkeypatch.setenv("CORTEX_RAY_CACHE_DIR", str(base))
    private_cache_root("iris")
    assert mode(base) == 0o700


@pytest.mark.parametrize("trap", ["link", "other-user"])
def test_a_planted_folder_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trap: str) -> None:
    base = tmp_path / "cache"
    planted = tmp_path / "attacker"
    planted.mkdir()
    if trap == "link":
        base.symlink_to(planted)
    else:
        if os.getuid() != 0:
            pytest.skip("needs root to give a folder to another user")
        base.mkdir()
        os.chown(base, 65534, 65534)
    monkeypatch.setenv("CORTEX_RAY_CACHE_DIR", str(base))
    root = private_cache_root("iris")
    assert not root.startswith(str(base)) and not root.startswith(str(planted))
    assert mode(Path(root).parent.parent) == 0o700 and os.lstat(root).st_uid == os.getuid()
    assert list(planted.iterdir()) == []
