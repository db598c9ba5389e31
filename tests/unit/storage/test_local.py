"""LocalStorage: a Storage on a local folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cortex_ray.errors import StorageChangedError, StorageNotFoundError
from cortex_ray.storage import LocalStorage, ObjectInfo


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    root = tmp_path / "root"
    make_tree(
        root,
        {
            "models/iris/1/model.bin": b"one",
            "models/iris/2/model.bin": b"two!",
            "models/iris/2/assets/vocab.txt": b"a\nb\n",
            "models/iris2/1/x": b"x",
            "models/.hidden": b"h",
            "top.json": b"{}",
        },
    )
    (root / "models/empty/folder").mkdir(parents=True)
    return LocalStorage(root)


def keys(objects: list[ObjectInfo]) -> list[str]:
    return [o.key for o in objects]


def test_uri_and_describe(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "a" / ".." / "b")
    assert store.root == tmp_path / "b"
    assert store.uri == f"file://{tmp_path}/b/"
    assert store.describe("x/y.txt") == f"file://{tmp_path}/b/x/y.txt"
    assert store.describe() == store.uri


def test_root_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="absolute"):
        LocalStorage(Path("relative/folder"))


def test_list_is_recursive_sorted_and_relative(store: LocalStorage) -> None:
    assert keys(store.list()) == [
        "models/.hidden",
        "models/iris/1/model.bin",
        "models/iris/2/assets/vocab.txt",
        "models/iris/2/model.bin",
        "models/iris2/1/x",
        "top.json",
    ]
    listed = store.list("models/iris")
    assert keys(listed) == ["1/model.bin", "2/assets/vocab.txt", "2/model.bin"]
    assert keys(store.list("models/iris/")) == keys(listed)
    assert keys(store.list("/models/iris/2")) == ["assets/vocab.txt", "model.bin"]
    info = listed[2]
    assert info.size == 4
    assert info.mtime == pytest.approx(time.time(), abs=60)


def test_missing_or_empty_or_file_prefix_lists_empty(store: LocalStorage, tmp_path: Path) -> None:
    assert store.list("nope") == []
    assert store.list("models/empty") == []
    assert store.list("top.json") == []
    assert LocalStorage(tmp_path / "does-not-exist").list() == []


def test_list_follows_links_without_looping(store: LocalStorage) -> None:
    os.symlink(store.root / "models", store.root / "models" / "iris" / "loop")
    os.symlink(store.root / "top.json", store.root / "models" / "iris" / "link.json")
    listed = keys(store.list("models/iris"))
    assert "link.json" in listed
    assert len(listed) == len(set(listed))


def test_a_folder_linked_into_two_versions_lists_the_same_alone_or_from_above(store: LocalStorage) -> None:
    shared = store.root / "shared"
    shared.mkdir()
    (shared / "vocab.txt").write_text("v")
    for version in ("1", "2"):
        (store.root / "m" / version).mkdir(parents=True)
        (store.root / "m" / version / "model.bin").write_text(version)
        os.symlink(shared, store.root / "m" / version / "assets")
    whole = keys(store.list("m"))
    assert "1/assets/vocab.txt" in whole and "2/assets/vocab.txt" in whole
    for version in ("1", "2"):
        alone = keys(store.list(f"m/{version}"))
        assert alone == sorted(k.partition("/")[2] for k in whole if k.startswith(f"{version}/"))


def test_list_many_files_quickly(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(50):
        folder = root / f"d{i:02d}"
        folder.mkdir(parents=True)
        for j in range(200):
            os.close(os.open(folder / f"f{j}", os.O_CREAT | os.O_WRONLY))
    started = time.perf_counter()
    listed = LocalStorage(root).list()
    assert len(listed) == 10_000
    assert time.perf_counter() - started < 2  # ~0.05 s; 60,000 files take ~0.3 s


def test_read(store: LocalStorage) -> None:
    assert store.read("models/iris/1/model.bin") == b"one"
    with pytest.raises(StorageNotFoundError) as info:
        store.read("models/iris/3/model.bin")
    assert "models/iris/3/model.bin" in str(info.value)
    assert store.uri in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(StorageNotFoundError):
        store.read("models/iris")  # a folder is not an object


def test_keys_may_not_leave_the_root(store: LocalStorage) -> None:
    with pytest.raises(ValueError, match=r"\.\."):
        store.read("../outside")


def test_upload_creates_folders_replaces_and_leaves_no_temp(store: LocalStorage) -> None:
    store.upload("new/deep/file.txt", b"first", content_type="text/plain")
    store.upload("new/deep/file.txt", b"second")
    assert store.read("new/deep/file.txt") == b"second"
    assert os.listdir(store.root / "new" / "deep") == ["file.txt"]


def test_delete_and_delete_prefix(store: LocalStorage) -> None:
    store.delete("top.json")
    store.delete("top.json")  # absent: not an error
    assert "top.json" not in keys(store.list())
    store.delete_prefix("models/iris")
    assert keys(store.list("models")) == [".hidden", "iris2/1/x"]
    store.delete_prefix("no/such/prefix")


def test_etag_changes_on_in_place_update(store: LocalStorage) -> None:
    key = "models/iris/1/model.bin"
    path = store.root / key
    before = store.list("models/iris/1")[0].etag
    assert store.list("models/iris/1")[0].etag == before  # stable while unchanged

    with open(path, "r+b") as fh:  # same size, rewritten in place
        time.sleep(0.05)
        fh.write(b"ONE")
    same_size = store.list("models/iris/1")[0]
    assert same_size.size == 3
    assert same_size.etag != before

    path.write_bytes(b"longer")
    longer = store.list("models/iris/1")[0]
    assert longer.size == 6
    assert longer.etag not in (before, same_size.etag)

    stat = path.stat()  # same size, mtime one nanosecond later
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert store.list("models/iris/1")[0].etag != longer.etag


def test_download_copies_a_prefix(store: LocalStorage, tmp_path: Path) -> None:
    dest = store.download("models/iris", tmp_path / "out" / "iris")
    assert dest == tmp_path / "out" / "iris"
    assert (dest / "2" / "assets" / "vocab.txt").read_bytes() == b"a\nb\n"
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        "1/model.bin",
        "2/assets/vocab.txt",
        "2/model.bin",
    ]
    assert os.listdir(tmp_path / "out") == ["iris"]


def test_download_only_the_pinned_objects(store: LocalStorage, tmp_path: Path) -> None:
    listing = store.list("models/iris/2")
    store.upload("models/iris/2/late.bin", b"late")
    dest = store.download("models/iris/2", tmp_path / "v2", objects=listing)
    assert not (dest / "late.bin").exists()
    assert (dest / "model.bin").read_bytes() == b"two!"


def test_download_replaces_an_existing_folder(store: LocalStorage, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "iris"
    make_tree(dest, {"stale.txt": b"old", "1/model.bin": b"old"})
    store.download("models/iris", dest)
    assert not (dest / "stale.txt").exists()
    assert (dest / "1" / "model.bin").read_bytes() == b"one"
    assert os.listdir(tmp_path / "out") == ["iris"]


def test_download_of_an_empty_prefix_gives_an_empty_folder(store: LocalStorage, tmp_path: Path) -> None:
    dest = store.download("nothing/here", tmp_path / "empty")
    assert dest.is_dir() and os.listdir(dest) == []


class FailingStorage(LocalStorage):
    """Writes half of one file, then fails."""

    def _download_object(self, key: str, dest: Path, expected: ObjectInfo) -> None:
        if key.endswith("vocab.txt"):
            dest.write_bytes(b"half")
            raise OSError("disk on fire")
        super()._download_object(key, dest, expected)


def test_failed_download_leaves_no_partial_folder(store: LocalStorage, tmp_path: Path) -> None:
    failing = FailingStorage(store.root)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk on fire"):
        failing.download("models/iris", out / "iris")
    assert not (out / "iris").exists()
    assert os.listdir(out) == []


def test_failed_download_keeps_the_old_folder(store: LocalStorage, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "iris"
    make_tree(dest, {"1/model.bin": b"old"})
    with pytest.raises(OSError):
        FailingStorage(store.root).download("models/iris", dest)
    assert (dest / "1" / "model.bin").read_bytes() == b"old"
    assert sorted(os.listdir(dest)) == ["1"]
    assert os.listdir(tmp_path / "out") == ["iris"]


def test_download_of_a_vanished_object_fails_cleanly(store: LocalStorage, tmp_path: Path) -> None:
    listing = store.list("models/iris")
    store.delete("models/iris/2/model.bin")
    with pytest.raises(StorageNotFoundError, match=r"models/iris/2/model\.bin"):
        store.download("models/iris", tmp_path / "out" / "iris", objects=listing)
    assert os.listdir(tmp_path / "out") == []


def test_download_refuses_keys_that_leave_the_folder(tmp_path: Path) -> None:
    from cortex_ray.errors import StorageError
    from cortex_ray.storage import ObjectInfo, open_storage

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    storage = open_storage(str(tmp_path / "src"))
    evil = [ObjectInfo("../../escape.txt", 1, "e", 1.0)]
    with pytest.raises(StorageError, match="refusing keys that would leave the download folder"):
        storage.download("", tmp_path / "dest", objects=evil)
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "dest").exists()


# --- exactly the listed bytes, create-only writes, folders, a missing root ----------


def test_a_file_rewritten_since_it_was_listed_is_not_downloaded(store: LocalStorage, tmp_path: Path) -> None:
    listing = store.list("models/iris/2")
    time.sleep(0.01)
    (store.root / "models/iris/2/model.bin").write_bytes(b"TWO!")  # same size, newer mtime
    with pytest.raises(StorageChangedError, match="changed since it was listed"):
        store.download("models/iris/2", tmp_path / "out", listing)
    assert not (tmp_path / "out").exists()  # nothing half-new was left behind
    fresh = store.list("models/iris/2")
    assert (store.download("models/iris/2", tmp_path / "out", fresh) / "model.bin").read_bytes() == b"TWO!"


def test_create_only_writes_once(store: LocalStorage) -> None:
    assert store.create("w/final.json", b"first") is True
    assert store.create("w/final.json", b"second") is False
    assert store.read("w/final.json") == b"first"
    assert [p.name for p in (store.root / "w").iterdir()] == ["final.json"]  # no temp file left


def test_concurrent_creates_have_exactly_one_winner(store: LocalStorage) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: store.create("race/key", str(i).encode()), range(32)))
    assert won.count(True) == 1
    assert store.read("race/key") == str(won.index(True)).encode()


def test_list_folders_lists_one_level(store: LocalStorage) -> None:
    assert store.list_folders("models") == ["empty", "iris", "iris2"]
    assert store.list_folders("models/iris") == ["1", "2"]
    assert store.list_folders("nothing/here") == []


def test_a_missing_root_is_an_error_not_an_empty_folder(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "unmounted")
    assert store.list() == []  # a missing prefix lists as empty...
    with pytest.raises(StorageNotFoundError, match="does not exist"):
        store.check_root()  # ...but the root itself being absent is reported
    (tmp_path / "unmounted").mkdir()
    store.check_root()
