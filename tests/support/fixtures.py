"""pytest fixtures for a real S3 server; a conftest imports them with::

    from tests.support.fixtures import *  # noqa: F403

* ``s3_server`` (session): a running :class:`~tests.support.s3_server.S3TestServer`.
* ``s3_bucket`` (function): the name of a fresh, empty bucket on it, with the
  environment pointed at the server (``AWS_ENDPOINT_URL``, test credentials,
  region; ``AWS_ENDPOINT_URL_S3``, ``AWS_PROFILE`` and session tokens removed;
  shared config/credentials files hidden), so ``S3Storage`` and
  ``open_storage("s3://<bucket>/...")`` reach it. Before the test the server is
  made ready again (started, resumed, auth checks off) in case an earlier test
  stopped, paused or locked it; afterwards the bucket is deleted (best effort).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from tests.support.s3_server import S3TestServer

__all__ = ["s3_bucket", "s3_server"]

_CLEARED_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3TestServer]:
    """A moto S3 server subprocess on 127.0.0.1, for the whole session."""
    with S3TestServer() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3TestServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket's name, with the environment pointed at ``s3_server``."""
    s3_server.ensure_ready()
    for name in _CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    bucket = s3_server.create_bucket(f"test-{uuid.uuid4().hex[:16]}")
    yield bucket
    with contextlib.suppress(Exception):
        s3_server.ensure_ready()
        _delete_bucket(s3_server, bucket)


def _delete_bucket(server: S3TestServer, bucket: str) -> None:
    client = server.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)
