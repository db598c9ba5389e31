"""A :class:`Storage` on an S3 bucket (``s3://bucket/prefix/``) through boto3.

Credentials and region come from the standard chain (environment, shared
config/credentials files and ``AWS_PROFILE``, instance/container roles). An
S3-compatible server (MinIO, moto, ...) is selected with the standard
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` environment variables, which
boto3 (>= 1.28) honours by itself.

The boto3 client is created lazily and is not pickled, so a storage object can
be sent to Ray actors; each process creates its own client. Every botocore /
boto3 error is translated into the project's errors by :func:`translate_error`.
"""

from __future__ import annotations

import builtins
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import boto3.exceptions
import botocore.exceptions as bce
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from s3transfer.subscribers import BaseSubscriber

from cortex_ray.errors import (
    StorageAccessDeniedError,
    StorageChangedError,
    StorageError,
    StorageNotFoundError,
    StorageUnreachableError,
)
from cortex_ray.storage.base import ObjectInfo, Storage, join_key

__all__ = ["CLIENT_CONFIG", "DEFAULT_TRANSFER_CONFIG", "S3Storage", "translate_error"]

MiB = 1024 * 1024

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60

CLIENT_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT,
    read_timeout=READ_TIMEOUT,
    retries={"max_attempts": 3, "mode": "standard"},
    max_pool_connections=32,
)
"""Few retries and a short connect timeout: a stopped endpoint fails in seconds."""

DEFAULT_TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=64 * MiB,
    multipart_chunksize=16 * MiB,
    max_concurrency=8,
)
"""Objects of 64 MiB or more are downloaded in parallel 16 MiB parts."""

_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "ExpiredTokenException",
        "Forbidden",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "403",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_BUSY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "RequestTimeout",
        "503",
    }
)
_CREDENTIAL_ERRORS: tuple[type[Exception], ...] = (
    bce.NoCredentialsError,
    bce.PartialCredentialsError,
    bce.CredentialRetrievalError,
    bce.ProfileNotFound,
    bce.TokenRetrievalError,
    bce.SSOError,
)
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    bce.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, SSLError, proxy
    bce.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    bce.IncompleteReadError,
)
_BOTO_ERRORS = (bce.BotoCoreError, bce.ClientError, boto3.exceptions.Boto3Error)

_CREDENTIALS_HINT = (
    "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
    "or the instance role) and that they grant access to bucket '{bucket}'"
)


def translate_error(exc: BaseException, *, bucket: str, key: str, endpoint: str) -> StorageError:
    """The project error for a botocore/boto3 error on ``s3://bucket/key`` (not raised)."""
    if isinstance(exc, boto3.exceptions.RetriesExceededError):
        exc = getattr(exc, "last_exception", None) or exc
    where = f"s3://{bucket}/{key}"
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or ""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = f"{code}: {message}" if message and message != code else code
        if code == "NoSuchBucket":
            return StorageNotFoundError(
                f"{where}: bucket '{bucket}' does not exist; check the bucket name "
                f"and the endpoint ({endpoint})"
            )
        if code in _NOT_FOUND_CODES or status == 404:
            return StorageNotFoundError(f"{where}: no such object")
        if code == "PreconditionFailed" or status == 412:
            return StorageChangedError(f"{where}: the object changed since it was listed (ETag differs)")
        if code in _ACCESS_CODES or status == 403:
            hint = _CREDENTIALS_HINT.format(bucket=bucket)
            return StorageAccessDeniedError(f"{where}: access denied ({detail}); {hint}")
        if code in _BUSY_CODES or status == 503:
            return StorageUnreachableError(
                f"{where}: the S3 endpoint {endpoint} is busy or unavailable ({detail}); try again later"
            )
        return StorageError(f"{where}: S3 error ({detail})")
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return StorageAccessDeniedError(
            f"{where}: no usable AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance role"
        )
    if isinstance(exc, _CONNECTION_ERRORS):
        return StorageUnreachableError(
            f"{where}: cannot reach the S3 endpoint {endpoint} ({exc}); check the network, "
            "or set AWS_ENDPOINT_URL for an S3-compatible server"
        )
    return StorageError(f"{where}: {type(exc).__name__}: {exc}")


class S3Storage(Storage):
    """Objects below ``prefix`` in ``bucket``; keys are relative to ``prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        *,
        transfer_config: TransferConfig | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"an S3 bucket name must be non-empty without '/', got {bucket!r}")
        self.bucket = bucket
        self.prefix = join_key(prefix)
        self.uri = f"s3://{bucket}/" + (f"{self.prefix}/" if self.prefix else "")
        self.transfer_config = transfer_config or DEFAULT_TRANSFER_CONFIG
        self._client = client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Storage({self.bucket!r}, {self.prefix!r})"

    # --- pickling: the client stays behind, each process makes its own ------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- helpers ------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use (standard credential chain)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    session = boto3.session.Session()
                    self._client = session.client("s3", config=_client_config())
        return self._client

    @property
    def endpoint_url(self) -> str:
        """Where requests go (for messages); the env setting when there is no client yet."""
        if self._client is not None:
            return str(self._client.meta.endpoint_url)
        env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return env or "the default AWS S3 endpoint"

    def _full(self, key: str) -> str:
        return join_key(self.prefix, key)

    @contextmanager
    def _boundary(self, key: str) -> Iterator[None]:
        try:
            yield
        except _BOTO_ERRORS as exc:
            raise translate_error(
                exc, bucket=self.bucket, key=self._full(key), endpoint=self.endpoint_url
            ) from exc

    # --- the interface ------------------------------------------------------

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = self._full(prefix)
        start = f"{base}/" if base else ""
        found: list[ObjectInfo] = []
        with self._boundary(prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key.endswith("/"):
                        continue  # a folder placeholder
                    found.append(
                        ObjectInfo(
                            key=key[len(start) :],
                            size=int(item["Size"]),
                            etag=str(item.get("ETag", "")).strip('"'),
                            mtime=item["LastModified"].timestamp(),
                        )
                    )
        found.sort(key=_by_key)
        return found

    def read(self, key: str) -> bytes:
        with self._boundary(key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            body = response["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def upload(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        with self._boundary(key):
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, **extra)

    def delete(self, key: str) -> None:
        with self._boundary(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def create(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """``PutObject`` with ``If-None-Match: *``: S3 refuses it (412) when the key exists."""
        extra = {"ContentType": content_type} if content_type else {}
        for attempt in range(4):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._full(key), Body=data, IfNoneMatch="*", **extra
                )
                return True
            except bce.ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code == "PreconditionFailed" or status == 412:
                    return False
                if (code == "ConditionalRequestConflict" or status == 409) and attempt < 3:
                    time.sleep(0.1 * (attempt + 1))  # a concurrent create of the same key: ask again
                    continue
                raise translate_error(
                    exc, bucket=self.bucket, key=self._full(key), endpoint=self.endpoint_url
                ) from exc
            except _BOTO_ERRORS as exc:
                raise translate_error(
                    exc, bucket=self.bucket, key=self._full(key), endpoint=self.endpoint_url
                ) from exc
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def list_folders(self, prefix: str = "") -> builtins.list[str]:
        base = self._full(prefix)
        start = f"{base}/" if base else ""
        found: builtins.list[str] = []
        with self._boundary(prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start, Delimiter="/"):
                for item in page.get("CommonPrefixes", []):
                    name = item["Prefix"][len(start) :].rstrip("/")
                    if name:
                        found.append(name)
        return sorted(found)

    def _download_object(self, key: str, dest: Path, expected: ObjectInfo) -> None:
        """Exactly the listed object: every GET carries ``If-Match`` with the listed ETag, so an
        object rewritten since the listing fails with 412 instead of giving other bytes. Small
        objects in one GET; from ``multipart_threshold`` on, in parallel ranged GETs."""
        etag = f'"{expected.etag}"'
        with self._boundary(key):
            if expected.size < self.transfer_config.multipart_threshold:
                response = self.client.get_object(Bucket=self.bucket, Key=self._full(key), IfMatch=etag)
                body = response["Body"]
                try:
                    with open(dest, "wb") as fh:
                        for chunk in body.iter_chunks(chunk_size=MiB):
                            fh.write(chunk)
                finally:
                    body.close()
            else:
                from s3transfer.exceptions import S3DownloadFailedError
                from s3transfer.manager import TransferManager

                with TransferManager(self.client, self.transfer_config) as manager:
                    future = manager.download(
                        self.bucket, self._full(key), str(dest), subscribers=[_Pinned(expected.size, etag)]
                    )
                    try:
                        future.result()
                    except S3DownloadFailedError as exc:
                        if "ETag" not in str(exc):
                            raise StorageError(f"s3://{self.bucket}/{self._full(key)}: {exc}") from exc
                        raise StorageChangedError(
                            f"s3://{self.bucket}/{self._full(key)}: the object changed since it was "
                            "listed (ETag differs)"
                        ) from exc


class _Pinned(BaseSubscriber):
    """Gives the transfer the listed size and ETag, so no HEAD is made and every ranged GET
    carries ``If-Match`` with the ETag of the listing."""

    def __init__(self, size: int, etag: str) -> None:
        self._size = size
        self._etag = etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)
        future.meta.provide_object_etag(self._etag)


def _client_config() -> Config:
    """:data:`CLIENT_CONFIG`, leaving retries to ``AWS_MAX_ATTEMPTS``/``AWS_RETRY_MODE`` when set."""
    if os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE"):
        return Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT, max_pool_connections=32)
    return CLIENT_CONFIG


def _by_key(obj: ObjectInfo) -> str:
    return obj.key
