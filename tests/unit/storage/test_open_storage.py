"""open_storage / split_uri: picking a backend from a URI."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from cortex_ray.storage import (
    LocalStorage,
    MemoryStorage,
    S3Storage,
    join_key,
    open_storage,
    split_uri,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/models/iris", ("s3", "bucket", "models/iris")),
        ("s3://bucket/models/iris/", ("s3", "bucket", "models/iris")),
        ("s3://bucket//models//iris", ("s3", "bucket", "models/iris")),
        ("s3://bucket", ("s3", "bucket", "")),
        ("s3://bucket/", ("s3", "bucket", "")),
        ("S3://bucket/x", ("s3", "bucket", "x")),
        ("mem://tests/a/b", ("mem", "tests", "a/b")),
        ("file:///srv/models", ("file", "/srv/models", "")),
        ("file:///srv/models/", ("file", "/srv/models", "")),
        ("file://localhost/srv/models", ("file", "/srv/models", "")),
        ("/srv/models", ("file", "/srv/models", "")),
        ("/srv/a/../models/", ("file", "/srv/models", "")),
        ("//srv/models", ("file", "/srv/models", "")),
    ],
)
def test_split_uri(uri: str, expected: tuple[str, str, str]) -> None:
    assert split_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models/iris", "relative path"),
        ("./models", "relative path"),
        ("", "empty"),
        ("gs://bucket/x", "unsupported storage scheme 'gs://'"),
        ("http://example/x", "unsupported storage scheme 'http://'"),
        ("s3://", "no bucket"),
        ("s3:///models", "no bucket"),
        ("mem://", "no name"),
        ("file://remote-host/srv", "absolute local path"),
    ],
)
def test_split_uri_errors(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_uri(uri)


def test_open_storage_picks_the_backend(tmp_path: Path) -> None:
    s3 = open_storage("s3://bucket/models/iris")
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix, s3.uri) == ("bucket", "models/iris", "s3://bucket/models/iris/")
    assert open_storage("s3://bucket").uri == "s3://bucket/"

    local = open_storage(f"file://{tmp_path}")
    assert isinstance(local, LocalStorage)
    assert local.root == tmp_path
    assert local.uri == f"file://{tmp_path}/"
    assert open_storage(str(tmp_path)).uri == local.uri

    mem = open_storage("mem://tests/models")
    assert isinstance(mem, MemoryStorage)
    assert mem.uri == "mem://tests/models/"


@pytest.mark.parametrize(
    "uri", ["s3://b/p/", "s3://bkt/", "mem://n/p/q/", "mem://n/", "file:///srv/x/", "file:///"]
)
def test_uri_round_trips(uri: str) -> None:
    store = open_storage(uri)
    assert store.uri == uri
    assert open_storage(store.uri).uri == uri
    assert store.describe("k") == uri + "k"


def test_open_storage_rejects_relative_paths() -> None:
    with pytest.raises(ValueError, match="spec file"):
        open_storage("models/iris")


def test_storages_pickle() -> None:
    s3 = S3Storage("bucket", "models")
    _ = s3.client  # created lazily; must not travel
    copy = pickle.loads(pickle.dumps(s3))
    assert copy._client is None
    assert (copy.bucket, copy.prefix, copy.uri) == (s3.bucket, s3.prefix, s3.uri)
    assert copy.client is not None
    local = pickle.loads(pickle.dumps(LocalStorage(Path("/srv/models"))))
    assert local.uri == "file:///srv/models/"


def test_join_key() -> None:
    assert join_key("a/", "/b/", "", "c") == "a/b/c"
    assert join_key("", "") == ""
