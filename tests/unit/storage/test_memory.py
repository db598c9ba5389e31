"""MemoryStorage: the in-memory fake used by unit tests."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_ray.errors import StorageChangedError, StorageNotFoundError
from cortex_ray.storage import MemoryStorage, ObjectInfo, open_storage, reset_memory_storage


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    reset_memory_storage()
    yield
    reset_memory_storage()


@pytest.fixture
def store() -> MemoryStorage:
    store = MemoryStorage("bkt", "models")
    store.upload("iris/1/model.bin", b"one", content_type="application/octet-stream")
    store.upload("iris/2/model.bin", b"two!")
    store.upload("iris/2/assets/vocab.txt", b"a\nb\n", content_type="text/plain")
    store.upload("iris2/1/x", b"x")
    return store


def test_uri_and_describe() -> None:
    assert MemoryStorage("bkt").uri == "mem://bkt/"
    assert MemoryStorage("bkt", "/a/b/").uri == "mem://bkt/a/b/"
    assert MemoryStorage("bkt", "a").describe("k/v") == "mem://bkt/a/k/v"
    with pytest.raises(ValueError):
        MemoryStorage("")


def test_list_is_recursive_sorted_and_relative(store: MemoryStorage) -> None:
    assert [o.key for o in store.list()] == [
        "iris/1/model.bin",
        "iris/2/assets/vocab.txt",
        "iris/2/model.bin",
        "iris2/1/x",
    ]
    assert [o.key for o in store.list("iris/")] == [
        "1/model.bin",
        "2/assets/vocab.txt",
        "2/model.bin",
    ]
    assert store.list("iris/2")[1].size == 4
    assert store.list("nope") == []


def test_folder_placeholders_are_skipped(store: MemoryStorage) -> None:
    MemoryStorage.bucket("bkt")["models/iris/3/"] = MemoryStorage.bucket("bkt")["models/iris2/1/x"]
    assert [o.key for o in store.list("iris")] == [
        "1/model.bin",
        "2/assets/vocab.txt",
        "2/model.bin",
    ]


def test_buckets_are_shared_by_name_and_reset(store: MemoryStorage) -> None:
    other = open_storage("mem://bkt/models/iris")
    assert other.read("1/model.bin") == b"one"
    assert "models/iris/1/model.bin" in MemoryStorage.bucket("bkt")
    assert MemoryStorage("other").list() == []
    reset_memory_storage()
    assert store.list() == []


def test_read_missing(store: MemoryStorage) -> None:
    with pytest.raises(StorageNotFoundError, match=r"mem://bkt/models/iris/9/model\.bin"):
        store.read("iris/9/model.bin")


def test_upload_delete_and_delete_prefix(store: MemoryStorage) -> None:
    store.upload("iris/1/model.bin", b"new")
    assert store.read("iris/1/model.bin") == b"new"
    store.delete("iris/1/model.bin")
    store.delete("iris/1/model.bin")
    assert [o.key for o in store.list("iris/1")] == []
    store.delete_prefix("iris")
    assert [o.key for o in store.list()] == ["iris2/1/x"]
    with pytest.raises(ValueError):
        MemoryStorage("bkt").upload("", b"")


def test_etag_and_mtime(store: MemoryStorage) -> None:
    info = store.list("iris/1")[0]
    assert info.etag == hashlib.md5(b"one").hexdigest()
    store.upload("iris/1/model.bin", b"uno")
    assert store.list("iris/1")[0].etag != info.etag
    store.upload("iris/1/model.bin", b"uno", mtime=1_000.0)
    assert store.list("iris/1")[0].mtime == 1_000.0


def test_download(store: MemoryStorage, tmp_path: Path) -> None:
    dest = store.download("iris/2", tmp_path / "v2")
    assert (dest / "assets" / "vocab.txt").read_bytes() == b"a\nb\n"
    assert (dest / "model.bin").read_bytes() == b"two!"


def test_download_replaces_an_existing_folder(store: MemoryStorage, tmp_path: Path) -> None:
    dest = tmp_path / "v2"
    (dest / "old").mkdir(parents=True)
    (dest / "old" / "stale").write_bytes(b"stale")
    store.download("iris/2", dest)
    assert sorted(os.listdir(dest)) == ["assets", "model.bin"]
    assert os.listdir(tmp_path) == ["v2"]


class HalfWayFailure(MemoryStorage):
    def _download_object(self, key: str, dest: Path, expected: ObjectInfo) -> None:
        if key.endswith("model.bin"):
            dest.write_bytes(b"partial")
            raise ConnectionError("network dropped")
        super()._download_object(key, dest, expected)


def test_failed_download_is_atomic(store: MemoryStorage, tmp_path: Path) -> None:
    failing = HalfWayFailure("bkt", "models")
    with pytest.raises(ConnectionError):
        failing.download("iris/2", tmp_path / "v2")
    assert os.listdir(tmp_path) == []

    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "model.bin").write_bytes(b"good")
    with pytest.raises(ConnectionError):
        failing.download("iris/2", tmp_path / "v2")
    assert os.listdir(tmp_path) == ["v2"]
    assert os.listdir(tmp_path / "v2") == ["model.bin"]
    assert (tmp_path / "v2" / "model.bin").read_bytes() == b"good"


class CountingFailure(MemoryStorage):
    calls = 0

    def _download_object(self, key: str, dest: Path, expected: ObjectInfo) -> None:
        type(self).calls += 1
        time.sleep(0.05)
        raise ConnectionError("endpoint down")


def test_a_failed_download_stops_fetching_the_rest(tmp_path: Path) -> None:
    store = CountingFailure("bkt")
    for i in range(50):
        store.upload(f"v/{i:02d}", b"x")
    with pytest.raises(ConnectionError):
        store.download("v", tmp_path / "v", max_workers=2)
    assert CountingFailure.calls <= 10  # 2 or 3 in practice; not all 50
    assert os.listdir(tmp_path) == []


def test_downloads_refuse_objects_changed_since_the_listing(tmp_path: Path) -> None:
    store = MemoryStorage("chg", "m")
    store.upload("1/model.bin", b"old")
    listing = store.list("1")
    store.upload("1/model.bin", b"new")
    with pytest.raises(StorageChangedError):
        store.download("1", tmp_path / "v1", listing)
    assert not (tmp_path / "v1").exists()


def test_create_and_list_folders() -> None:
    store = MemoryStorage("cr", "p")
    assert store.create("a/x", b"1") and not store.create("a/x", b"2")
    assert store.read("a/x") == b"1"
    store.upload("b/c/d", b"")
    store.upload("top", b"")
    assert store.list_folders() == ["a", "b"]
    assert store.list_folders("b") == ["c"]
