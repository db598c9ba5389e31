"""S3Storage against a real S3 server (moto, over HTTP on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from pathlib import Path
from typing import Any

import botocore.exceptions as bce
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from cortex_ray.errors import (
    StorageAccessDeniedError,
    StorageChangedError,
    StorageNotFoundError,
    StorageUnreachableError,
)
from cortex_ray.storage import S3Storage, open_storage
from tests.support.s3_server import S3TestServer

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
BOTO_ERRORS = (bce.BotoCoreError, bce.ClientError)

TREE = {
    "iris/1/saved_model.pb": b"pb-one",
    "iris/1/variables/variables.index": b"index",
    "iris/1/variables/variables.data-00000-of-00001": b"data" * 100,
    "iris/2/saved_model.pb": b"pb-two",
    "iris2/1/model.onnx": b"onnx",
}


@pytest.fixture
def seeded(s3_server: S3TestServer, s3_bucket: str) -> S3Storage:
    s3_server.put_tree(s3_bucket, "models", TREE)
    return S3Storage(s3_bucket, "models")


def keys(store: S3Storage, prefix: str = "") -> list[str]:
    return [o.key for o in store.list(prefix)]


def test_the_endpoint_comes_from_the_environment(
    s3_server: S3TestServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_storage(f"s3://{s3_bucket}/")
    assert isinstance(store, S3Storage)
    assert store.client.meta.endpoint_url == s3_server.endpoint_url
    # The service-specific variable wins over the general one.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    assert S3Storage(s3_bucket).list() == []


def test_list_read_upload_delete(seeded: S3Storage) -> None:
    assert keys(seeded) == sorted(TREE)
    assert keys(seeded, "iris") == [
        "1/saved_model.pb",
        "1/variables/variables.data-00000-of-00001",
        "1/variables/variables.index",
        "2/saved_model.pb",
    ]
    assert keys(seeded, "iris/2/") == ["saved_model.pb"]
    assert seeded.list("nothing/here") == []
    info = seeded.list("iris/1/variables")[0]
    assert info.size == 400
    assert info.etag == hashlib.md5(b"data" * 100).hexdigest()
    assert info.mtime == pytest.approx(time.time(), abs=120)

    assert seeded.read("iris/1/saved_model.pb") == b"pb-one"
    seeded.upload("iris/3/saved_model.pb", b"pb-three", content_type="application/x-protobuf")
    assert seeded.read("iris/3/saved_model.pb") == b"pb-three"
    head = seeded.client.head_object(Bucket=seeded.bucket, Key="models/iris/3/saved_model.pb")
    assert head["ContentType"] == "application/x-protobuf"
    seeded.delete("iris/3/saved_model.pb")
    seeded.delete("iris/3/saved_model.pb")  # absent: not an error
    assert "3/saved_model.pb" not in keys(seeded, "iris")
    seeded.delete_prefix("iris/1")
    assert keys(seeded, "iris") == ["2/saved_model.pb"]
    assert seeded.describe("iris/2") == f"s3://{seeded.bucket}/models/iris/2"


def test_listing_pages_past_1000_keys(s3_server: S3TestServer, s3_bucket: str) -> None:
    files = {f"many/{i // 100:02d}/obj-{i:05d}": b"x" for i in range(1050)}
    s3_server.put_tree(s3_bucket, "", files)
    listed = S3Storage(s3_bucket).list("many")
    assert len(listed) == 1050
    assert [o.key for o in listed] == sorted(k.removeprefix("many/") for k in files)


def test_folder_placeholders_are_skipped(s3_server: S3TestServer, s3_bucket: str) -> None:
    client = s3_server.client()
    for key in ("models/", "models/iris/", "models/iris/1/"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"")
    client.put_object(Bucket=s3_bucket, Key="models/iris/1/model.bin", Body=b"m")
    assert keys(S3Storage(s3_bucket, "models")) == ["iris/1/model.bin"]


def test_in_place_update_changes_etag_and_size(seeded: S3Storage) -> None:
    before = seeded.list("iris/2")[0]
    seeded.upload("iris/2/saved_model.pb", b"pb-TWO")
    same_size = seeded.list("iris/2")[0]
    assert same_size.size == before.size
    assert same_size.etag != before.etag
    seeded.upload("iris/2/saved_model.pb", b"much longer now")
    longer = seeded.list("iris/2")[0]
    assert longer.size == len(b"much longer now")
    assert longer.etag not in (before.etag, same_size.etag)


def test_missing_bucket(s3_bucket: str) -> None:
    store = S3Storage("no-such-bucket-xyz", "models")
    for call in (lambda: store.list(), lambda: store.read("a"), lambda: store.upload("a", b"")):
        with pytest.raises(StorageNotFoundError, match="bucket 'no-such-bucket-xyz' does not exist") as info:
            call()
        assert isinstance(info.value.__cause__, bce.ClientError)


def test_missing_object(seeded: S3Storage, tmp_path: Path) -> None:
    with pytest.raises(StorageNotFoundError, match=f"s3://{seeded.bucket}/models/iris/9/x") as info:
        seeded.read("iris/9/x")
    assert isinstance(info.value.__cause__, bce.ClientError)
    listing = seeded.list("iris/1")
    seeded.delete("iris/1/saved_model.pb")
    with pytest.raises(StorageNotFoundError, match=r"saved_model\.pb"):
        seeded.download("iris/1", tmp_path / "out" / "1", objects=listing)
    assert os.listdir(tmp_path / "out") == []
    big = S3Storage(seeded.bucket, "models", transfer_config=TransferConfig(multipart_threshold=1))
    with pytest.raises(StorageNotFoundError) as info:
        big.download("iris/1", tmp_path / "out" / "1", objects=listing)
    assert isinstance(info.value.__cause__, bce.ClientError)


def test_wrong_credentials_are_access_denied(
    s3_server: S3TestServer, seeded: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = s3_server.enable_auth()
    try:
        cases = {
            "InvalidAccessKeyId": ("testing", "testing"),  # unknown key
            "SignatureDoesNotMatch": (creds.allowed[0], "wrong-secret"),
            "AccessDenied": creds.denied,  # valid key, no permission
        }
        for code, (key_id, secret) in cases.items():
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
            store = S3Storage(seeded.bucket, "models")
            with pytest.raises(StorageAccessDeniedError, match=code) as info:
                store.list()
            message = str(info.value)
            assert seeded.bucket in message and "AWS_ACCESS_KEY_ID" in message
            assert isinstance(info.value.__cause__, bce.ClientError)
            with pytest.raises(StorageAccessDeniedError):
                store.read("iris/1/saved_model.pb")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds.allowed[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds.allowed[1])
        assert S3Storage(seeded.bucket, "models").read("iris/1/saved_model.pb") == b"pb-one"
    finally:
        s3_server.disable_auth()


def test_no_credentials_are_access_denied(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageAccessDeniedError, match="AWS_ACCESS_KEY_ID") as info:
        S3Storage(s3_bucket).list()
    assert isinstance(info.value.__cause__, bce.NoCredentialsError)


def test_stopped_endpoint_is_unreachable_then_back(s3_server: S3TestServer, seeded: S3Storage) -> None:
    assert seeded.read("iris/2/saved_model.pb") == b"pb-two"
    s3_server.stop(keep_data=True)
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnreachableError) as info:
            seeded.list()
        assert time.monotonic() - started < 30
        message = str(info.value)
        assert s3_server.endpoint_url in message and "AWS_ENDPOINT_URL" in message
        assert isinstance(info.value.__cause__, bce.EndpointConnectionError)
    finally:
        s3_server.start()
    assert seeded.read("iris/2/saved_model.pb") == b"pb-two"  # same object, same client


def test_unresponsive_endpoint_times_out(s3_server: S3TestServer, seeded: S3Storage) -> None:
    client = s3_server.client(config=Config(read_timeout=1, retries={"max_attempts": 1}))
    store = S3Storage(seeded.bucket, "models", client=client)
    s3_server.pause()
    try:
        with pytest.raises(StorageUnreachableError) as info:
            store.read("iris/2/saved_model.pb")
        assert isinstance(info.value.__cause__, bce.ReadTimeoutError)
    finally:
        s3_server.resume()


def test_download_a_prefix_atomically(seeded: S3Storage, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "iris"
    (dest / "stale").mkdir(parents=True)
    assert seeded.download("iris", dest) == dest
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert found == sorted(k.removeprefix("iris/") for k in TREE if k.startswith("iris/"))
    assert (dest / "1/variables/variables.data-00000-of-00001").read_bytes() == b"data" * 100
    assert os.listdir(tmp_path / "cache") == ["iris"]


def test_large_file_downloads_in_parts(s3_server: S3TestServer, s3_bucket: str, tmp_path: Path) -> None:
    payload = os.urandom(20 * MiB)
    s3_server.put_tree(s3_bucket, "big", {"weights.bin": payload})
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=4 * MiB, max_concurrency=4)
    store = S3Storage(s3_bucket, "big", transfer_config=config)
    ranges: list[Any] = []
    store.client.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: ranges.append(params.get("Range"))
    )
    dest = store.download("", tmp_path / "big")
    assert hashlib.sha256((dest / "weights.bin").read_bytes()).digest() == hashlib.sha256(payload).digest()
    assert len([r for r in ranges if r]) == 5


def test_a_pickled_storage_makes_its_own_client(seeded: S3Storage) -> None:
    assert seeded.read("iris/2/saved_model.pb") == b"pb-two"
    copy = pickle.loads(pickle.dumps(seeded))
    assert copy._client is None
    assert copy.read("iris/2/saved_model.pb") == b"pb-two"


def test_an_object_rewritten_since_the_listing_is_refused(seeded: S3Storage, tmp_path: Path) -> None:
    listing = seeded.list("iris/1")
    seeded.upload("iris/1/saved_model.pb", b"pb-one-rewritten")
    with pytest.raises(StorageChangedError, match="changed since it was listed"):
        seeded.download("iris/1", tmp_path / "v1", listing)
    assert not (tmp_path / "v1").exists()
    fresh = seeded.list("iris/1")
    assert (seeded.download("iris/1", tmp_path / "v1", fresh) / "saved_model.pb").read_bytes() == (
        b"pb-one-rewritten"
    )


def test_a_large_object_rewritten_since_the_listing_is_refused_in_parts(
    s3_server: S3TestServer, s3_bucket: str, tmp_path: Path
) -> None:
    s3_server.put_tree(s3_bucket, "big", {"weights.bin": os.urandom(12 * MiB)})
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=4 * MiB, max_concurrency=4)
    store = S3Storage(s3_bucket, "big", transfer_config=config)
    listing = store.list()
    heads: list[str] = []
    store.client.meta.events.register("before-call.s3.HeadObject", lambda **_: heads.append("head"))
    assert (store.download("", tmp_path / "ok", listing) / "weights.bin").stat().st_size == 12 * MiB
    assert heads == []  # size and ETag came from the listing: no HEAD
    store.upload("weights.bin", os.urandom(12 * MiB))
    with pytest.raises(StorageChangedError):
        store.download("", tmp_path / "changed", listing)
    assert not (tmp_path / "changed").exists()


def test_create_only_and_folders_on_s3(seeded: S3Storage) -> None:
    assert seeded.create("w/1/final.json", b"first") is True
    assert seeded.create("w/1/final.json", b"second") is False
    assert seeded.read("w/1/final.json") == b"first"
    assert seeded.list_folders() == ["iris", "iris2", "w"]
    assert seeded.list_folders("iris") == ["1", "2"]
